"""The SUV scale factor from DICOM tag values: the QIBA vendor-neutral SUV pseudo-code, without files.

Input is a dict of series-level tag values (DICOM keywords; DA/TM/DT as the strings found in the file) and one
dict per slice (AcquisitionDate/AcquisitionTime/AcquisitionDateTime, ActualFrameDuration). The result is one
factor per slice (SUV = (stored * RescaleSlope + RescaleIntercept) * factor) and a record of every value that
went into it and which rule picked it, for the JSON sidecar.

Rules (QIBA "Vendor-neutral pseudo-code for SUV calculation", QIBA FDG-PET/CT Technical Committee wiki, as
implemented by cornerstonejs/calculate-suv):

- Units BQML: Bq/mL, decay-corrected as DecayCorrection says. CNTS (Philips): (7053,1000) SUV scale factor
  gives SUVbw directly; otherwise (7053,1009) activity concentration scale factor gives Bq/mL. GML: already SUVbw.
- CorrectedImage must contain ATTN; DECY must be present exactly when DecayCorrection is START or ADMIN.
- Scan time: SeriesDate/SeriesTime unless the earliest acquisition is earlier (the series was re-created after
  the scan); then the GE private scan datetime (0009,100d) when present, else the earliest AcquisitionDateTime.
- Injection time: RadiopharmaceuticalStartDateTime; else RadiopharmaceuticalStartTime on SeriesDate (an
  injection on another day therefore needs the full datetime: a negative decay time is an error, not a guess).
- DecayCorrection START: decay the injected dose to the scan time. ADMIN: images are corrected to the injection,
  no decay. NONE: the pixels are the activity during each slice's own acquisition, so the dose is decayed to
  each slice's acquisition start and averaged over its ActualFrameDuration (per-slice factors).
- SUVbw = value * weight_g / dose_Bq; SUL (lbm) uses Janmahasatian 2005 lean body mass; SUVbsa uses Du Bois
  1916 body surface area in cm^2 (SUVbsa in cm^2/mL).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import numpy as np

from ..errors import InputError

METHODS = ("bw", "lbm", "bsa")

# DICOM CID 4020 "PET Radionuclide" (SNOMED-RT style codes) -> nuclide for radioactivedecay.
RADIONUCLIDE_CODES = {"C-111A1": "F-18", "C-131A3": "Ga-68"}
HALF_LIFE_AGREEMENT = 0.01  # RadionuclideHalfLife vs the coded nuclide: beyond 1 % they contradict each other


@dataclass
class SuvFactors:
    factors: np.ndarray  # float64, one per slice, in the slice order given
    record: dict[str, Any] = field(default_factory=dict)

    @property
    def factor(self) -> float:
        """The factor when it is the same for every slice (START, ADMIN, GML, CNTS); else the mean."""
        return float(np.mean(self.factors))


# ------------------------------------------------------------------------------------------ DICOM date/time

def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bytes):
        value = value.decode("ascii", errors="replace")
    return str(value).strip().strip("\x00").strip()


def parse_time(value: Any, tag: str) -> timedelta:
    """DICOM TM (HHMMSS.FFFFFF, components may be truncated; legacy HH:MM:SS accepted) as time of day."""
    text = _text(value).replace(":", "")
    try:
        main, _, frac = text.partition(".")
        if not main.isdigit() or len(main) not in (2, 4, 6):
            raise ValueError
        hours, minutes, seconds = int(main[0:2]), int(main[2:4] or 0), int(main[4:6] or 0)
        if hours > 23 or minutes > 59 or seconds > 60:
            raise ValueError
        fraction = float(f"0.{frac}") if frac else 0.0
    except ValueError:
        raise InputError(f"DICOM tag {tag} = {text!r} is not a valid time (HHMMSS.FFFFFF); fix the export") from None
    return timedelta(hours=hours, minutes=minutes, seconds=seconds + fraction)


def parse_date(value: Any, tag: str) -> datetime:
    text = _text(value).replace(".", "").replace("-", "")
    try:
        if len(text) != 8:
            raise ValueError
        return datetime.strptime(text, "%Y%m%d")
    except ValueError:
        raise InputError(f"DICOM tag {tag} = {text!r} is not a valid date (YYYYMMDD); fix the export") from None


def parse_datetime(value: Any, tag: str) -> datetime:
    """DICOM DT (YYYYMMDDHHMMSS.FFFFFF&ZZXX); the UTC offset is dropped (all times of one study share it)."""
    text = _text(value)
    for sign in "+-":
        if sign in text[8:]:
            text = text[: 8 + text[8:].index(sign)]
    if len(text) < 8:
        raise InputError(f"DICOM tag {tag} = {text!r} is not a valid date-time (YYYYMMDDHHMMSS); fix the export")
    day = parse_date(text[:8], tag)
    return day + (parse_time(text[8:], tag) if len(text) > 8 else timedelta())


def _combine(date_value: Any, time_value: Any, date_tag: str, time_tag: str) -> datetime:
    return parse_date(date_value, date_tag) + parse_time(time_value, time_tag)


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="microseconds" if moment.microsecond else "seconds")


# ---------------------------------------------------------------------------------------------- helpers

def _present(tags: dict, key: str) -> bool:
    value = tags.get(key)
    return value is not None and _text(value) != ""


def _number(tags: dict, key: str, what: str, *, positive: bool = True) -> float:
    if not _present(tags, key):
        raise InputError(f"DICOM tag {key} ({what}) is missing; it is needed for this SUV; add it to the series "
                         "(e.g. with dcmodify) or export the PET from the scanner with it")
    try:
        value = float(_text(tags[key]) if isinstance(tags[key], (bytes, str)) else tags[key])
    except (TypeError, ValueError):
        raise InputError(f"DICOM tag {key} ({what}) = {tags[key]!r} is not a number; fix the export") from None
    if not math.isfinite(value) or (positive and value <= 0):
        raise InputError(f"DICOM tag {key} ({what}) = {value!r} is not a positive number; an unknown value "
                         "cannot give a correct SUV: set the real value in the series")
    return value


def nuclide_half_life_s(nuclide: str) -> float:
    """Half-life from radioactivedecay's default dataset (ICRP-107 decay data)."""
    import radioactivedecay

    return float(radioactivedecay.Nuclide(nuclide).half_life("s"))


