"""Reading one DICOM image series (PET or CT) with pydicom: grouping, checks, slice order and LPS geometry.

Slices are ordered by their position along the slice normal (row x column of ImageOrientationPatient), never by
file name or InstanceNumber. A folder holding several series, a modality other than the expected one, slices of
different size/orientation, or irregular spacing (a missing slice) is refused with an ``InputError``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

from ..errors import InputError
from .suv import SuvFactors, suv_factors

log = logging.getLogger(__name__)

IDENTIFIERS = ("PatientName", "PatientID", "PatientBirthDate")
SPACING_TOLERANCE = 0.01  # relative deviation of one slice gap from the median gap that counts as irregular
# Series-level PET tags that must agree on every slice (else the files are a mix of series or corrupt).
PET_SERIES_TAGS = ("Units", "CorrectedImage", "DecayCorrection", "RadionuclideHalfLife", "RadionuclideTotalDose",
                   "RadiopharmaceuticalStartDateTime", "RadiopharmaceuticalStartTime", "RadionuclideCodeValue",
                   "SeriesDate", "SeriesTime", "PatientWeight", "PatientSize", "PatientSex",
                   "PhilipsSUVScaleFactor", "PhilipsActivityConcentrationScaleFactor", "GEPrivateScanDateTime")


@dataclass
class DicomSeries:
    image: sitk.Image  # rescaled values (stored * RescaleSlope + RescaleIntercept), float32, LPS
    datasets: list  # pydicom datasets without pixel data, sorted along the slice normal
    modality: str
    series_instance_uid: str
    frame_of_reference_uid: str | None
    files: list[Path]


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
    values = np.array([float(v) for v in (value if count > 1 else [value])], dtype=float)
    if values.size != count:
        raise InputError(f"{path}: DICOM tag {keyword} has {values.size} values, expected {count}")
    return values


def read_series(folder: Path, modality: str) -> DicomSeries:
    """Read, check and sort one series of ``modality`` ("PT" or "CT") into an LPS float32 image."""
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
    gaps = np.diff(along)
    if np.any(gaps < 1e-3 * max(float(pixel_spacing.min()), 1e-3)):
        raise InputError(f"{folder}: two slices share one position (ImagePositionPatient); the folder holds "
                         "several frames/time points or duplicate files; keep one volume")
    spacing = float(np.median(gaps))
    if np.max(np.abs(gaps - spacing)) > SPACING_TOLERANCE * spacing:
        worst = int(np.argmax(np.abs(gaps - spacing)))
        raise InputError(f"{folder}: irregular slice spacing (gap {gaps[worst]:.3f} mm after slice {worst + 1} "
                         f"of {len(gaps) + 1}, usual gap {spacing:.3f} mm): a slice is missing; export the complete "
                         "series")
    offsets = positions - positions[0]
    in_plane = offsets - np.outer(offsets @ normal, normal)
    if np.max(np.linalg.norm(in_plane, axis=1)) > 0.01 * spacing * len(positions):
        raise InputError(f"{folder}: slice positions are not along the slice normal (gantry tilt or sheared "
                         "volume); resample it to an orthogonal grid first")

    array = np.empty((len(found), *shape), dtype=np.float32)
    for k, (path, ds) in enumerate(found):
        try:
            stored = ds.pixel_array
        except Exception as exc:  # compressed transfer syntax without a decoder, corrupt pixel data
            raise InputError(f"{path}: cannot decode the pixel data ({type(exc).__name__}: {exc}); export the "
                             "series uncompressed") from None
        slope = float(ds.get("RescaleSlope", 1.0) or 1.0)
        intercept = float(ds.get("RescaleIntercept", 0.0) or 0.0)
        array[k] = stored.astype(np.float64) * slope + intercept
        del ds.PixelData  # keep the header only
    image = sitk.GetImageFromArray(array)
    image.SetOrigin(tuple(float(v) for v in positions[0]))
    image.SetSpacing((float(pixel_spacing[1]), float(pixel_spacing[0]), spacing))  # DICOM: row gap, column gap
    image.SetDirection(tuple(float(v) for v in np.column_stack([row, col, normal]).ravel()))
    frame = {str(ds.get("FrameOfReferenceUID", "")) for _, ds in found} - {""}
    return DicomSeries(image=image, datasets=[ds for _, ds in found], modality=modality,
                       series_instance_uid=uids[0], frame_of_reference_uid=frame.pop() if len(frame) == 1 else None,
                       files=[p for p, _ in found])


# ---------------------------------------------------------------------------------------------- PET tags

def _private(ds, group: int, element: int, creator: str):
    """A private tag's value by its creator (the block may sit at any of 0x10..0xff), or None."""
    try:
        value = ds.get_private_item(group, element & 0xFF, creator).value
    except KeyError:
        return None
    if isinstance(value, bytes):
        value = value.decode("ascii", errors="replace").strip("\x00 ")
    if isinstance(value, (list, tuple)):
        value = value[0] if value else None
    return value


