"""psmadose's .seg.nrrd writer/reader against Slicer's own vtkMRMLSegmentationStorageNode (slicer-core).

Expected values come from the numpy masks, names, colours and reference geometry built in this file and
written with psmadose.segmentation.write_segmentation; physical positions are computed independently with
SimpleITK (LPS) and converted to Slicer's RAS by flipping the signs of x and y.
"""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
import slicerio
from psmadose.images import ijk_to_lps
from psmadose.segmentation import (
    STRUCTURE_COLORS,
    STRUCTURE_TYPE_TAG,
    SegmentToWrite,
    read_segmentation,
    write_segmentation,
)

from .mrml_helpers import (
    LPS_TO_RAS,
    load_segmentation_with_slicer,
    read_segmentation_node,
    segments_by_name,
    write_segmentation_with_slicer,
)

pytestmark = pytest.mark.mrml

SHAPE_KJI = (7, 10, 13)  # not cubic, so any i/k transposition changes voxel positions
SPACING = (0.8, 1.3, 2.5)  # anisotropic (mm)
ORIGIN = (-12.5, 30.25, 101.0)  # LPS mm
KNOWN_VOXEL_IJK = (10, 1, 5)  # the one voxel of "lesion_2"


def _oblique_direction() -> np.ndarray:
    a, b = np.deg2rad(20.0), np.deg2rad(17.0)
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    return rz @ rx


def _reference() -> sitk.Image:
    image = sitk.Image(SHAPE_KJI[::-1], sitk.sitkUInt8)
    image.SetSpacing(SPACING)
    image.SetOrigin(ORIGIN)
    image.SetDirection(_oblique_direction().ravel().tolist())
    return image


def _segments() -> list[SegmentToWrite]:
    kidney = np.zeros(SHAPE_KJI, bool)
    kidney[1:5, 2:7, 3:9] = True
    lesion = np.zeros(SHAPE_KJI, bool)
    lesion[3:6, 5:9, 7:12] = True  # overlaps the kidney -> second layer in the 4D .seg.nrrd
    parotid = np.zeros(SHAPE_KJI, bool)
    parotid[2, 7:10, 1:4] = True
    parotid[1:4, 8, 2] = True
    single = np.zeros(SHAPE_KJI, bool)
    single[KNOWN_VOXEL_IJK[::-1]] = True
    # No segment touches voxel (0, 0, 0) or the far corner, so Slicer's writer crops the extent on save
    # and the round trip exercises a non-zero extent offset.
    return [
        SegmentToWrite("kidney_left", kidney, STRUCTURE_COLORS["kidney"], "kidney"),
        SegmentToWrite("lesion 1", lesion, STRUCTURE_COLORS["tumour"], "tumour"),
        SegmentToWrite("parotid_right", parotid, STRUCTURE_COLORS["parotid"], "parotid"),
        SegmentToWrite("lesion_2", single, (0.1, 0.9, 0.3), "tumour"),
    ]


def _lps_to_ras(point) -> np.ndarray:
    return np.array([-point[0], -point[1], point[2]], dtype=float)


def _voxel_centres_lps(geometry: sitk.Image, mask_kji: np.ndarray) -> np.ndarray:
    """Sorted LPS positions of the mask's voxels, with SimpleITK's own index-to-physical transform."""
    points = [geometry.TransformIndexToPhysicalPoint([int(v) for v in kji[::-1]])
              for kji in np.argwhere(mask_kji)]
    points = np.round(np.array(points, dtype=float), 4)
    return points[np.lexsort(points.T[::-1])]


@pytest.fixture
def written(tmp_path):
    reference, segments = _reference(), _segments()
    path = tmp_path / "case.seg.nrrd"
    write_segmentation(path, reference, segments)
    return path, reference, segments


def test_overlapping_segments_give_a_multilayer_file(written, mrml_scene):
    path, _, _ = written
    # Precondition for the tests below: overlaps were written as a 4D (layer, i, j, k) array.
    voxels = slicerio.read_segmentation(str(path))["voxels"]
    assert voxels.ndim == 4 and voxels.shape[0] == 2
    node = read_segmentation_node(path, mrml_scene)
    assert node.GetSegmentation().GetNumberOfLayers() == 2


def test_slicer_reads_names_colours_voxel_counts_and_tags(written, mrml_scene):
    path, _, segments = written
    read = load_segmentation_with_slicer(path, mrml_scene)
    assert sorted(read) == sorted(s.name for s in segments)
    for segment in segments:
        got = read[segment.name]
        assert got["n_voxels"] == int(segment.mask.sum()), segment.name
        assert got["color"] == pytest.approx(segment.color, abs=1e-6), segment.name
        assert got["tags"].get(STRUCTURE_TYPE_TAG) == segment.structure_type, segment.name