def _half_life(tags: dict, record: dict) -> float:
    code = _text(tags.get("RadionuclideCodeValue"))
    nuclide = RADIONUCLIDE_CODES.get(code)
    coded = nuclide_half_life_s(nuclide) if nuclide else None
    if _present(tags, "RadionuclideHalfLife"):
        half_life = _number(tags, "RadionuclideHalfLife", "half-life in s")
        if coded is not None and abs(half_life - coded) > HALF_LIFE_AGREEMENT * coded:
            raise InputError(f"DICOM tags contradict each other: RadionuclideHalfLife = {half_life:g} s but "
                             f"RadionuclideCodeSequence code {code} is {nuclide} (half-life {coded:g} s); "
                             "correct the wrong one")
        record.update(half_life_s=half_life, half_life_source="RadionuclideHalfLife (0018,1075)")
        return half_life
    if coded is None:
        known = ", ".join(f"{c} {n}" for c, n in RADIONUCLIDE_CODES.items())
        raise InputError("DICOM tag RadionuclideHalfLife is missing and RadionuclideCodeSequence "
                         f"{'code ' + repr(code) + ' is not a known nuclide' if code else 'is missing too'} "
                         f"(known: {known}); add RadionuclideHalfLife (seconds) to the series")
    import radioactivedecay

    record.update(half_life_s=coded, radionuclide=nuclide,
                  half_life_source=f"RadionuclideCodeSequence code {code} = {nuclide}; half-life from "
                                   f"radioactivedecay {radioactivedecay.__version__} (ICRP-107 decay data)")
    return coded


