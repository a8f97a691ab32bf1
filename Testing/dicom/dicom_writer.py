"""Write small synthetic DICOM PET/CT series with pydicom, for the DICOM import tests.

Every slice gets its own RescaleSlope; file names and InstanceNumbers are shuffled so that nothing but
ImagePositionPatient can give the slice order. The writer returns what the files hold (the rescaled values in
slice order, the geometry) so that tests compute their expectations from it by hand.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, generate_uid

PATIENT_NAME = "Testpatient^Zebulon"
PATIENT_ID = "PID-987654321"
PATIENT_BIRTH_DATE = "19420317"

BASE_PET = {
    "Units": "BQML", "DecayCorrection": "START", "CorrectedImage": ["ATTN", "DECY"],
    "SeriesDate": "20240105", "SeriesTime": "100000", "AcquisitionDate": "20240105", "AcquisitionTime": "100000",
    "PatientWeight": 80.0, "PatientSize": 1.80, "PatientSex": "M",
}
BASE_RADIOPHARM = {"RadionuclideTotalDose": 300.0e6, "RadionuclideHalfLife": 6586.2,
                   "RadiopharmaceuticalStartDateTime": "20240105080000",
                   "RadiopharmaceuticalStartTime": "080000"}


@dataclass
class WrittenSeries:
    folder: Path
    values: np.ndarray  # float64 (k, j, i): stored * slope + intercept, slices in spatial order
    origin: np.ndarray  # ImagePositionPatient of the first slice along the normal
    row: np.ndarray
    col: np.ndarray
    normal: np.ndarray
    pixel_spacing: tuple[float, float]  # DICOM order: (row gap, column gap)
    slice_spacing: float
    files: list[Path]  # in spatial order


def rotation(angle_deg: float) -> tuple[np.ndarray, np.ndarray]:
    """Row/column cosines rotated about the patient's S axis (an oblique but orthonormal orientation)."""
    a = np.deg2rad(angle_deg)
    return np.array([np.cos(a), np.sin(a), 0.0]), np.array([-np.sin(a), np.cos(a), 0.0])


