"""RTSTRUCT (polygon fill, written with pydicom) and DICOM SEG (written with highdicom) to named masks."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest
import slicerio
from psmadose.dicom.rtstruct import fill_polygon, rtstruct_masks, structure_masks, write_structures
from psmadose.dicom.series import read_series
from psmadose.errors import InputError
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

sys.path.insert(0, str(Path(__file__).parent))
from dicom_writer import write_series  # noqa: E402


def test_fill_square_and_triangle_by_hand():
    # Square with corners at voxel coordinates 1.5..4.5: centres 2, 3, 4 inside on both axes -> 3 x 3 voxels.
    square = np.array([[1.5, 1.5], [4.5, 1.5], [4.5, 4.5], [1.5, 4.5]])
    mask = fill_polygon(square, (8, 8))
    expected = np.zeros((8, 8), dtype=bool)
    expected[2:5, 2:5] = True
    assert (mask == expected).all()
    # Right triangle (0,0), (6,0), (0,6) (i, j): centre (i, j) inside when i < 6 - j (half-open at the right):
    # row j holds i = 0 .. 5 - j -> 6+5+4+3+2+1 = 21 voxels (row 6 is the apex, no area).
    triangle = fill_polygon(np.array([[0.0, 0.0], [6.0, 0.0], [0.0, 6.0]]), (8, 8))
    assert triangle.sum() == 21 and triangle[0, 5] and not triangle[0, 6] and triangle[5, 0] and not triangle[1, 5]


def _rtstruct(path: Path, reference_files: list[Path], rois: list[tuple[str, list[np.ndarray]]]) -> Path:
    ref = pydicom.dcmread(reference_files[0], stop_before_pixels=True)
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.481.3"
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID, ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPClassUID, ds.file_meta.MediaStorageSOPInstanceUID
    ds.Modality = "RTSTRUCT"
    ds.StudyInstanceUID, ds.SeriesInstanceUID = ref.StudyInstanceUID, generate_uid()
    ds.StructureSetROISequence, ds.ROIContourSequence = Sequence(), Sequence()
    for number, (name, contours) in enumerate(rois, start=1):
        roi = Dataset()
        roi.ROINumber, roi.ROIName, roi.ReferencedFrameOfReferenceUID = number, name, ref.FrameOfReferenceUID
        ds.StructureSetROISequence.append(roi)
        item = Dataset()
        item.ReferencedROINumber, item.ROIDisplayColor = number, [255, 0, 0]
        item.ContourSequence = Sequence()
        for points in contours:
            contour = Dataset()
            contour.ContourGeometricType = "CLOSED_PLANAR"
            contour.NumberOfContourPoints = len(points)
            contour.ContourData = [f"{v:.6f}" for v in points.ravel()]
            item.ContourSequence.append(contour)
        ds.ROIContourSequence.append(item)
    pydicom.dcmwrite(path, ds, enforce_file_format=True)
    return path


def _lps(written, k, ij_points):
    return np.array([written.origin + k * written.slice_spacing * written.normal
                     + i * written.pixel_spacing[1] * written.row + j * written.pixel_spacing[0] * written.col
                     for i, j in ij_points])


def test_rtstruct_to_named_masks_with_hole(tmp_path):
    written = write_series(tmp_path / "ct", modality="CT", n_slices=6, rows=10, columns=10, angle_deg=20.0)
    reference = read_series(tmp_path / "ct", "CT").image
    outer = [(1.5, 1.5), (7.5, 1.5), (7.5, 7.5), (1.5, 7.5)]
    inner = [(3.5, 3.5), (5.5, 3.5), (5.5, 5.5), (3.5, 5.5)]
    path = _rtstruct(tmp_path / "rs.dcm", written.files, [
        ("kidney_left", [_lps(written, 2, outer), _lps(written, 2, inner)]),
        ("lesion_1", [_lps(written, 4, inner)]),
    ])
    masks = rtstruct_masks(path, reference)
    assert [m.name for m in masks] == ["kidney_left", "lesion_1"]
    kidney = masks[0].mask
    # outer ring 6 x 6 = 36 voxels (centres 2..7) minus the inner 2 x 2 (centres 4, 5) hole = 32, all on slice 2.
    assert kidney.sum() == 32 and kidney[2].sum() == 32 and not kidney[2, 4, 4] and kidney[2, 2, 2]
    assert masks[1].mask[4].sum() == 4 and masks[1].color == (1.0, 0.0, 0.0)
    write_structures(tmp_path / "segmentation.seg.nrrd", reference, masks)
    seg = slicerio.read_segmentation(str(tmp_path / "segmentation.seg.nrrd"))
    assert sorted(s["name"] for s in seg["segments"]) == ["kidney_left", "lesion_1"]
    with pytest.raises(InputError, match="RTSTRUCT"):
        rtstruct_masks(written.files[0], reference)


def test_seg_via_highdicom(tmp_path):
    hd = pytest.importorskip("highdicom")
    from pydicom.sr.codedict import codes

    write_series(tmp_path / "ct", modality="CT", n_slices=6, rows=10, columns=10)
    series = read_series(tmp_path / "ct", "CT")
    sources = [pydicom.dcmread(f) for f in series.files]  # spatial order
    for ds in sources:  # the patient/study attributes highdicom copies into the SEG
        ds.PatientSex, ds.StudyDate, ds.StudyTime, ds.StudyID, ds.AccessionNumber = "M", "20240105", "090000", "1", ""
        ds.ReferringPhysicianName, ds.SeriesNumber = "", 1
    pixels = np.zeros((6, 10, 10, 2), dtype=bool)  # (frame, row, column, segment)
    pixels[1:4, 2:5, 3:7, 0] = True  # 3 x 3 x 4 = 36 voxels
    pixels[4, 6:8, 6:8, 1] = True  # 4 voxels
    descriptions = [hd.seg.SegmentDescription(
        segment_number=n, segment_label=label, segmented_property_category=codes.SCT.Organ,
        segmented_property_type=codes.SCT.Kidney, algorithm_type=hd.seg.SegmentAlgorithmTypeValues.MANUAL)
        for n, label in ((1, "kidney_right"), (2, "node_2"))]
    seg = hd.seg.Segmentation(source_images=sources, pixel_array=pixels, segmentation_type="BINARY",
                              segment_descriptions=descriptions, series_instance_uid=generate_uid(), series_number=9,
                              sop_instance_uid=generate_uid(), instance_number=1, manufacturer="test",
                              manufacturer_model_name="test", software_versions="1", device_serial_number="1")
    seg.save_as(tmp_path / "seg.dcm")
    masks = structure_masks(tmp_path / "seg.dcm", series.image)
    assert [m.name for m in masks] == ["kidney_right", "node_2"]
    assert masks[0].mask.sum() == 36 and masks[0].mask[1:4, 2:5, 3:7].all()
    assert masks[1].mask.sum() == 4 and masks[1].mask[4, 6:8, 6:8].all()