def _scan_datetime(tags: dict, slices: list[dict], record: dict) -> tuple[datetime, list[datetime | None]]:
    """The series scan time (QIBA rule) and each slice's acquisition datetime (None when unknown)."""
    acquisitions: list[datetime | None] = []
    for s in slices:
        if _present(s, "AcquisitionDateTime"):
            acquisitions.append(parse_datetime(s["AcquisitionDateTime"], "AcquisitionDateTime"))
        elif _present(s, "AcquisitionTime"):
            date_tag = "AcquisitionDate" if _present(s, "AcquisitionDate") else "SeriesDate"
            date_value = s.get("AcquisitionDate") if date_tag == "AcquisitionDate" else tags.get("SeriesDate")
            if not _present({"v": date_value}, "v"):
                raise InputError("DICOM tags AcquisitionDate and SeriesDate are both missing; the scan date is "
                                 "needed for the decay correction")
            acquisitions.append(_combine(date_value, s["AcquisitionTime"], date_tag, "AcquisitionTime"))
        else:
            acquisitions.append(None)
    known = [a for a in acquisitions if a is not None]
    earliest = min(known) if known else None
    series = None
    if _present(tags, "SeriesDate") and _present(tags, "SeriesTime"):
        series = _combine(tags["SeriesDate"], tags["SeriesTime"], "SeriesDate", "SeriesTime")
    if series is None and earliest is None:
        raise InputError("DICOM tags SeriesDate/SeriesTime and AcquisitionDate/AcquisitionTime are missing; the "
                         "scan time is needed for the decay correction")
    record["series_datetime"] = _iso(series) if series else None
    record["earliest_acquisition_datetime"] = _iso(earliest) if earliest else None
    if series is not None and (earliest is None or series <= earliest):
        record["scan_datetime_rule"] = "SeriesDate/SeriesTime (not later than the earliest acquisition)"
        return series, acquisitions
    if _present(tags, "GEPrivateScanDateTime"):
        scan = parse_datetime(tags["GEPrivateScanDateTime"], "GE private scan datetime (0009,100d)")
        record["scan_datetime_rule"] = ("GE private scan datetime (0009,100d): the series time is later than "
                                        "the acquisition (series re-created after the scan)")
        return scan, acquisitions
    record["scan_datetime_rule"] = ("earliest AcquisitionDate/AcquisitionTime over all slices: "
                                    + ("SeriesDate/SeriesTime missing" if series is None else
                                       "the series time is later than the acquisition (series re-created "
                                       "after the scan)"))
    return earliest, acquisitions


def _injection_datetime(tags: dict, record: dict) -> datetime:
    has_dt = _present(tags, "RadiopharmaceuticalStartDateTime")
    has_tm = _present(tags, "RadiopharmaceuticalStartTime")
    if has_dt:
        start = parse_datetime(tags["RadiopharmaceuticalStartDateTime"], "RadiopharmaceuticalStartDateTime")
        if has_tm:
            time_only = parse_time(tags["RadiopharmaceuticalStartTime"], "RadiopharmaceuticalStartTime")
            of_day = start - start.replace(hour=0, minute=0, second=0, microsecond=0)
            if abs((of_day - time_only).total_seconds()) > 1.0:
                raise InputError("DICOM tags contradict each other: RadiopharmaceuticalStartDateTime "
                                 f"{_text(tags['RadiopharmaceuticalStartDateTime'])} vs RadiopharmaceuticalStartTime "
                                 f"{_text(tags['RadiopharmaceuticalStartTime'])}; correct the wrong one")
        record["injection_datetime_rule"] = "RadiopharmaceuticalStartDateTime (0018,1078)"
    elif has_tm:
        if not _present(tags, "SeriesDate"):
            raise InputError("DICOM tag SeriesDate is missing (needed with RadiopharmaceuticalStartTime, which has "
                             "no date); add SeriesDate or RadiopharmaceuticalStartDateTime")
        start = _combine(tags["SeriesDate"], tags["RadiopharmaceuticalStartTime"], "SeriesDate",
                         "RadiopharmaceuticalStartTime")
        record["injection_datetime_rule"] = "RadiopharmaceuticalStartTime (0018,1072) on SeriesDate"
    else:
        raise InputError("DICOM tags RadiopharmaceuticalStartDateTime and RadiopharmaceuticalStartTime are both "
                         "missing; the injection time is needed for the decay correction")
    record["injection_datetime"] = _iso(start)
    return start


def lean_body_mass_kg(weight_kg: float, height_m: float, sex: str) -> float:
    """Janmahasatian et al. 2005 (Clin Pharmacokinet 44:1051): 9270 W / (6680 + 216 BMI) men, (8780 + 244 BMI)
    women, W in kg, BMI in kg/m^2."""
    bmi = weight_kg / height_m**2
    if sex == "M":
        return 9270.0 * weight_kg / (6680.0 + 216.0 * bmi)
    return 9270.0 * weight_kg / (8780.0 + 244.0 * bmi)


def body_surface_area_m2(weight_kg: float, height_m: float) -> float:
    """Du Bois & Du Bois 1916: 0.007184 W^0.425 H^0.725, W in kg, H in cm."""
    return 0.007184 * weight_kg**0.425 * (100.0 * height_m) ** 0.725


