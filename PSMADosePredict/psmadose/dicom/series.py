"""Reading one DICOM image series (PET or CT) with pydicom: grouping, checks, slice order and LPS geometry.

Slices are ordered by their position along the slice normal (row x column of ImageOrientationPatient), never by
file name or InstanceNumber. A folder holding several series, a modality other than the expected one, slices of
different size/orientation, a missing slice or overlapping slices is refused with an ``InputError``. Small
spacing irregularities (bed boundaries of multi-bed series) are resampled onto a regular grid and reported.

Speed: every file is read once (pydicom parses values lazily); uncompressed pixel data are taken with
``numpy.frombuffer`` (pydicom's decoder only for other transfer syntaxes), and the rescale and SUV factor are one
vectorised multiply-add per slice.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

from ..errors import InputError
from .suv import SuvFactors, implausible_suv_reason, suv_factors

log = logging.getLogger(__name__)

IDENTIFIERS = ("PatientName", "PatientID", "PatientBirthDate")
# Sidecar entries that identify the study (DICOM PS3.15 E.1: UIDs and dates): written only with keep_identifiers.
IDENTIFYING_RECORD_KEYS = ("series_instance_uid", "study_instance_uid", "frame_of_reference_uid",
                           "injection_datetime", "scan_datetime", "series_datetime", "earliest_acquisition_datetime")
SPACING_TOLERANCE = 0.01  # relative deviation of a slice gap from the nominal gap still taken as regular
# Bed boundaries of real multi-bed series leave slightly different gaps (a GE Discovery ST: 3.190 mm among 3.270 mm,
# -2.4 %). Gaps within this relative deviation are resampled onto a regular grid (linear along the normal).
RESAMPLE_TOLERANCE = 0.10
MISSING_SLICE_GAP = 1.5  # a gap of 1.5 nominal gaps or more: a slice is missing
OVERLAP_GAP = 0.5  # a gap below half the nominal gap: overlapping beds (not merged) or a mix of volumes
# Series-level PET tags that must agree on every slice (else the files are a mix of series or corrupt).
PET_SERIES_TAGS = ("Units", "CorrectedImage", "DecayCorrection", "RadionuclideHalfLife", "RadionuclideTotalDose",
                   "RadiopharmaceuticalStartDateTime", "RadiopharmaceuticalStartTime", "RadionuclideCodeValue",
                   "SeriesDate", "SeriesTime", "PatientWeight", "PatientSize", "PatientSex", "SUVType",
                   "PhilipsSUVScaleFactor", "PhilipsActivityConcentrationScaleFactor", "GEPrivateScanDateTime")
_NATIVE_SYNTAXES = ("1.2.840.10008.1.2", "1.2.840.10008.1.2.1")  # implicit / explicit VR little endian


@dataclass
class DicomSeries:
    image: sitk.Image  # rescaled values (stored * RescaleSlope + RescaleIntercept), float32, LPS
    datasets: list  # pydicom datasets without pixel data, sorted along the slice normal
    modality: str
    series_instance_uid: str
    frame_of_reference_uid: str | None
    files: list[Path]
    geometry: dict = field(default_factory=dict)  # slice spacing, resampling (for the sidecar)


@dataclass
class _Slices:
    """One series read and sorted along the normal, before rescale: the pieces read_series/read_pet_suv share."""
    datasets: list
    files: list[Path]
    stored: np.ndarray  # (k, j, i) stored pixel values, slices in spatial order
    slopes: np.ndarray
    intercepts: np.ndarray
    along: np.ndarray  # position of each slice along the normal (mm)
    origin: np.ndarray  # ImagePositionPatient of the first slice
    row: np.ndarray
    col: np.ndarray
    normal: np.ndarray
    pixel_spacing: np.ndarray  # DICOM order: row gap, column gap
    series_instance_uid: str
    frame_of_reference_uid: str | None
    geometry: dict


def _pydicom():
    try:
        import pydicom
    except ImportError:  # pragma: no cover - a dependency, but keep the message useful
        raise InputError("reading DICOM needs pydicom; install it (pip install pydicom)") from None
    return pydicom


def _list_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith(".")
                  and p.name.upper() != "DICOMDIR")


def read_datasets(folder: Path) -> list[tuple[Path, Any]]:
    """Every DICOM file below ``folder`` (pixel data included), skipping files that are not DICOM."""
    pydicom = _pydicom()
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{folder}: DICOM folder not found")
    found = []
    for path in _list_files(folder):
        try:
            ds = pydicom.dcmread(path)
        except (pydicom.errors.InvalidDicomError, OSError, EOFError):
            continue
        if "PixelData" not in ds:
            continue
        found.append((path, ds))
    if not found:
        raise InputError(f"{folder}: no DICOM image files found; point to the folder of one PET (or CT) series")
    return found


def _floats(ds, keyword: str, count: int, path: Path) -> np.ndarray:
    value = ds.get(keyword)
    if value is None:
        raise InputError(f"{path}: DICOM tag {keyword} is missing; the image geometry cannot be known")
    try:
        values = np.array([float(v) for v in (value if count > 1 else [value])], dtype=float)
    except (TypeError, ValueError):
        raise InputError(f"{path}: DICOM tag {keyword} = {value!r} is not numeric; fix the export") from None
    if values.size != count:
        raise InputError(f"{path}: DICOM tag {keyword} has {values.size} values, expected {count}")
    return values


def _stored_pixels(ds, path: Path, shape: tuple[int, int]) -> np.ndarray:
    """The stored values of one slice: straight from the bytes when uncompressed, else pydicom's decoder."""
    meta = getattr(ds, "file_meta", None)
    syntax = str(meta.get("TransferSyntaxUID", "")) if meta is not None else ""
    bits = int(ds.get("BitsAllocated", 0) or 0)
    if (syntax in _NATIVE_SYNTAXES and int(ds.get("SamplesPerPixel", 1) or 1) == 1 and bits in (8, 16, 32)
            and int(ds.get("BitsStored", bits) or bits) == bits):
        dtype = np.dtype(("<i" if int(ds.get("PixelRepresentation", 0) or 0) == 1 else "<u") + str(bits // 8))
        data = ds.PixelData
        if len(data) < shape[0] * shape[1] * dtype.itemsize:
            raise InputError(f"{path}: pixel data shorter than Rows x Columns; the file is truncated: re-export it")
        return np.frombuffer(data, dtype=dtype, count=shape[0] * shape[1]).reshape(shape)
    try:
        return ds.pixel_array
    except Exception as exc:  # compressed transfer syntax without a decoder, corrupt pixel data
        raise InputError(f"{path}: cannot decode the pixel data ({type(exc).__name__}: {exc}); export the "
                         "series uncompressed") from None


def _rescale(ds, path: Path) -> tuple[float, float]:
    """RescaleSlope/RescaleIntercept of one slice (absent: 1 and 0); a zero or non-finite slope is refused, never
    replaced by 1."""
    values = []
    for keyword, default in (("RescaleSlope", 1.0), ("RescaleIntercept", 0.0)):
        raw = ds.get(keyword)
        if raw is None or str(raw).strip() == "":
            values.append(default)
            continue
        try:
            value = float(raw)
        except (TypeError, ValueError):
            raise InputError(f"{path}: DICOM tag {keyword} = {raw!r} is not a number; fix the export") from None
        if not math.isfinite(value) or (keyword == "RescaleSlope" and value == 0.0):
            raise InputError(f"{path}: DICOM tag {keyword} = {raw!r} cannot scale the pixel values; fix the export")
        values.append(value)
    return values[0], values[1]


def _drop_duplicate_files(found: list, along: np.ndarray, tolerance: float, folder: Path) -> tuple[list, list]:
    """Remove copies of one file (same SOPInstanceUID at one position); other shared positions are refused."""
    keep, dropped = [0], []
    for index in range(1, len(found)):
        if along[index] - along[keep[-1]] >= tolerance:
            keep.append(index)
            continue
        (path_a, a), (path_b, b) = found[keep[-1]], found[index]
        uid_a, uid_b = str(a.get("SOPInstanceUID", "")), str(b.get("SOPInstanceUID", ""))
        if uid_a and uid_a == uid_b:
            dropped.append(path_b.name)
            continue
        raise InputError(f"{folder}: slices {path_a.name} and {path_b.name} share one position (ImagePositionPatient "
                         f"{along[index]:.2f} mm along the normal) with different SOPInstanceUIDs: the folder holds "
                         "several frames/time points, unmerged overlapping beds or two reconstructions; keep one "
                         "volume")
    return keep, dropped


def _read_sorted(folder: Path, modality: str) -> _Slices:
    folder = Path(folder)
    found = read_datasets(folder)
    uids = sorted({str(ds.get("SeriesInstanceUID", "")) for _, ds in found})
    if len(uids) > 1:
        raise InputError(f"{folder}: holds {len(uids)} different series (SeriesInstanceUID); put one series per "
                         "folder")
    modalities = sorted({str(ds.get("Modality", "")) for _, ds in found})
    if modalities != [modality]:
        what = {"PT": "PET", "CT": "CT"}[modality]
        raise InputError(f"{folder}: Modality is {'/'.join(modalities) or 'missing'}, expected {modality} ({what}); "
                         f"point to the {what} series")
    if any(int(ds.get("NumberOfFrames", 1) or 1) > 1 for _, ds in found):
        raise InputError(f"{folder}: multi-frame (enhanced) DICOM is not supported; export one file per slice")
    if len(found) < 2:
        raise InputError(f"{folder}: only one slice; a 3D series needs at least two")

    first_path, first = found[0]
    orientation = _floats(first, "ImageOrientationPatient", 6, first_path)
    row, col = orientation[:3], orientation[3:]
    normal = np.cross(row, col)
    if not np.isclose(np.linalg.norm(normal), 1.0, atol=1e-3):
        raise InputError(f"{first_path}: ImageOrientationPatient {orientation.tolist()} is not two orthogonal unit "
                         "vectors")
    pixel_spacing = _floats(first, "PixelSpacing", 2, first_path)
    shape = (int(first.Rows), int(first.Columns))
    positions = []
    for path, ds in found:
        if not np.allclose(_floats(ds, "ImageOrientationPatient", 6, path), orientation, atol=1e-4):
            raise InputError(f"{path}: ImageOrientationPatient differs from the other slices; not one volume")
        if not np.allclose(_floats(ds, "PixelSpacing", 2, path), pixel_spacing, rtol=1e-4):
            raise InputError(f"{path}: PixelSpacing differs from the other slices; not one volume")
        if (int(ds.Rows), int(ds.Columns)) != shape:
            raise InputError(f"{path}: Rows/Columns differ from the other slices; not one volume")
        positions.append(_floats(ds, "ImagePositionPatient", 3, path))
    positions = np.array(positions)
    along = positions @ normal
    order = np.argsort(along, kind="stable")
    along, positions = along[order], positions[order]
    found = [found[i] for i in order]
    keep, dropped = _drop_duplicate_files(found, along, 1e-3 * max(float(pixel_spacing.min()), 1e-3), folder)
    geometry: dict[str, Any] = {"slices_read": len(found)}
    warnings = []
    if dropped:
        found, along, positions = [found[i] for i in keep], along[keep], positions[keep]
        geometry["duplicate_files_ignored"] = dropped
        warnings.append(f"{len(dropped)} file(s) are copies of another slice (same SOPInstanceUID and position) "
                        f"and were ignored: {', '.join(dropped[:3])}{' ...' if len(dropped) > 3 else ''}")
        if len(found) < 2:
            raise InputError(f"{folder}: only one distinct slice; a 3D series needs at least two")
    gaps = np.diff(along)
    nominal = float(np.median(gaps))
    relative = gaps / nominal - 1.0
    worst = int(np.argmax(np.abs(relative)))
    where = (f"gap {gaps[worst]:.3f} mm after slice {worst + 1} of {len(gaps) + 1} ({found[worst][0].name} -> "
             f"{found[worst + 1][0].name}), usual gap {nominal:.3f} mm")
    if gaps.min() < OVERLAP_GAP * nominal:
        at = int(np.argmin(gaps))
        raise InputError(f"{folder}: slices overlap (gap {gaps[at]:.3f} mm after slice {at + 1} of {len(gaps) + 1}, "
                         f"usual gap {nominal:.3f} mm): overlapping bed positions that were not merged, or two "
                         "volumes in one folder; export the composed (whole-body) series")
    if gaps.max() >= MISSING_SLICE_GAP * nominal:
        at = int(np.argmax(gaps))
        raise InputError(f"{folder}: a slice is missing (gap {gaps[at]:.3f} mm after slice {at + 1} of "
                         f"{len(gaps) + 1} ({found[at][0].name}), usual gap {nominal:.3f} mm, i.e. "
                         f"{gaps[at] / nominal - 1:.1f} slice(s) lost); export the complete series")
    if abs(relative[worst]) > RESAMPLE_TOLERANCE:
        raise InputError(f"{folder}: irregular slice spacing ({where}, {100 * relative[worst]:+.1f} %; bed-boundary "
                         f"gaps within {100 * RESAMPLE_TOLERANCE:g} % are resampled): export the series on a regular "
                         "grid")
    geometry.update(nominal_slice_gap_mm=nominal, largest_gap_deviation=float(relative[worst]))
    if abs(relative[worst]) > SPACING_TOLERANCE:
        irregular = int(np.sum(np.abs(relative) > SPACING_TOLERANCE))
        geometry["irregular_gaps"] = irregular
        geometry["resampled"] = (f"{irregular} gap(s) deviate by more than {100 * SPACING_TOLERANCE:g} % (largest: "
                                 f"{where}); slices resampled linearly along the normal onto a regular grid between "
                                 "the first and last slice")
        warnings.append(f"irregular slice spacing ({where}, {100 * relative[worst]:+.1f} %; bed boundary?): resampled "
                        "linearly onto a regular grid")
    offsets = positions - positions[0]
    in_plane = offsets - np.outer(offsets @ normal, normal)
    if np.max(np.linalg.norm(in_plane, axis=1)) > 0.01 * nominal * len(positions):
        raise InputError(f"{folder}: slice positions are not along the slice normal (gantry tilt or sheared "
                         "volume); resample it to an orthogonal grid first")

    stored = np.empty((len(found), *shape), dtype=np.float32)
    slopes = np.empty(len(found))
    intercepts = np.empty(len(found))
    for k, (path, ds) in enumerate(found):
        stored[k] = _stored_pixels(ds, path, shape)
        slopes[k], intercepts[k] = _rescale(ds, path)
        del ds.PixelData  # keep the header only
    geometry["warnings"] = warnings
    frame = {str(ds.get("FrameOfReferenceUID", "")) for _, ds in found} - {""}
    return _Slices(datasets=[ds for _, ds in found], files=[p for p, _ in found], stored=stored, slopes=slopes,
                   intercepts=intercepts, along=along, origin=positions[0], row=row, col=col, normal=normal,
                   pixel_spacing=pixel_spacing, series_instance_uid=uids[0],
                   frame_of_reference_uid=frame.pop() if len(frame) == 1 else None, geometry=geometry)


def _to_image(slices: _Slices, scale: np.ndarray, offset: np.ndarray) -> tuple[sitk.Image, dict]:
    """stored * scale + offset per slice (float32), on a regular grid along the normal, as an LPS image."""
    values = slices.stored  # float32, reused in place: one pass, no second copy of the volume
    values *= scale.astype(np.float32)[:, None, None]
    values += offset.astype(np.float32)[:, None, None]
    along = slices.along
    geometry = slices.geometry
    if "resampled" in geometry:
        extent = float(along[-1] - along[0])
        count = int(round(extent / geometry["nominal_slice_gap_mm"])) + 1
        spacing = extent / (count - 1)
        targets = along[0] + spacing * np.arange(count)
        lower = np.clip(np.searchsorted(along, targets, side="right") - 1, 0, len(along) - 2)
        weight = ((targets - along[lower]) / (along[lower + 1] - along[lower])).astype(np.float32)
        resampled = np.empty((count, *values.shape[1:]), dtype=np.float32)
        for j in range(count):
            np.multiply(values[lower[j]], 1.0 - weight[j], out=resampled[j])
            resampled[j] += weight[j] * values[lower[j] + 1]
        values = resampled
        geometry.update(slices_out=count, slice_spacing_mm=spacing)
    else:
        spacing = float(np.median(np.diff(along)))
        geometry.update(slices_out=len(along), slice_spacing_mm=spacing)
    image = sitk.GetImageFromArray(values)
    image.SetOrigin(tuple(float(v) for v in slices.origin))
    image.SetSpacing((float(slices.pixel_spacing[1]), float(slices.pixel_spacing[0]), spacing))  # row gap, col gap
    image.SetDirection(tuple(float(v) for v in np.column_stack([slices.row, slices.col, slices.normal]).ravel()))
    return image, geometry


def read_series(folder: Path, modality: str) -> DicomSeries:
    """Read, check and sort one series of ``modality`` ("PT" or "CT") into an LPS float32 image."""
    slices = _read_sorted(folder, modality)
    image, geometry = _to_image(slices, slices.slopes, slices.intercepts)
    for message in geometry["warnings"]:
        log.warning("%s: %s", folder, message)
    return DicomSeries(image=image, datasets=slices.datasets, modality=modality,
                       series_instance_uid=slices.series_instance_uid,
                       frame_of_reference_uid=slices.frame_of_reference_uid, files=slices.files, geometry=geometry)


# ---------------------------------------------------------------------------------------------- PET tags

def _decoded(value):
    if isinstance(value, bytes):
        value = value.decode("ascii", errors="replace").strip("\x00 ")
    if isinstance(value, (list, tuple)):
        value = value[0] if value else None
    return value


def _private(ds, group: int, element: int, creator: str):
    """A private tag's value by its creator (the block may sit at any of 0x10..0xff), or None."""
    usual = ds.get((group, 0x0010))  # the usual block (gg,0010) -> (gg,10xx): checked first, it is fast
    if usual is not None and str(_decoded(usual.value)).strip() == creator:
        item = ds.get((group, 0x1000 | (element & 0xFF)))
        return None if item is None else _decoded(item.value)
    try:
        return _decoded(ds.get_private_item(group, element & 0xFF, creator).value)
    except KeyError:
        return None


def _philips_tags(ds, tags: dict) -> None:
    """Philips (7053,1000) SUV and (7053,1009) activity concentration scale factors: by their private creator, or,
    when an export dropped the creator (nothing at (7053,0010)), at their standard Philips position."""
    creator = "Philips PET Private Group"
    tags["PhilipsSUVScaleFactor"] = _private(ds, 0x7053, 0x1000, creator)
    tags["PhilipsActivityConcentrationScaleFactor"] = _private(ds, 0x7053, 0x1009, creator)
    tags["PhilipsPrivateCreator"] = None
    if tags["PhilipsSUVScaleFactor"] is not None or tags["PhilipsActivityConcentrationScaleFactor"] is not None:
        tags["PhilipsPrivateCreator"] = "present"
    elif (0x7053, 0x0010) not in ds and ((0x7053, 0x1000) in ds or (0x7053, 0x1009) in ds):
        tags["PhilipsPrivateCreator"] = "missing"
        for key, element in (("PhilipsSUVScaleFactor", 0x1000), ("PhilipsActivityConcentrationScaleFactor", 0x1009)):
            item = ds.get((0x7053, element))
            tags[key] = None if item is None else _decoded(item.value)


def pet_tags(ds) -> dict:
    """Series-level SUV inputs of one PET dataset as a dict of DICOM keyword -> value (see suv.suv_factors)."""
    tags = {k: ds.get(k) for k in ("Units", "DecayCorrection", "SeriesDate", "SeriesTime", "PatientWeight",
                                    "PatientSize", "PatientSex", "SUVType", "Manufacturer")}
    corrected = ds.get("CorrectedImage")
    tags["CorrectedImage"] = None if corrected is None else (
        [str(c) for c in corrected] if not isinstance(corrected, str) else [corrected])
    info = ds.get("RadiopharmaceuticalInformationSequence")
    if info:
        item = info[0]
        for keyword in ("RadionuclideHalfLife", "RadionuclideTotalDose", "RadiopharmaceuticalStartDateTime",
                        "RadiopharmaceuticalStartTime"):
            tags[keyword] = item.get(keyword)
        codes = item.get("RadionuclideCodeSequence")
        tags["RadionuclideCodeValue"] = str(codes[0].get("CodeValue", "")) if codes else None
    _philips_tags(ds, tags)
    tags["GEPrivateScanDateTime"] = _private(ds, 0x0009, 0x100D, "GEMS_PETD_01")
    return {k: _plain(v) for k, v in tags.items()}


def _plain(value):
    """pydicom values (DSfloat, IS, MultiValue, str subclasses) as plain Python values."""
    if value is None or isinstance(value, list):
        return value
    if isinstance(value, (int, float)):  # DSfloat and IS are subclasses
        return float(value)
    return str(value)


def _same(a, b) -> bool:
    if a is None or b is None:
        return a is b
    try:
        return math.isclose(float(a), float(b), rel_tol=1e-6)
    except (TypeError, ValueError):
        return str(a).strip() == str(b).strip()


# Tags behind PET_SERIES_TAGS (and the private blocks they may sit in): slices whose raw bytes of all of these equal
# the first slice's need no value-by-value comparison (the fast path of series_pet_tags).
_SIGNATURE_TAGS = (0x00541001, 0x00280051, 0x00541102, 0x00080021, 0x00080031, 0x00101030, 0x00101020, 0x00100040,
                   0x00541006, 0x00540016, 0x70530010, 0x70531000, 0x70531009, 0x00090010, 0x00090011, 0x00090012,
                   0x0009100D, 0x0009110D, 0x0009120D)


def _raw_signature(ds) -> tuple:
    """The undecoded bytes of the series-level tags; an element pydicom already decoded never matches (then the
    values are compared one by one)."""
    signature = []
    for tag in _SIGNATURE_TAGS:
        item = ds.get_item(tag)
        raw = getattr(item, "value", None) if item is not None and type(item).__name__ == "RawDataElement" else item
        signature.append(raw if item is None or isinstance(raw, bytes) else object())
    return tuple(signature)


def series_pet_tags(datasets: list) -> tuple[dict, list[dict]]:
    """Series-level tags (checked identical on every slice) and per-slice acquisition tags."""
    signatures = [_raw_signature(ds) for ds in datasets]  # before any value is decoded
    tags = pet_tags(datasets[0])
    items = datasets[0].get("RadiopharmaceuticalInformationSequence") or []
    described = {tuple(str(item.get(k, "")) for k in ("RadionuclideTotalDose", "RadionuclideHalfLife",
                                                       "RadiopharmaceuticalStartDateTime",
                                                       "RadiopharmaceuticalStartTime")) for item in items}
    if len(described) > 1:
        raise InputError(f"DICOM tag RadiopharmaceuticalInformationSequence (0054,0016) describes {len(described)} "
                         "different administrations (activity, half-life or time); an SUV needs one: keep the item "
                         "of the tracer imaged")
    if datasets[0].get("RadiopharmaceuticalInformationSequence") in (None, []) and \
            str(tags.get("Units", "")).upper() not in ("GML", "CM2ML"):
        raise InputError("DICOM tag RadiopharmaceuticalInformationSequence (0054,0016) is missing; the injected "
                         "activity and time are needed for the SUV")
    for ds, signature in zip(datasets[1:], signatures[1:]):
        if signature == signatures[0]:  # byte for byte the same series-level tags
            continue
        other = pet_tags(ds)
        for key in PET_SERIES_TAGS:
            if not _same(tags.get(key), other.get(key)) and not (
                    isinstance(tags.get(key), list) and tags.get(key) == other.get(key)):
                raise InputError(f"DICOM tag {key} differs between slices of one series ({tags.get(key)!r} vs "
                                 f"{other.get(key)!r}); the folder mixes series or the export is corrupt")
    slices = [{"AcquisitionDate": ds.get("AcquisitionDate"), "AcquisitionTime": ds.get("AcquisitionTime"),
               "AcquisitionDateTime": ds.get("AcquisitionDateTime"),
               "ActualFrameDuration": ds.get("ActualFrameDuration"),
               "FrameReferenceTime": ds.get("FrameReferenceTime")} for ds in datasets]
    return tags, slices


@dataclass
class SuvImage:
    image: sitk.Image  # float32 SUV, LPS
    record: dict  # the JSON sidecar (no patient identifiers, UIDs or dates unless asked)
    frame_of_reference_uid: str | None


def read_pet_suv(folder: Path, method: str = "bw", *, keep_identifiers: bool = False,
                 strict_range: bool = False, quiet: bool = False) -> SuvImage:
    """The PET series in ``folder`` converted to SUV with ``method`` (bw, lbm, bsa).

    A maximum SUVbw outside 0.5-1000 is a warning naming the most likely wrong tag; with ``strict_range`` (a PET
    read for a prediction) it is an error. Warnings are logged and kept in ``record["warnings"]``; ``quiet`` leaves
    the logging to a caller that reports them itself."""
    slices = _read_sorted(folder, "PT")
    tags, slice_tags = series_pet_tags(slices.datasets)
    result: SuvFactors = suv_factors(tags, slice_tags, method)
    # SUV = (stored * slope + intercept) * factor = stored * (slope * factor) + intercept * factor
    image, geometry = _to_image(slices, slices.slopes * result.factors, slices.intercepts * result.factors)
    record = {"psmadose": "suv", **result.record, "slices": len(slices.datasets),
              "rescale": "stored * RescaleSlope + RescaleIntercept per slice, then * suv_factor",
              "geometry": {k: v for k, v in geometry.items() if k != "warnings"},
              "series_instance_uid": slices.series_instance_uid,
              "study_instance_uid": str(slices.datasets[0].get("StudyInstanceUID", "")) or None,
              "frame_of_reference_uid": slices.frame_of_reference_uid}
    record["warnings"] = list(geometry["warnings"]) + list(record.get("warnings", []))
    # SUVbw = SUL * weight / LBM = SUVbsa * weight_g / BSA_cm2: the plausibility check is on SUVbw
    to_bw = {"bw": 1.0, "lbm": record["patient_weight_kg"] / record["lean_body_mass_kg"] if method == "lbm" else 0,
             "bsa": 0.1 * record["patient_weight_kg"] / record["body_surface_area_m2"] if method == "bsa" else 0}
    reason = implausible_suv_reason(record, float(sitk.GetArrayViewFromImage(image).max()) * to_bw[method])
    if reason and strict_range:
        raise InputError(f"{folder}: PET converted from DICOM: {reason}")
    if reason:
        record["warnings"].append(reason)
    for message in record["warnings"] if not quiet else ():
        log.warning("%s: %s", folder, message)
    if not record["warnings"]:
        del record["warnings"]
    if keep_identifiers:
        first = slices.datasets[0]
        record["patient"] = {k: str(first.get(k, "")) for k in IDENTIFIERS}
        for key, value in record["patient"].items():
            image.SetMetaData(key, value)
    else:
        for key in IDENTIFYING_RECORD_KEYS:
            record.pop(key, None)
        record["identifiers"] = "UIDs, dates and patient identifiers left out (psmadose suv --keep-identifiers)"
    return SuvImage(image=image, record=record, frame_of_reference_uid=slices.frame_of_reference_uid)


def read_ct_hu(folder: Path) -> tuple[sitk.Image, str | None]:
    """A CT series in HU (per-slice RescaleSlope/RescaleIntercept applied) and its FrameOfReferenceUID."""
    series = read_series(folder, "CT")
    units = {str(ds.get("RescaleType", "HU") or "HU").upper() for ds in series.datasets}
    if units - {"HU", "US"}:
        raise InputError(f"{folder}: RescaleType {sorted(units)} is not HU; this CT cannot be used")
    return series.image, series.frame_of_reference_uid


def check_same_frame(pet_uid: str | None, ct_uid: str | None, where: str) -> str | None:
    """A warning when PET and CT have different FrameOfReferenceUIDs (their positions may not match)."""
    if pet_uid and ct_uid and pet_uid != ct_uid:
        return (f"{where}: PET and CT have different FrameOfReferenceUID; they may not be registered — check the "
                "overlay before trusting CT-based features")
    return None


def write_suv(suv: SuvImage, out: Path, *, overwrite: bool = False, inputs=()) -> Path:
    """Write the SUV image (``out``, e.g. SUV.nrrd) and its JSON sidecar (same stem + .json), each atomically."""
    import json

    from ..images import write_image
    from ..outputs import atomic_output_file

    out = Path(out)
    name = out.name
    for suffix in (".nii.gz", ".nrrd", ".nhdr", ".nii", ".mha", ".mhd"):
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
            break
    else:
        raise InputError(f"{out}: give an image file name ending in .nrrd or .nii.gz")
    sidecar = out.with_name(name + ".json")
    with atomic_output_file(sidecar, overwrite, inputs) as tmp_json, \
            atomic_output_file(out, overwrite, inputs) as tmp_image:
        write_image(suv.image, tmp_image, level=1)  # fastest gzip
        tmp_json.write_text(json.dumps(suv.record, indent=2) + "\n", encoding="utf-8")
    return sidecar
