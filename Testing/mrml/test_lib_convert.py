"""MRML nodes -> psmadose Case, checked voxel-exactly against the core reading the same data from disk.

The volumes and the segmentation are built from numpy with deliberately awkward geometry: oblique
directions, non-zero origins, anisotropic voxels, and the segmentation on its own (finer, differently
rotated) grid, so that the RAS->LPS conversion, the IJK-to-RAS handling and the nearest-neighbour
resampling onto the PET grid are all exercised. The same arrays written with SimpleITK/psmadose and read
by ``psmadose.case.read_case`` are the reference.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk
import slicer
import vtk
from psmadose.case import read_case
from psmadose.errors import InputError
from psmadose.images import ijk_to_lps, image_from_array
from psmadose.segmentation import SegmentToWrite, write_segmentation
from PSMADosePredictLib.convert import RAS_TO_LPS, addSegmentFromMask, caseFromNodes, checkPetLooksLikeSuv

from .mrml_helpers import read_segmentation_node, write_segmentation_with_slicer

pytestmark = pytest.mark.mrml

CLINICAL = {"age_years": 71, "weight_kg": 82, "height_cm": 176, "egfr_ml_min_1_73m2": 75, "psa_ng_ml": 120,
            "alp_u_l": 140, "ldh_u_l": 250, "hemoglobin_g_dl": 12.1, "prior_taxane_lines": 1, "prior_arpi": True,
            "pet_tracer": "18F-DCFPyL", "pet_uptake_time_min": 120, "planned_activity_gbq": 7.4,
            "planned_cycles": 4}

BODY_CENTRE = (0.0, 50.0, 150.0)
# Physical (LPS mm) ellipsoids: name -> (centre, semi-axes); "body_outline" is not a recognised type.
SHAPES = {
    "kidney_left": ((30.0, 40.0, 150.0), (14.0, 9.0, 20.0)),
    "parotid_right": ((-25.0, 30.0, 175.0), (8.0, 10.0, 9.0)),
    "lesion_01": ((0.0, 55.0, 140.0), (6.0, 6.0, 6.0)),
    "lesion_02": ((-30.0, 60.0, 130.0), (4.0, 7.0, 5.0)),
    "liver": ((-20.0, 45.0, 120.0), (20.0, 15.0, 12.0)),
    "body_outline": ((0.0, 50.0, 150.0), (45.0, 40.0, 45.0)),
}


def rotation(z_deg: float, x_deg: float) -> np.ndarray:
    z, x = np.radians(z_deg), np.radians(x_deg)
    rz = np.array([[np.cos(z), -np.sin(z), 0], [np.sin(z), np.cos(z), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, np.cos(x), -np.sin(x)], [0, np.sin(x), np.cos(x)]])
    return rz @ rx


def make_image(shape_kji, spacing, origin, direction, values=None) -> sitk.Image:
    array = np.zeros(shape_kji, dtype=np.float32) if values is None else values
    return image_from_array(array, spacing=spacing, origin=origin, direction=direction)


def centred_grid(shape_kji, spacing, direction: np.ndarray, shift=(0.0, 0.0, 0.0)) -> sitk.Image:
    """A grid whose centre is near the body centre (0, 50, 150) LPS, shifted so the origin is not round."""
    half = np.array(spacing) * (np.array(shape_kji[::-1]) - 1) / 2
    origin = np.array(BODY_CENTRE) + np.array(shift) - direction @ half
    return make_image(shape_kji, spacing, origin, direction.ravel())


def voxel_centres_lps(image: sitk.Image) -> np.ndarray:
    size = image.GetSize()
    k, j, i = np.meshgrid(*(np.arange(n) for n in size[::-1]), indexing="ij")
    ijk = np.stack([i, j, k, np.ones_like(i)], axis=-1).astype(float)
    return (ijk @ ijk_to_lps(image).T)[..., :3]


def ellipsoid(points: np.ndarray, centre, axes) -> np.ndarray:
    return (((points - np.array(centre)) / np.array(axes)) ** 2).sum(axis=-1) <= 1.0


@pytest.fixture
def oblique_case(tmp_path):
    """PET (oblique, 4x3.5x3 mm), CT on the PET grid's neighbour, segmentation on a finer rotated grid."""
    pet = centred_grid((34, 30, 36), (3.0, 3.5, 4.0), rotation(20, 8), (1.3, -2.1, 0.7))
    centres = voxel_centres_lps(pet)
    rng = np.random.default_rng(5)
    pet_values = 0.3 + 0.2 * rng.random(centres.shape[:3])
    for name, (centre, axes) in SHAPES.items():
        if name != "body_outline":
            pet_values += (12.0 if name.startswith("lesion") else 5.0) * ellipsoid(centres, centre, axes)
    pet = make_image(pet.GetSize()[::-1], pet.GetSpacing(), pet.GetOrigin(), pet.GetDirection(),
                     pet_values.astype(np.float32))
    ct = centred_grid((40, 44, 44), (2.5, 2.5, 3.0), rotation(-10, 0), (-0.9, 1.7, -1.1))
    ct_values = (-800 + 900 * ellipsoid(voxel_centres_lps(ct), (0, 50, 150), (45, 40, 45))).astype(np.int16)
    ct = make_image(ct_values.shape, ct.GetSpacing(), ct.GetOrigin(), ct.GetDirection(), ct_values)
    seg_grid = centred_grid((44, 56, 56), (2.0, 2.0, 2.5), rotation(35, -5), (0.4, 0.6, -0.3))
    seg_centres = voxel_centres_lps(seg_grid)
    masks = {name: ellipsoid(seg_centres, c, a) for name, (c, a) in SHAPES.items()}

    directory = tmp_path / "oblique"
    directory.mkdir()
    sitk.WriteImage(pet, str(directory / "pet.nrrd"))
    sitk.WriteImage(ct, str(directory / "ct.nrrd"))
    write_segmentation(directory / "segmentation.seg.nrrd", seg_grid,
                       [SegmentToWrite(n, m, (0.5, 0.5, 0.5)) for n, m in masks.items()])
    (directory / "clinical.json").write_text(json.dumps(CLINICAL))
    return {"dir": directory, "pet": pet, "ct": ct, "seg_grid": seg_grid, "masks": masks}