def _body_size(tags: dict, method: str, record: dict) -> float:
    """Grams (bw, lbm) or cm^2 (bsa) that replace the patient weight in the SUV formula."""
    weight_kg = _number(tags, "PatientWeight", "patient weight in kg")
    record.update(patient_weight_kg=weight_kg)
    if method == "bw":
        return 1000.0 * weight_kg
    height_m = _number(tags, "PatientSize", "patient height in m")
    if height_m > 3.0:
        raise InputError(f"DICOM tag PatientSize = {height_m:g} is not a height in metres (DICOM stores metres, "
                         "e.g. 1.76); correct it")
    record.update(patient_height_m=height_m)
    if method == "lbm":
        sex = _text(tags.get("PatientSex")).upper()
        if sex not in ("M", "F"):
            raise InputError(f"DICOM tag PatientSex = {sex!r} is missing or not M/F; SUL (lean body mass, "
                             "Janmahasatian 2005) needs the sex: set it, or use --method bw")
        lbm = lean_body_mass_kg(weight_kg, height_m, sex)
        record.update(patient_sex=sex, lean_body_mass_kg=lbm,
                      body_size_formula="Janmahasatian 2005 lean body mass")
        return 1000.0 * lbm
    bsa = body_surface_area_m2(weight_kg, height_m)
    record.update(body_surface_area_m2=bsa, body_size_formula="Du Bois 1916 body surface area")
    return 1.0e4 * bsa


def _check_corrections(tags: dict, record: dict) -> str:
    if not _present(tags, "CorrectedImage"):
        raise InputError("DICOM tag CorrectedImage is missing; an SUV needs an attenuation- and decay-corrected "
                         "PET (CorrectedImage ATTN, DECY)")
    corrected = tags["CorrectedImage"]
    corrected = [_text(c).upper() for c in (corrected if isinstance(corrected, (list, tuple)) else
                                             _text(corrected).split("\\"))]
    if "ATTN" not in corrected:
        raise InputError(f"DICOM tag CorrectedImage = {corrected} lacks ATTN: the PET is not attenuation-corrected "
                         "and has no SUV; export the attenuation-corrected series")
    if not _present(tags, "DecayCorrection"):
        raise InputError("DICOM tag DecayCorrection is missing; it says whether the image is decay-corrected to "
                         "the scan start (START), the injection (ADMIN) or not at all (NONE)")
    decay = _text(tags["DecayCorrection"]).upper()
    if decay not in ("START", "ADMIN", "NONE"):
        raise InputError(f"DICOM tag DecayCorrection = {decay!r} is not START, ADMIN or NONE")
    if (decay == "NONE") == ("DECY" in corrected):
        raise InputError(f"DICOM tags contradict each other: DecayCorrection = {decay} but CorrectedImage = "
                         f"{corrected} {'contains' if decay == 'NONE' else 'lacks'} DECY; correct the wrong one")
    record.update(corrected_image=corrected, decay_correction=decay)
    return decay


