"""Lesion helper on a synthetic PET with known blobs (sizes, SUVs, one inside a kidney, one too small)."""

from __future__ import annotations

import numpy as np
import pytest
import slicer
from psmadose.errors import InputError
from PSMADosePredictLib.convert import addSegmentFromMask, segmentIdByName, segmentMaskImage
from PSMADosePredictLib.lesions import LesionSettings, addLesionSegments, findLesions

pytestmark = pytest.mark.mrml

SPACING_KJI = (4.0, 3.0, 2.0)  # voxel = 24 mm^3 = 0.024 mL


def synthetic():
    pet = np.full((30, 40, 50), 1.0, dtype=np.float32)
    blobs = {  # name: (box, SUV)
        "hot": ((slice(5, 9), slice(5, 10), slice(5, 15)), 20.0),  # 200 voxels = 4.8 mL
        "warm": ((slice(15, 19), slice(20, 25), slice(30, 40)), 6.0),  # 4.8 mL
        "tiny": ((slice(25, 26), slice(30, 32), slice(40, 42)), 15.0),  # 4 voxels = 0.096 mL < 0.5 mL
        "in_kidney": ((slice(10, 14), slice(30, 35), slice(10, 20)), 18.0),
    }
    truth = {}
    for name, (box, suv) in blobs.items():
        pet[box] = suv
        truth[name] = np.zeros(pet.shape, bool)
        truth[name][box] = True
    kidney = np.zeros(pet.shape, bool)
    kidney[8:16, 28:37, 8:22] = True
    pet[kidney & ~truth["in_kidney"]] = 8.0
    return pet, truth, kidney


def test_find_lesions_absolute_and_percent():
    pet, truth, kidney = synthetic()
    found = findLesions(pet, SPACING_KJI, LesionSettings(threshold_suv=4.0), exclude=kidney)
    assert [f.suv_max for f in found] == [20.0, 6.0]  # numbered by decreasing SUVmax; tiny and kidney dropped
    assert np.array_equal(found[0].mask, truth["hot"]) and np.array_equal(found[1].mask, truth["warm"])
    assert found[0].volume_ml == pytest.approx(200 * 0.024)
    # 41% of the region's SUVmax (20) = 8.2: only the hot blob.
    found = findLesions(pet, SPACING_KJI, LesionSettings(percent_of_max=41), exclude=kidney)
    assert len(found) == 1 and np.array_equal(found[0].mask, truth["hot"])
    # Without a minimum volume the tiny blob appears; without exclusion the kidney (one component) too.
    found = findLesions(pet, SPACING_KJI, LesionSettings(threshold_suv=4.0, min_volume_ml=0))
    assert len(found) == 4
    # Region restricts the search.
    region = np.zeros(pet.shape, bool)
    region[10:20, 15:30, 25:45] = True
    found = findLesions(pet, SPACING_KJI, LesionSettings(threshold_suv=4.0), region=region)
    assert len(found) == 1 and np.array_equal(found[0].mask, truth["warm"])
    with pytest.raises(InputError, match="either"):
        findLesions(pet, SPACING_KJI, LesionSettings())


def test_organ_margin_and_connectivity():
    pet = np.ones((20, 20, 20), dtype=np.float32)
    pet[5:8, 5:8, 5:8] = 10
    pet[8:11, 8:11, 8:11] = 10  # touches the first only at a corner
    assert len(findLesions(pet, (1, 1, 1), LesionSettings(threshold_suv=5, min_volume_ml=0))) == 1
    assert len(findLesions(pet, (1, 1, 1), LesionSettings(threshold_suv=5, min_volume_ml=0, connectivity=1))) == 2
    organ = np.zeros(pet.shape, bool)
    organ[12:15, 5:8, 5:8] = True
    pet[9:11, 5:8, 5:8] = 10  # 2 voxels from the organ
    near = findLesions(pet, (1, 1, 1), LesionSettings(threshold_suv=5, min_volume_ml=0, connectivity=1),
                       exclude=organ)
    far = findLesions(pet, (1, 1, 1), LesionSettings(threshold_suv=5, min_volume_ml=0, connectivity=1,
                                                     organ_margin_mm=3), exclude=organ)
    assert sum(f.mask.sum() for f in far) < sum(f.mask.sum() for f in near)


def test_add_lesion_segments_in_the_scene(mrml_scene):
    pet, truth, kidney = synthetic()
    ijk_to_ras = np.array([[-2.0, 0, 0, 40], [0, -3.0, 0, 70], [0, 0, 4.0, -300], [0, 0, 0, 1]])
    pet_node = slicer.util.addVolumeFromArray(pet, ijk_to_ras, "PET")
    seg_node = mrml_scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "segmentation")
    addSegmentFromMask(seg_node, "kidney_left", kidney, ijk_to_ras)
    addSegmentFromMask(seg_node, "lesion_01", truth["warm"], ijk_to_ras)  # already segmented: not found again
    added = addLesionSegments(pet_node, seg_node, LesionSettings(threshold_suv=4.0))
    assert added == ["lesion_02"]
    image = segmentMaskImage(seg_node, segmentIdByName(seg_node, "lesion_02"))
    import SimpleITK as sitk

    assert int(sitk.GetArrayFromImage(image).sum()) == int(truth["hot"].sum())
    segment = seg_node.GetSegmentation().GetSegment(segmentIdByName(seg_node, "lesion_02"))
    value = __import__("vtk").reference("")
    assert segment.GetTag("PSMADosePredict.StructureType", value) and str(value) == "tumour"