def ras_matrix(image: sitk.Image) -> np.ndarray:
    return RAS_TO_LPS @ ijk_to_lps(image)  # diag(-1,-1,1,1) is its own inverse


def nodes_from_numpy(data, scene):
    """Nodes built from the arrays (not from the files): volumes with IJK-to-RAS, segments from masks."""
    pet_node = slicer.util.addVolumeFromArray(sitk.GetArrayFromImage(data["pet"]), ras_matrix(data["pet"]), "PET")
    ct_node = slicer.util.addVolumeFromArray(sitk.GetArrayFromImage(data["ct"]), ras_matrix(data["ct"]), "CT")
    seg_node = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "segmentation")
    for name, mask in data["masks"].items():
        addSegmentFromMask(seg_node, name, mask, ras_matrix(data["seg_grid"]))
    return pet_node, ct_node, seg_node


def assert_same_case(from_nodes, from_disk):
    assert np.array_equal(from_nodes.pet_array, from_disk.pet_array)
    assert from_nodes.pet.GetSize() == from_disk.pet.GetSize()
    assert np.allclose(ijk_to_lps(from_nodes.pet), ijk_to_lps(from_disk.pet), atol=1e-6)
    assert [s.name for s in from_nodes.segments] == [s.name for s in from_disk.segments]
    for a, b in zip(from_nodes.segments, from_disk.segments):
        assert a.structure_type == b.structure_type
        assert a.mask.any()
        assert np.array_equal(a.mask, b.mask), f"{a.name}: {a.mask.sum()} vs {b.mask.sum()} voxels"
    ct_a, ct_b = from_nodes.ct_on_pet_grid(), from_disk.ct_on_pet_grid()
    assert np.allclose(ct_a, ct_b, atol=1e-3)