def write_series(folder: Path, *, modality: str = "PT", n_slices: int = 12, rows: int = 6, columns: int = 5,
                 pixel_spacing=(2.0, 3.0), slice_spacing: float = 4.0, origin=(-10.0, 20.0, -100.0),
                 angle_deg: float = 0.0, tags: dict | None = None, radiopharm: dict | None = None,
                 slice_tags=None, philips: dict | None = None, ge_scan_datetime: str | None = None,
                 radionuclide_code: str | None = None, drop_slices=(), seed: int = 0,
                 intercept: float = 0.0, series_uid: str | None = None, along=None,
                 philips_creator: bool = True, second_radiopharm=None,
                 implicit_vr: bool = False) -> WrittenSeries:
    """Write one series. ``tags`` override/extend BASE_PET (value None deletes the tag); ``slice_tags(k)`` gives
    extra tags for slice k (spatial order); ``drop_slices`` leaves those spatial indices out (missing slices).

    Vendor layouts: ``philips`` {"suv": .., "activity": ..} writes (7053,1000)/(7053,1009), with the private creator
    "Philips PET Private Group" at (7053,0010) unless ``philips_creator`` is False (as some exports write them);
    ``ge_scan_datetime`` writes GE (0009,100d) under "GEMS_PETD_01"; ``along`` gives each slice's position along the
    normal (mm; bed gaps, overlaps) instead of k * slice_spacing; ``implicit_vr`` writes Implicit VR Little Endian
    (private values then come back as raw bytes)."""
    rng = np.random.default_rng(seed)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    row, col = rotation(angle_deg)
    normal = np.cross(row, col)
    all_tags = dict(BASE_PET) if modality == "PT" else {"SeriesDate": "20240105", "SeriesTime": "093000"}
    all_tags.update(tags or {})
    rp = dict(BASE_RADIOPHARM)
    rp.update(radiopharm or {})
    series_uid = series_uid or generate_uid()
    frame_uid = all_tags.pop("FrameOfReferenceUID", None) or generate_uid()
    study_uid = generate_uid()
    keep = [k for k in range(n_slices) if k not in set(drop_slices)]
    names = rng.permutation(len(keep))
    instance_numbers = rng.permutation(len(keep)) + 1
    values = np.empty((len(keep), rows, columns))
    files = []
    for index, k in enumerate(keep):
        if modality == "PT":
            stored = rng.integers(0, 30000, size=(rows, columns)).astype(np.uint16)
            slope = float(rng.uniform(0.5, 40.0))
        else:
            stored = rng.integers(0, 3000, size=(rows, columns)).astype(np.uint16)
            slope = 1.0
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID = ("1.2.840.10008.5.1.4.1.1.128" if modality == "PT"
                                                else "1.2.840.10008.5.1.4.1.1.2")
        ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian if implicit_vr else ExplicitVRLittleEndian
        ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
        ds.Modality = modality
        ds.PatientName = PATIENT_NAME
        ds.PatientID = PATIENT_ID
        ds.PatientBirthDate = PATIENT_BIRTH_DATE
        ds.StudyInstanceUID = study_uid
        ds.SeriesInstanceUID = series_uid
        ds.FrameOfReferenceUID = frame_uid
        ds.InstanceNumber = int(instance_numbers[index])
        ds.ImageOrientationPatient = [f"{v:.10g}" for v in (*row, *col)]
        offset = k * slice_spacing if along is None else float(along[k])
        position = np.asarray(origin, dtype=float) + offset * normal
        ds.ImagePositionPatient = [f"{v:.10g}" for v in position]
        ds.PixelSpacing = [f"{v:.10g}" for v in pixel_spacing]
        ds.SliceThickness = f"{slice_spacing:g}"
        ds.Rows, ds.Columns = rows, columns
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        ds.RescaleSlope = f"{slope:.10g}"
        ds.RescaleIntercept = f"{intercept:.10g}"
        ds.PixelData = stored.tobytes()
        slope = float(ds.RescaleSlope)
        values[index] = stored.astype(np.float64) * slope + intercept
        extra = dict(all_tags)
        if slice_tags is not None:
            extra.update(slice_tags(k))
        for keyword, value in extra.items():
            if value is not None:
                setattr(ds, keyword, value)
        if modality == "PT":
            item = Dataset()
            for keyword, value in rp.items():
                if value is not None:
                    setattr(item, keyword, value)
            if radionuclide_code:
                code = Dataset()
                code.CodeValue = radionuclide_code
                code.CodingSchemeDesignator = "SRT"
                code.CodeMeaning = {"C-111A1": "^18^Fluorine", "C-131A3": "^68^Gallium"}.get(radionuclide_code, "x")
                item.RadionuclideCodeSequence = Sequence([code])
            if rp.get("__omit__"):
                pass
            else:
                items = [item]
                for extra in second_radiopharm or ():  # further items (a second tracer)
                    other = Dataset()
                    for keyword, value in {**rp, **extra}.items():
                        if value is not None:
                            setattr(other, keyword, value)
                    items.append(other)
                ds.RadiopharmaceuticalInformationSequence = Sequence(items)
            if philips and philips_creator:
                block = ds.private_block(0x7053, "Philips PET Private Group", create=True)
                if "suv" in philips:
                    block.add_new(0x00, "DS", f"{philips['suv']:.10g}")
                if "activity" in philips:
                    block.add_new(0x09, "DS", f"{philips['activity']:.10g}")
            elif philips:  # the elements at their usual Philips place, (7053,0010) creator left out
                if "suv" in philips:
                    ds.add_new((0x7053, 0x1000), "DS", f"{philips['suv']:.10g}")
                if "activity" in philips:
                    ds.add_new((0x7053, 0x1009), "DS", f"{philips['activity']:.10g}")
            if ge_scan_datetime:
                block = ds.private_block(0x0009, "GEMS_PETD_01", create=True)
                block.add_new(0x0D, "DT", ge_scan_datetime)
        path = folder / f"IMG{names[index]:05d}.dcm"
        pydicom.dcmwrite(path, ds, enforce_file_format=True)
        files.append(path)
    first = keep[0] * slice_spacing if along is None else float(along[keep[0]])
    return WrittenSeries(folder=folder, values=values, origin=np.asarray(origin, dtype=float)
                         + first * normal, row=row, col=col, normal=normal,
                         pixel_spacing=tuple(pixel_spacing), slice_spacing=slice_spacing, files=files)


F18_HALF_LIFE_S = 6586.2  # ICRP-107: 109.77 min


def suv_tags(**changes) -> dict:
    """Series-level tags of a plain Siemens-like BQML PET (F-18, 300 MBq at 08:00, series at 10:00, 80 kg, 1.80 m,
    male) for ``suv_factors``; a change of None deletes the tag."""
    tags = {"Units": "BQML", "CorrectedImage": ["ATTN", "DECY"], "DecayCorrection": "START",
            "RadionuclideHalfLife": F18_HALF_LIFE_S, "RadionuclideTotalDose": 300e6,
            "RadiopharmaceuticalStartDateTime": "20240105080000", "SeriesDate": "20240105", "SeriesTime": "100000",
            "PatientWeight": 80.0, "PatientSize": 1.80, "PatientSex": "M"}
    tags.update(changes)
    return {k: v for k, v in tags.items() if v is not None}
