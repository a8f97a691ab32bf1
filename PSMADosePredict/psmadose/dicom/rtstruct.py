"""DICOM RTSTRUCT and DICOM SEG to named boolean masks on a reference grid (the PET, or the CT).

RTSTRUCT: each closed planar contour (CLOSED_PLANAR ContourData, LPS mm) is put on the nearest slice of the
reference grid and filled by the even-odd rule at voxel centres (a voxel is inside when its centre is; contours
of one ROI on one slice are combined by exclusive or, so an inner contour makes a hole). SEG: read with
highdicom, each segment resampled with nearest neighbour onto the reference grid.

To write the case's segmentation: ``write_segmentation(path, reference, to_segments_to_write(masks))``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ..errors import InputError
from ..images import ijk_to_lps

log = logging.getLogger(__name__)
DEFAULT_COLOR = (0.5, 0.5, 0.5)


@dataclass
class NamedMask:
    name: str
    mask: np.ndarray  # bool (k, j, i) on the reference grid
    color: tuple[float, float, float]


def fill_polygon(points_ij: np.ndarray, shape_ji: tuple[int, int]) -> np.ndarray:
    """Even-odd fill of one closed polygon (continuous i, j voxel coordinates) sampled at voxel centres.

    Scanline: for each row j, the crossings of the edges with y = j (half-open in y so a vertex on the line is
    counted once); voxels whose centre i lies in [x_a, x_b) of consecutive crossing pairs are inside.
    """
    mask = np.zeros(shape_ji, dtype=bool)
    if len(points_ij) < 3:
        return mask
    x0, y0 = points_ij[:, 0], points_ij[:, 1]
    x1, y1 = np.roll(x0, -1), np.roll(y0, -1)
    rows = np.arange(max(0, int(np.floor(y0.min()))), min(shape_ji[0], int(np.ceil(y0.max())) + 1))
    columns = np.arange(shape_ji[1])
    for j in rows:
        crossing = (y0 <= j) != (y1 <= j)
        if not crossing.any():
            continue
        xs = np.sort(x0[crossing] + (j - y0[crossing]) * (x1[crossing] - x0[crossing]) /
                     (y1[crossing] - y0[crossing]))
        for a, b in zip(xs[0::2], xs[1::2]):
            mask[j] |= (columns >= a) & (columns < b)
    return mask


def _lps_to_index(reference: sitk.Image, points: np.ndarray) -> np.ndarray:
    matrix = ijk_to_lps(reference)
    return np.linalg.solve(matrix[:3, :3], (points - matrix[:3, 3]).T).T


def rtstruct_masks(path: Path, reference: sitk.Image) -> list[NamedMask]:
    """Every ROI of an RTSTRUCT file as a mask on ``reference``'s grid, with its ROIName and display colour."""
    import pydicom

    try:
        ds = pydicom.dcmread(path)
    except (pydicom.errors.InvalidDicomError, OSError) as exc:
        raise InputError(f"{path}: not a readable DICOM file ({exc})") from None
    if str(ds.get("Modality", "")) != "RTSTRUCT":
        raise InputError(f"{path}: Modality is {ds.get('Modality')!r}, expected RTSTRUCT")
    names = {int(roi.ROINumber): str(roi.ROIName) for roi in ds.get("StructureSetROISequence", [])}
    size_ijk = reference.GetSize()
    shape_kji = size_ijk[::-1]
    masks = []
    for roi in ds.get("ROIContourSequence", []):
        number = int(roi.ReferencedROINumber)
        name = names.get(number)
        if name is None:
            raise InputError(f"{path}: ROIContourSequence refers to ROI number {number} that "
                             "StructureSetROISequence does not name")
        color = tuple(float(c) / 255.0 for c in roi.get("ROIDisplayColor", [])) or DEFAULT_COLOR
        mask = np.zeros(shape_kji, dtype=bool)
        for contour in roi.get("ContourSequence", []):
            kind = str(contour.get("ContourGeometricType", "CLOSED_PLANAR"))
            if kind == "POINT":
                continue
            if kind != "CLOSED_PLANAR":
                raise InputError(f"{path}: ROI {name!r} has a {kind} contour; only CLOSED_PLANAR contours can be "
                                 "filled")
            points = np.asarray([float(v) for v in contour.ContourData]).reshape(-1, 3)
            index = _lps_to_index(reference, points)
            k_values = index[:, 2]
            if np.ptp(k_values) > 0.1:
                raise InputError(f"{path}: ROI {name!r} has a contour that is not in a slice plane of the "
                                 "reference image; use the image the structures were drawn on as reference")
            k = int(round(float(np.mean(k_values))))
            if 0 <= k < shape_kji[0]:
                mask[k] ^= fill_polygon(index[:, :2], shape_kji[1:])
        masks.append(NamedMask(name, mask, color))
    if not masks:
        raise InputError(f"{path}: the RTSTRUCT holds no ROI contours")
    return masks