def pet_tags(ds) -> dict:
    """Series-level SUV inputs of one PET dataset as a dict of DICOM keyword -> value (see suv.suv_factors)."""
    tags = {k: ds.get(k) for k in ("Units", "DecayCorrection", "SeriesDate", "SeriesTime", "PatientWeight",
                                    "PatientSize", "PatientSex")}
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
    tags["PhilipsSUVScaleFactor"] = _private(ds, 0x7053, 0x1000, "Philips PET Private Group")
    tags["PhilipsActivityConcentrationScaleFactor"] = _private(ds, 0x7053, 0x1009, "Philips PET Private Group")
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
        return bool(np.isclose(float(a), float(b), rtol=1e-6))
    except (TypeError, ValueError):
        return str(a).strip() == str(b).strip()


def series_pet_tags(datasets: list) -> tuple[dict, list[dict]]:
    """Series-level tags (checked identical on every slice) and per-slice acquisition tags."""
    tags = pet_tags(datasets[0])
    if datasets[0].get("RadiopharmaceuticalInformationSequence") in (None, []) and \
            str(tags.get("Units", "")).upper() != "GML":
        raise InputError("DICOM tag RadiopharmaceuticalInformationSequence (0054,0016) is missing; the injected "
                         "activity and time are needed for the SUV")
    for ds in datasets[1:]:
        other = pet_tags(ds)
        for key in PET_SERIES_TAGS:
            if not _same(tags.get(key), other.get(key)) and not (
                    isinstance(tags.get(key), list) and tags.get(key) == other.get(key)):
                raise InputError(f"DICOM tag {key} differs between slices of one series ({tags.get(key)!r} vs "
                                 f"{other.get(key)!r}); the folder mixes series or the export is corrupt")
    slices = [{"AcquisitionDate": ds.get("AcquisitionDate"), "AcquisitionTime": ds.get("AcquisitionTime"),
               "AcquisitionDateTime": ds.get("AcquisitionDateTime"),
               "ActualFrameDuration": ds.get("ActualFrameDuration")} for ds in datasets]
    return tags, slices


@dataclass
class SuvImage:
    image: sitk.Image  # float32 SUV, LPS
    record: dict  # the JSON sidecar (no patient identifiers unless asked)
    frame_of_reference_uid: str | None


def read_pet_suv(folder: Path, method: str = "bw", *, keep_identifiers: bool = False) -> SuvImage:
    """The PET series in ``folder`` converted to SUV with ``method`` (bw, lbm, bsa)."""
    series = read_series(folder, "PT")
    tags, slices = series_pet_tags(series.datasets)
    result: SuvFactors = suv_factors(tags, slices, method)
    array = sitk.GetArrayViewFromImage(series.image)
    suv = (array.astype(np.float64) * result.factors[:, None, None]).astype(np.float32)
    image = sitk.GetImageFromArray(suv)
    image.CopyInformation(series.image)
    record = {"psmadose": "suv", **result.record, "slices": len(series.datasets),
              "rescale": "stored * RescaleSlope + RescaleIntercept per slice, then * suv_factor",
              "series_instance_uid": series.series_instance_uid,
              "frame_of_reference_uid": series.frame_of_reference_uid}
    if "warning" in record:
        log.warning("%s: %s", folder, record["warning"])
    if keep_identifiers:
        first = series.datasets[0]
        record["patient"] = {k: str(first.get(k, "")) for k in IDENTIFIERS}
        for key, value in record["patient"].items():
            image.SetMetaData(key, value)
    return SuvImage(image=image, record=record, frame_of_reference_uid=series.frame_of_reference_uid)


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
        write_image(suv.image, tmp_image)
        tmp_json.write_text(json.dumps(suv.record, indent=2) + "\n", encoding="utf-8")
    return sidecar