def suv_factors(tags: dict, slices: list[dict], method: str = "bw") -> SuvFactors:
    """Per-slice SUV factors (see the module docstring for the rules) and the record of what went into them."""
    if method not in METHODS:
        raise InputError(f"unknown SUV method {method!r}; use one of {', '.join(METHODS)}")
    if not slices:
        raise InputError("no PET slices")
    record: dict[str, Any] = {"method": {"bw": "SUVbw", "lbm": "SUL (SUVlbm)", "bsa": "SUVbsa"}[method],
                              "units_out": "cm2/mL" if method == "bsa" else "g/mL"}
    if not _present(tags, "Units"):
        raise InputError("DICOM tag Units (0054,1001) is missing; the PET pixel unit (BQML, CNTS or GML) is needed")
    units = _text(tags["Units"]).upper()
    if units not in ("BQML", "CNTS", "GML"):
        raise InputError(f"DICOM tag Units = {units!r} is not BQML, CNTS or GML; this PET cannot be converted to SUV")
    record["units"] = units
    decay = _check_corrections(tags, record)
    n = len(slices)

    if units == "GML" or (units == "CNTS" and _present(tags, "PhilipsSUVScaleFactor")
                          and float(_text(tags["PhilipsSUVScaleFactor"])) != 0.0):
        if units == "GML":
            to_suvbw = 1.0
            record["units_rule"] = "GML: the image is SUVbw already"
        else:
            to_suvbw = _number(tags, "PhilipsSUVScaleFactor", "Philips (7053,1000) SUV scale factor")
            record["units_rule"] = "CNTS: Philips private (7053,1000) SUV scale factor gives SUVbw"
            record["philips_suv_scale_factor"] = to_suvbw
        factor = to_suvbw
        if method != "bw":  # SUVbw -> SUL/SUVbsa: replace the weight by the LBM (g) or BSA (cm^2)
            size = _body_size(tags, method, record)
            factor = to_suvbw * size / (1000.0 * record["patient_weight_kg"])
        record["suv_factor"] = factor
        return SuvFactors(np.full(n, factor), record)

    activity_scale = 1.0
    if units == "CNTS":
        if not _present(tags, "PhilipsActivityConcentrationScaleFactor") or \
                float(_text(tags["PhilipsActivityConcentrationScaleFactor"])) == 0.0:
            raise InputError("DICOM Units = CNTS but the Philips private tags (7053,1000) SUV scale factor and "
                             "(7053,1009) activity concentration scale factor are missing or zero; re-export the "
                             "PET in BQML")
        activity_scale = _number(tags, "PhilipsActivityConcentrationScaleFactor",
                                 "Philips (7053,1009) activity concentration scale factor")
        record["units_rule"] = "CNTS: Philips private (7053,1009) activity concentration scale factor gives Bq/mL"
        record["philips_activity_concentration_scale_factor"] = activity_scale
    else:
        record["units_rule"] = "BQML: Bq/mL"

    injected_bq = _number(tags, "RadionuclideTotalDose", "injected activity in Bq")
    record["injected_activity_bq"] = injected_bq
    if injected_bq < 1.0e4:
        raise InputError(f"DICOM tag RadionuclideTotalDose = {injected_bq:g} is not an activity in Bq (DICOM stores "
                         "Bq; a PET injection is ~1e8); correct it")
    half_life = _half_life(tags, record)
    start = _injection_datetime(tags, record)
    scan, acquisitions = _scan_datetime(tags, slices, record)
    record["scan_datetime"] = _iso(scan)
    decay_s = (scan - start).total_seconds()
    record["decay_time_s"] = decay_s
    if decay_s < 0:
        raise InputError(f"scan time {_iso(scan)} ({record['scan_datetime_rule']}) is before the injection "
                         f"{_iso(start)} ({record['injection_datetime_rule']}); if the injection was on another day "
                         "the series needs RadiopharmaceuticalStartDateTime; correct the times")
    size = _body_size(tags, method, record)

    if decay == "START":
        decay_factors = np.full(n, 2.0 ** (-decay_s / half_life))
        record["decay_rule"] = "START: injected activity decayed to the scan time"
    elif decay == "ADMIN":
        decay_factors = np.ones(n)
        record["decay_rule"] = "ADMIN: image decay-corrected to the injection; no decay of the injected activity"
    else:
        decay_factors = np.empty(n)
        for index, (acquired, s) in enumerate(zip(acquisitions, slices)):
            if acquired is None:
                raise InputError("DICOM tag AcquisitionTime is missing on a slice; with DecayCorrection NONE each "
                                 "slice's acquisition time is needed")
            t = (acquired - start).total_seconds()
            if t < 0:
                raise InputError(f"a slice's AcquisitionTime {_iso(acquired)} is before the injection {_iso(start)}")
            value = 2.0 ** (-t / half_life)
            if _present(s, "ActualFrameDuration"):  # mean of the decay over the frame: (1 - 2^-D/T) T / (D ln 2)
                duration_s = _number(s, "ActualFrameDuration", "frame duration in ms") / 1000.0
                value *= -math.expm1(-math.log(2) * duration_s / half_life) * half_life / (duration_s * math.log(2))
            decay_factors[index] = value
        record["decay_rule"] = ("NONE: image not decay-corrected; injected activity decayed to each slice's "
                                "AcquisitionTime, averaged over its ActualFrameDuration when given")
    record["decay_factor"] = float(decay_factors[0]) if np.ptp(decay_factors) == 0 else \
        [float(v) for v in decay_factors]
    factors = activity_scale * size / (injected_bq * decay_factors)
    if np.ptp(factors) == 0:
        record["suv_factor"] = float(factors[0])
    else:
        record["suv_factor"] = [float(v) for v in factors]
    if decay_s > 24 * 3600:
        record["warning"] = f"decay time {decay_s / 3600:.1f} h is unusually long; check the injection date"
    return SuvFactors(factors, record)