def seg_masks(path: Path, reference: sitk.Image) -> list[NamedMask]:
    """Every segment of a DICOM SEG file (via highdicom) resampled onto ``reference``, with its SegmentLabel."""
    import highdicom as hd

    try:
        seg = hd.seg.segread(path)
    except Exception as exc:  # highdicom/pydicom raise many types on a non-SEG file
        raise InputError(f"{path}: not a readable DICOM SEG ({type(exc).__name__}: {exc})") from None
    volume = seg.get_volume(combine_segments=False)
    array = np.asarray(volume.array)  # (slice, row, column, segment)
    affine = np.asarray(volume.affine)  # (slice, row, column) index -> LPS mm
    # Reorder the axes to SimpleITK's (i=column, j=row, k=slice) convention.
    ijk = affine[:3, [2, 1, 0]]
    spacing = np.linalg.norm(ijk, axis=0)
    source = sitk.Image([int(v) for v in array.shape[2::-1]], sitk.sitkUInt8)
    source.SetSpacing(tuple(float(s) for s in spacing))
    source.SetOrigin(tuple(float(v) for v in affine[:3, 3]))
    source.SetDirection(tuple(float(v) for v in (ijk / spacing).ravel()))
    masks = []
    for index, number in enumerate(seg.segment_numbers):
        description = seg.get_segment_description(number)
        image = sitk.GetImageFromArray((array[..., index] > 0).astype(np.uint8))
        image.CopyInformation(source)
        resampled = sitk.Resample(image, reference, sitk.Transform(), sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)
        masks.append(NamedMask(str(description.segment_label), sitk.GetArrayFromImage(resampled).astype(bool),
                               DEFAULT_COLOR))  # SEG colours are CIELab; left at the default
    return masks


def structure_masks(path: Path, reference: sitk.Image) -> list[NamedMask]:
    """RTSTRUCT or SEG (by Modality) as named masks on ``reference``; duplicate names are refused."""
    import pydicom

    modality = str(pydicom.dcmread(path, stop_before_pixels=True).get("Modality", ""))
    if modality == "RTSTRUCT":
        masks = rtstruct_masks(path, reference)
    elif modality == "SEG":
        masks = seg_masks(path, reference)
    else:
        raise InputError(f"{path}: Modality {modality!r} is neither RTSTRUCT nor SEG")
    names = [m.name for m in masks]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise InputError(f"{path}: duplicate structure name(s) {duplicates}; rename them before import")
    for m in masks:
        if not m.mask.any():
            log.warning("%s: structure %r has no voxel on the reference grid", path, m.name)
    return masks


def write_structures(path: Path, reference: sitk.Image, masks: list[NamedMask]) -> None:
    """Write named masks as the case's segmentation.seg.nrrd (names and colours kept)."""
    from ..segmentation import SegmentToWrite, write_segmentation

    write_segmentation(path, reference, [SegmentToWrite(m.name, m.mask, m.color) for m in masks])