def test_oblique_nodes_give_the_same_case_as_the_files(oblique_case, mrml_scene):
    pet_node, ct_node, seg_node = nodes_from_numpy(oblique_case, mrml_scene)
    # Sanity: the RAS geometry really is oblique and off-origin.
    vtk_matrix = vtk.vtkMatrix4x4()
    pet_node.GetIJKToRASMatrix(vtk_matrix)
    matrix = slicer.util.arrayFromVTKMatrix(vtk_matrix)
    assert abs(matrix[0, 1]) > 0.1 and np.abs(matrix[:3, 3]).min() > 5
    from_nodes = caseFromNodes(pet_node, seg_node, CLINICAL, ct_node)
    from_disk = read_case(oblique_case["dir"])
    assert_same_case(from_nodes, from_disk)
    assert {s.name for s in from_nodes.segments} == set(SHAPES) - {"body_outline"}
    assert any("body_outline" in w for w in from_nodes.warnings)


def test_segmentation_round_trip_through_slicer_seg_nrrd(oblique_case, mrml_scene, tmp_path):
    pet_node, ct_node, seg_node = nodes_from_numpy(oblique_case, mrml_scene)
    path = write_segmentation_with_slicer(seg_node, tmp_path / "written_by_slicer.seg.nrrd", mrml_scene)
    reread = read_segmentation_node(path, mrml_scene)
    from_reread = caseFromNodes(pet_node, reread, CLINICAL, ct_node)
    # The core reads the file Slicer wrote (slicerio) and must agree with the node it came from.
    case_dir = oblique_case["dir"]
    (case_dir / "segmentation.seg.nrrd").unlink()
    (case_dir / "segmentation.seg.nrrd").write_bytes(path.read_bytes())
    assert_same_case(from_reread, read_case(case_dir))
    assert_same_case(caseFromNodes(pet_node, seg_node, CLINICAL, ct_node), read_case(case_dir))


def test_linear_parent_transform_is_hardened(oblique_case, mrml_scene):
    pet_node, ct_node, seg_node = nodes_from_numpy(oblique_case, mrml_scene)
    reference = caseFromNodes(pet_node, seg_node, CLINICAL, ct_node)
    # Moving PET, CT and segmentation together by the same transform changes no voxel of the case.
    transform = mrml_scene.AddNewNodeByClass("vtkMRMLLinearTransformNode")
    matrix = np.eye(4)
    matrix[:3, :3] = rotation(15, 0)
    matrix[:3, 3] = (12.0, -7.0, 30.0)
    transform.SetMatrixTransformToParent(slicer.util.vtkMatrixFromArray(matrix))
    for node in (pet_node, ct_node, seg_node):
        node.SetAndObserveTransformNodeID(transform.GetID())
    moved = caseFromNodes(pet_node, seg_node, CLINICAL, ct_node)
    for a, b in zip(moved.segments, reference.segments):
        assert np.array_equal(a.mask, b.mask)
    assert not np.allclose(ijk_to_lps(moved.pet), ijk_to_lps(reference.pet))


def test_errors_name_the_problem(oblique_case, mrml_scene):
    pet_node, ct_node, seg_node = nodes_from_numpy(oblique_case, mrml_scene)
    assert checkPetLooksLikeSuv(pet_node) is None
    bq_node = slicer.util.addVolumeFromArray(sitk.GetArrayFromImage(oblique_case["pet"]) * 5000.0,
                                             ras_matrix(oblique_case["pet"]), "PET in Bq/mL")
    assert "Bq/mL" in checkPetLooksLikeSuv(bq_node)
    with pytest.raises(InputError, match="weight_kg"):
        caseFromNodes(pet_node, seg_node, {**CLINICAL, "weight_kg": 82000}, ct_node)
    with pytest.raises(InputError, match="no PET"):
        caseFromNodes(None, seg_node, CLINICAL)
    seg_node.GetSegmentation().AddEmptySegment("", "kidney_right")
    with pytest.raises(InputError, match="kidney_right.*empty"):
        caseFromNodes(pet_node, seg_node, CLINICAL, ct_node)
    # An explicit type overrides the name; a type for a missing segment is refused.
    seg_node.GetSegmentation().RemoveSegment(seg_node.GetSegmentation().GetSegmentIdBySegmentName("kidney_right"))
    typed = caseFromNodes(pet_node, seg_node, CLINICAL, structureTypes={"body_outline": "liver"})
    assert typed.segment("body_outline").structure_type.value == "liver"
    with pytest.raises(InputError, match="not in"):
        caseFromNodes(pet_node, seg_node, CLINICAL, structureTypes={"nope": "kidney"})