def test_slicer_places_segments_at_the_written_physical_position(written, mrml_scene):
    path, reference, segments = written
    node = read_segmentation_node(path, mrml_scene)
    read = segments_by_name(node)

    # One known voxel: SimpleITK's LPS position of index (10, 1, 5), sign-flipped to RAS.
    expected_ras = _lps_to_ras(reference.TransformIndexToPhysicalPoint(KNOWN_VOXEL_IJK))
    np.testing.assert_allclose(read["lesion_2"]["centroid_ras"], expected_ras, atol=1e-4)

    # Centroid of every segment: numpy mask centroid (continuous index) -> LPS by SimpleITK -> RAS.
    for segment in segments:
        centroid_ijk = np.argwhere(segment.mask).mean(axis=0)[::-1]
        expected = _lps_to_ras(reference.TransformContinuousIndexToPhysicalPoint(centroid_ijk.tolist()))
        np.testing.assert_allclose(read[segment.name]["centroid_ras"], expected, atol=1e-4,
                                   err_msg=segment.name)

    # Slicer's image-to-world matrix is psmadose's IJK-to-LPS matrix with x and y negated.
    from .mrml_helpers import segment_voxels_ijk

    _, image_to_world = segment_voxels_ijk(node, read["kidney_left"]["id"])
    np.testing.assert_allclose(image_to_world, LPS_TO_RAS @ ijk_to_lps(reference), atol=1e-6)


def test_slicer_util_helpers_work_on_the_fixture_scene(written, mrml_scene):
    import slicer

    path, reference, segments = written
    node = read_segmentation_node(path)  # through slicer.mrmlScene, set by the fixture
    assert slicer.util.getNode(node.GetName()) is node
    volume = slicer.util.addVolumeFromArray(np.zeros(SHAPE_KJI, np.int16), name="reference")
    volume.SetIJKToRASMatrix(slicer.util.vtkMatrixFromArray(LPS_TO_RAS @ ijk_to_lps(reference)))
    for segment in segments:
        segment_id = node.GetSegmentation().GetSegmentIdBySegmentName(segment.name)
        array = slicer.util.arrayFromSegmentBinaryLabelmap(node, segment_id, volume)
        # Exported onto the written grid, each segment must be exactly the numpy mask that was written.
        np.testing.assert_array_equal(array.astype(bool), segment.mask, err_msg=segment.name)


def test_round_trip_through_slicer_storage_node(written, mrml_scene, tmp_path):
    path, reference, segments = written
    node = read_segmentation_node(path, mrml_scene)
    saved = write_segmentation_with_slicer(node, tmp_path / "saved by slicer.seg.nrrd", mrml_scene)

    geometry, raw_segments = read_segmentation(saved)
    by_name = {s.name: s for s in raw_segments}
    assert sorted(by_name) == sorted(s.name for s in segments)
    for segment in segments:
        raw = by_name[segment.name]
        assert int(raw.mask.sum()) == int(segment.mask.sum()), segment.name
        assert raw.color == pytest.approx(segment.color, abs=1e-6), segment.name
        assert raw.tags.get(STRUCTURE_TYPE_TAG) == segment.structure_type, segment.name
        # Same voxels in space (Slicer may crop the grid on save, so compare LPS positions, not indices).
        np.testing.assert_allclose(_voxel_centres_lps(geometry, raw.mask),
                                   _voxel_centres_lps(reference, segment.mask),
                                   atol=1e-3, err_msg=segment.name)


def test_failed_read_raises_instead_of_only_logging(mrml_scene, vtk_log, tmp_path):
    vtk_log.expect_errors()
    with pytest.raises(RuntimeError, match="could not read"):
        read_segmentation_node(tmp_path / "missing.seg.nrrd", mrml_scene)
    assert vtk_log.errors(), "VTK was expected to log the failed read"


def test_failed_write_raises_instead_of_only_logging(written, mrml_scene, vtk_log, tmp_path):
    path, _, _ = written
    node = read_segmentation_node(path, mrml_scene)
    vtk_log.expect_errors()
    with pytest.raises(RuntimeError, match="could not write"):
        write_segmentation_with_slicer(node, tmp_path / "no such dir" / "out.seg.nrrd", mrml_scene)
