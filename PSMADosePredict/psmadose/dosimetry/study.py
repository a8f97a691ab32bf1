"""A post-therapy dosimetry STUDY directory: time points, optional CTs, segmentation, administration.

Layout (``shared/DESIGN.md``)::

    STUDY/
      spect_<HOURS>h.nrrd | .nii.gz | .nii   quantitative SPECT (or PET) in Bq/mL, hours after injection
      spect_<HOURS>h/                         or the DICOM series (PT with Units BQML) of that time point
      ct_<HOURS>h.nrrd | ct_<HOURS>h/         optional CT (HU) of a time point
      segmentation.seg.nrrd | labels.nii.gz   on the grid of one time point (or its CT)
      administration.json                     {"activity_gbq": 7.4, "radiopharmaceutical": "177Lu-PSMA-617",
                                               "injection_datetime": "2026-01-02T10:00:00"}

Hours may be zero-padded (``spect_004h.nrrd``, as ``psmadose simulate --spect-times`` writes) or decimal
(``spect_4.5h``). A simulator case folder without administration.json is accepted: the injected activity is
then read from the ``spect`` record of its simulation.json.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ..errors import InputError
from ..files import read_json
from ..images import read_image
from ..lu177 import decay_data

NAME = re.compile(r"^(spect|ct)_([-+]?\d+(?:\.\d+)?)h(\.nrrd|\.nii\.gz|\.nii|\.nhdr|\.mha)?$", re.IGNORECASE)
SEGMENTATION_NAMES = ("segmentation.seg.nrrd", "labels.nii.gz")
ADMIN_KEYS = {"activity_gbq", "radiopharmaceutical", "injection_datetime", "nuclide"}
ACTIVITY_RANGE_GBQ = (0.5, 15.0)  # one 177Lu-PSMA cycle: typically 6.0-7.4 GBq (VISION: 7.4 GBq)
MAX_RETAINED = 1.25  # an image may not hold more than this times the decayed administered activity
MIN_RETAINED = 1e-3  # nor less than this fraction (a single bed of a late scan still holds percent)


@dataclass
class TimePoint:
    hours: float
    path: Path
    spect: sitk.Image
    ct: sitk.Image | None = None
    ct_path: Path | None = None
    source: str = "nrrd"
    units: str | None = None  # from the image header, when it says


@dataclass
class Study:
    directory: Path
    time_points: list[TimePoint]
    segmentation_path: Path
    activity_gbq: float
    radiopharmaceutical: str
    administration_source: str
    notes: list[str] = field(default_factory=list)

    @property
    def times_h(self) -> list[float]:
        return [tp.hours for tp in self.time_points]


def _administration(directory: Path) -> tuple[float, str, str, dt.datetime | None]:
    path = directory / "administration.json"
    if not path.is_file():
        sim = directory / "simulation.json"
        if sim.is_file():
            record = read_json(sim, "simulation record")
            spect = record.get("spect") if isinstance(record, dict) else None
            if isinstance(spect, dict) and isinstance(spect.get("injected_activity_gbq"), (int, float)):
                return float(spect["injected_activity_gbq"]), "177Lu-PSMA-617", f"{sim} (virtual patient)", None
        raise InputError(f"{path}: missing; write the administration, e.g. {{\"activity_gbq\": 7.4, "
                         "\"radiopharmaceutical\": \"177Lu-PSMA-617\", "
                         "\"injection_datetime\": \"2026-01-02T10:00:00\"}")
    data = read_json(path, "administration record")
    if not isinstance(data, dict):
        raise InputError(f"{path}: expected a JSON object with activity_gbq; fix the file")
    unknown = sorted(set(data) - ADMIN_KEYS)
    if unknown:
        hint = " (activity must be in GBq: use activity_gbq)" if any("activity" in k for k in unknown) else ""
        raise InputError(f"{path}: unknown key(s) {', '.join(unknown)}{hint}; allowed: {', '.join(sorted(ADMIN_KEYS))}")
    activity = data.get("activity_gbq")
    if isinstance(activity, bool) or not isinstance(activity, (int, float)) or not math.isfinite(activity):
        raise InputError(f"{path}: activity_gbq must be a number (GBq), got {activity!r}; fix the file")
    low, high = ACTIVITY_RANGE_GBQ
    if not low <= activity <= high:
        guess = (" it looks like MBq: divide by 1000" if 500 <= activity <= 15000 else
                 " it looks like mCi: multiply by 0.037" if 15 < activity <= 400 else "")
        raise InputError(f"{path}: activity_gbq {activity:g} is outside {low:g}-{high:g} GBq for one 177Lu cycle;"
                         f"{guess} give the administered activity in GBq")
    nuclide = data.get("nuclide", "Lu-177")
    radiopharmaceutical = str(data.get("radiopharmaceutical", "177Lu-PSMA"))
    if nuclide != "Lu-177" or "177lu" not in radiopharmaceutical.lower().replace("-", ""):
        raise InputError(f"{path}: radiopharmaceutical {radiopharmaceutical!r} / nuclide {nuclide!r}: only 177Lu "
                         "dosimetry is implemented; check the file")
    injection = None
    if data.get("injection_datetime") is not None:
        try:
            injection = dt.datetime.fromisoformat(str(data["injection_datetime"]))
        except ValueError:
            raise InputError(f"{path}: injection_datetime {data['injection_datetime']!r} is not an ISO date-time "
                             "like 2026-01-02T10:00:00; fix it") from None
    return float(activity), radiopharmaceutical, str(path), injection


def _dicom_time_point(folder: Path, hours: float, injection: dt.datetime | None) -> tuple[sitk.Image, float]:
    from ..dicom.series import read_datasets, read_series

    found = read_datasets(folder)
    if not found:
        raise InputError(f"{folder}: no DICOM files; put the series of this time point there or use NRRD")
    first = found[0][1]
    modality = str(first.get("Modality", ""))
    if modality != "PT":
        raise InputError(f"{folder}: DICOM modality {modality or 'missing'}: only quantitative series stored as PT "
                         "(Units BQML) are read; export the reconstructed SPECT in Bq/mL as NRRD or NIfTI "
                         f"({folder.name}.nrrd)")
    units = str(first.get("Units", "")).upper()
    if units in ("CNTS", "COUNTS", "PROPCNTS"):
        raise InputError(f"{folder}: Units is {units}: the image is in counts, not Bq/mL; reconstruct it with the "
                         "camera's quantitative calibration (or apply your calibration factor) and export Bq/mL")
    if units != "BQML":
        raise InputError(f"{folder}: Units (0054,1001) is {units or 'missing'}: the series has no activity "
                         "calibration; export a quantitative reconstruction in Bq/mL (Units BQML)")
    if injection is None:
        raise InputError(f"{folder}: DICOM time points need injection_datetime in administration.json to check "
                         "the scan time; add it")
    date = str(first.get("AcquisitionDate", "") or first.get("SeriesDate", ""))
    time = str(first.get("AcquisitionTime", "") or first.get("SeriesTime", "")).split(".")[0]
    try:
        scan = dt.datetime.strptime(date + time[:6].ljust(6, "0"), "%Y%m%d%H%M%S")
    except ValueError:
        raise InputError(f"{folder}: AcquisitionDate/Time missing or unreadable; the scan time cannot be "
                         "known") from None
    measured = (scan - injection).total_seconds() / 3600.0
    if measured <= 0:
        raise InputError(f"{folder}: the scan ({scan.isoformat()}) is before the injection "
                         f"({injection.isoformat()}); fix injection_datetime or the series")
    if abs(measured - hours) > max(1.0, 0.1 * hours):
        raise InputError(f"{folder}: the scan was {measured:.1f} h after injection but the folder says {hours:g} h; "
                         f"rename it spect_{measured:.0f}h or fix injection_datetime")
    image = read_series(folder, "PT").image
    correction = str(first.get("DecayCorrection", "START")).upper()
    if correction == "ADMIN":  # values decay-corrected to the injection: back to the activity present at the scan
        image = image * math.exp(-decay_data().decay_constant_per_h * measured)
    elif correction not in ("START", "NONE"):
        raise InputError(f"{folder}: DecayCorrection {correction!r} is not START, ADMIN or NONE; the activity at "
                         "the scan cannot be known: export the series decay-corrected to the scan start")
    return sitk.Cast(image, sitk.sitkFloat32), measured


def _units_from_header(image: sitk.Image) -> str | None:
    for key in image.GetMetaDataKeys():
        if "unit" in key.lower() and "space" not in key.lower():
            return image.GetMetaData(key).strip()
    return None


def check_quantitative(tp: TimePoint, activity_gbq: float) -> None:
    """A time point must be activity concentration (Bq/mL) consistent with the administered activity."""
    units = tp.units
    if units is not None and units.lower().replace(" ", "") in ("counts", "cnts", "count", "cts"):
        raise InputError(f"{tp.path}: the header says units {units!r}: the image is in counts, not Bq/mL; apply the "
                         "camera calibration factor (Bq/mL per count) and save Bq/mL")
    array = sitk.GetArrayViewFromImage(tp.spect)
    if not np.all(np.isfinite(array)):
        raise InputError(f"{tp.path}: the image holds NaN or infinite values; fix the reconstruction export")
    if float(array.min()) < -0.05 * float(array.max()):
        raise InputError(f"{tp.path}: strongly negative values: not an activity concentration; export Bq/mL")
    voxel_ml = float(np.prod(tp.spect.GetSpacing())) / 1000.0
    total_gbq = float(array.sum(dtype=np.float64)) * voxel_ml / 1e9
    decayed = activity_gbq * math.exp(-decay_data().decay_constant_per_h * tp.hours)
    if total_gbq > MAX_RETAINED * decayed:
        raise InputError(f"{tp.path}: the image holds {total_gbq:.3g} GBq, more than the {decayed:.2f} GBq left of "
                         f"the administered {activity_gbq:g} GBq at {tp.hours:g} h: it is in counts (or kBq/mL, or "
                         "uncalibrated) rather than Bq/mL; apply the calibration and save Bq/mL")
    if total_gbq < MIN_RETAINED * decayed:
        raise InputError(f"{tp.path}: the image holds only {total_gbq * 1e3:.3g} MBq of the {decayed:.2f} GBq left "
                         f"at {tp.hours:g} h: is it in MBq/mL or kBq/mL, or missing its calibration? save Bq/mL")


def _parse_hours(path: Path) -> tuple[str, float] | None:
    match = NAME.match(path.name)
    if not match:
        return None
    is_dir = path.is_dir()
    if (match.group(3) is None) != is_dir:
        return None
    return match.group(1).lower(), float(match.group(2))


def looks_like_study(directory: Path) -> bool:
    """Whether ``directory`` holds at least one time point (spect_<HOURS>h...)."""
    try:
        return any((_parse_hours(p) or ("",))[0] == "spect" for p in Path(directory).iterdir())
    except OSError:
        return False


def read_study(directory: Path) -> Study:
    directory = Path(directory)
    if not directory.is_dir():
        raise InputError(f"{directory}: not a directory; give the STUDY folder (spect_<HOURS>h.nrrd files, "
                         "segmentation.seg.nrrd, administration.json)")
    spects: dict[float, Path] = {}
    cts: dict[float, Path] = {}
    for path in sorted(directory.iterdir()):
        parsed = _parse_hours(path)
        if parsed is None:
            continue
        kind, hours = parsed
        if hours <= 0:
            raise InputError(f"{path}: {hours:g} h is not after the injection; name time points by hours after "
                             "injection (e.g. spect_24h.nrrd)")
        target = spects if kind == "spect" else cts
        if hours in target:
            raise InputError(f"{path}: a second {kind} at {hours:g} h (also {target[hours].name}); keep one")
        target[hours] = path
    if not spects:
        raise InputError(f"{directory}: no time points; add quantitative SPECT named spect_<HOURS>h.nrrd "
                         "(e.g. spect_24h.nrrd, Bq/mL)")
    activity, radiopharmaceutical, admin_source, injection = _administration(directory)
    orphan = sorted(set(cts) - set(spects))
    if orphan:
        raise InputError(f"{cts[orphan[0]]}: a CT at {orphan[0]:g} h without a SPECT at that time; rename it to "
                         "match its SPECT time point")
    seg = next((directory / n for n in SEGMENTATION_NAMES if (directory / n).is_file()), None)
    if seg is None:
        raise InputError(f"{directory}: no segmentation.seg.nrrd (or labels.nii.gz + labels.json); add it")
    time_points = []
    for hours in sorted(spects):
        path = spects[hours]
        if path.is_dir():
            image, measured = _dicom_time_point(path, hours, injection)
            tp = TimePoint(measured, path, image, source="dicom")
        else:
            image = read_image(path, "SPECT")
            tp = TimePoint(hours, path, sitk.Cast(image, sitk.sitkFloat32), units=_units_from_header(image))
        if hours in cts:
            ct_path = cts[hours]
            if ct_path.is_dir():
                from ..dicom.series import read_series

                tp.ct = read_series(ct_path, "CT").image
            else:
                tp.ct = read_image(ct_path, "CT")
            tp.ct_path = ct_path
        check_quantitative(tp, activity)
        time_points.append(tp)
    measured = [tp.hours for tp in time_points]
    if any(b <= a for a, b in zip(measured, measured[1:])):
        order = ", ".join(f"{tp.path.name}: {tp.hours:.1f} h" for tp in time_points)
        raise InputError(f"{directory}: time points out of order ({order}); the names must give the hours after "
                         "injection of each scan")
    return Study(directory, time_points, seg, activity, radiopharmaceutical, admin_source)
