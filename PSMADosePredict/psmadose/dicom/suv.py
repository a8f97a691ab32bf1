"""The SUV scale factor from DICOM tag values: the QIBA vendor-neutral SUV pseudo-code, without files.

Input is a dict of series-level tag values (DICOM keywords; DA/TM/DT as the strings found in the file) and one
dict per slice (AcquisitionDate/AcquisitionTime/AcquisitionDateTime, ActualFrameDuration, FrameReferenceTime).
The result is one factor per slice (SUV = (stored * RescaleSlope + RescaleIntercept) * factor) and a record of
every value that went into it and which rule picked it, for the JSON sidecar. Every rule is listed, with the
tags it reads and the test that covers it, in docs/SUV.md.

Rules (QIBA "Vendor-neutral pseudo-code for SUV calculation", QIBA FDG-PET/CT profile appendix G and the QIBA
wiki; DICOM PS3.3 C.8.9.1 / C.8.9.4):

- Units BQML: Bq/mL. CNTS (Philips): (7053,1000) SUV scale factor gives SUVbw directly; otherwise (7053,1009)
  activity concentration scale factor gives Bq/mL; both are also read when an export dropped the private creator
  (7053,0010). GML: SUV already, of the kind SUVType (0054,1006) says (BW; LBM and IBW are turned back into
  SUVbw); CM2ML: SUVbsa, turned back into SUVbw.
- CorrectedImage must contain ATTN; DECY must be present exactly when DecayCorrection is START or ADMIN.
- Scan time: SeriesDate/SeriesTime unless the earliest acquisition is earlier (the series was re-created after
  the scan); then the GE private scan datetime (0009,100d) when present; else the time back-computed from each
  slice's AcquisitionTime, FrameReferenceTime and ActualFrameDuration (QIBA: "reliable in all cases"); else the
  earliest AcquisitionDateTime.
- Injection time: RadiopharmaceuticalStartDateTime; else RadiopharmaceuticalStartTime on SeriesDate, or on the
  day before when that puts the injection after the scan (QIBA: "consider spanning midnight").
- DecayCorrection START: decay the injected dose to the scan time. ADMIN: images are corrected to the injection,
  no decay. NONE: the pixels are the activity during each slice's own acquisition, so the dose is decayed to
  each slice's acquisition start and averaged over its ActualFrameDuration (per-slice factors).
- Plausibility of every input of the factor (weight, height, injected activity, half-life, uptake time): a value
  in a recognisable wrong unit (weight in g, activity in kBq or MBq, half-life in minutes, height in cm) is
  converted, recorded and warned about; anything else outside the range is refused naming the tag.
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
# Half-lives (s, ICRP-107) of the nuclides of PSMA (and other oncology) PET tracers that RadionuclideHalfLife is
# matched against; a test checks them against radioactivedecay's ICRP-107 data (importing it takes ~3 s, so it is
# imported only when a half-life comes from the RadionuclideCodeSequence alone). Short-lived perfusion nuclides
# (O-15, N-13, Rb-82) are left out on purpose.
PET_HALF_LIFE_S = {"F-18": 6586.2, "Ga-68": 4062.6, "C-11": 1223.4, "Cu-64": 45720.0, "Sc-44": 14292.0,
                   "Zr-89": 282276.0, "I-124": 360806.4}
PET_NUCLIDES = tuple(PET_HALF_LIFE_S)
HALF_LIFE_AGREEMENT = 0.02  # RadionuclideHalfLife vs the nuclide: vendors round (Ga-68 4062.6 s vs 4080 s)

# Plausibility limits of the inputs of the SUV factor (docs/SUV.md says why).
WEIGHT_KG = (20.0, 300.0)  # adult PSMA PET patients
HEIGHT_M = (1.0, 2.5)
# Injected activity: 1-30 mCi. PSMA PET: 68Ga-PSMA-11 1.8-2.2 MBq/kg (~100-250 MBq), 18F-DCFPyL 333 MBq +- 20 %,
# 18F-PSMA-1007 ~4 MBq/kg (~250-400 MBq), FDG up to ~740 MBq. The Bq, kBq and MBq windows cannot overlap (30x
# wide, 1000x apart), so a value in kBq or MBq is recognised by its magnitude.
ACTIVITY_BQ = (37.0e6, 1.11e9)
MIN_DECAY_FACTOR = 0.1  # uptake longer than log2(10) = 3.3 half-lives (F-18 6.1 h, Ga-68 3.7 h) is refused
FRAME_TIME_AGREEMENT_S = 10.0  # back-computed reference times of the beds must agree within this


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


def _warn(record: dict, message: str) -> None:
    record.setdefault("warnings", []).append(message)


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
    """RadionuclideHalfLife in s, checked against the coded nuclide or, without a code, against PET nuclides;
    a value in minutes (109.77 for F-18) is recognised, converted and warned about."""
    source = "ICRP-107"
    code = _text(tags.get("RadionuclideCodeValue"))
    coded = RADIONUCLIDE_CODES.get(code)
    if not _present(tags, "RadionuclideHalfLife"):
        import radioactivedecay

        source = f"radioactivedecay {radioactivedecay.__version__} (ICRP-107 decay data)"
        if coded is None:
            known = ", ".join(f"{c} {n}" for c, n in RADIONUCLIDE_CODES.items())
            raise InputError("DICOM tag RadionuclideHalfLife is missing and RadionuclideCodeSequence "
                             f"{'code ' + repr(code) + ' is not a known nuclide' if code else 'is missing too'} "
                             f"(known: {known}); add RadionuclideHalfLife (seconds) to the series")
        half_life = nuclide_half_life_s(coded)
        record.update(half_life_s=half_life, radionuclide=coded,
                      half_life_source=f"RadionuclideCodeSequence code {code} = {coded}; half-life from {source}")
        return half_life
    value = _number(tags, "RadionuclideHalfLife", "half-life in s")
    candidates = [coded] if coded else list(PET_NUCLIDES)
    for nuclide in candidates:
        reference = PET_HALF_LIFE_S[nuclide]
        if abs(value - reference) <= HALF_LIFE_AGREEMENT * reference:
            record.update(half_life_s=value, radionuclide=nuclide,
                          half_life_source="RadionuclideHalfLife (0018,1075)",
                          half_life_check=f"agrees with {nuclide} ({reference:g} s, {source}) within "
                                          f"{100 * HALF_LIFE_AGREEMENT:g} %")
            return value
    for nuclide in candidates:
        reference = PET_HALF_LIFE_S[nuclide]
        if abs(60.0 * value - reference) <= HALF_LIFE_AGREEMENT * reference:
            record.update(half_life_s=60.0 * value, radionuclide=nuclide,
                          half_life_source=f"RadionuclideHalfLife (0018,1075) = {value:g} read as minutes",
                          half_life_rule=f"{value:g} is {nuclide}'s half-life in minutes ({reference / 60:g} min, "
                                         f"{source}); DICOM stores seconds: converted to {60 * value:g} s")
            _warn(record, f"RadionuclideHalfLife = {value:g} is in minutes, not seconds (DICOM); used "
                          f"{60 * value:g} s ({nuclide}); correct the tag at the scanner")
            return 60.0 * value
    if coded:
        raise InputError(f"DICOM tags contradict each other: RadionuclideHalfLife = {value:g} s but "
                         f"RadionuclideCodeSequence code {code} is {coded} (half-life "
                         f"{PET_HALF_LIFE_S[coded]:g} s); correct the wrong one")
    known = ", ".join(f"{n} {t:g} s" for n, t in PET_HALF_LIFE_S.items())
    raise InputError(f"DICOM tag RadionuclideHalfLife = {value:g} is the half-life of no PET nuclide in seconds "
                     f"or minutes (known: {known}); set the half-life in seconds")


def _frame_reference_scan(acquisitions: list, slices: list[dict], half_life: float) -> list[datetime] | None:
    """QIBA: back-compute the scan (decay reference) time of each slice from the start of its bed
    (AcquisitionDate/Time), FrameReferenceTime (ms from the reference time to the average-count-rate time of the
    frame) and ActualFrameDuration (ms): reference = acquisition start - FrameReferenceTime + t_ave, where
    t_ave = ln(lambda T / (1 - exp(-lambda T))) / lambda (DICOM PS3.3 C.8.9.4.1.5). None if a value is missing."""
    decay_constant = math.log(2.0) / half_life
    result = []
    for acquired, s in zip(acquisitions, slices):
        try:
            reference_ms = float(_text(s.get("FrameReferenceTime")))
            duration_ms = float(_text(s.get("ActualFrameDuration")))
        except ValueError:
            return None
        if acquired is None or not (reference_ms > 0 and duration_ms > 0):
            return None
        decay_during_frame = decay_constant * duration_ms / 1000.0
        average_s = math.log(decay_during_frame / -math.expm1(-decay_during_frame)) / decay_constant
        result.append(acquired - timedelta(seconds=reference_ms / 1000.0) + timedelta(seconds=average_s))
    return result or None


def _scan_datetime(tags: dict, slices: list[dict], record: dict,
                   half_life: float | None) -> tuple[datetime, list[datetime | None]]:
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
    why = ("SeriesDate/SeriesTime missing" if series is None else
           "the series time is later than the acquisition (series re-created after the scan)")
    if _present(tags, "GEPrivateScanDateTime"):
        scan = parse_datetime(tags["GEPrivateScanDateTime"], "GE private scan datetime (0009,100d)")
        record["scan_datetime_rule"] = f"GE private scan datetime (0009,100d): {why}"
        return scan, acquisitions
    references = _frame_reference_scan(acquisitions, slices, half_life) if half_life else None
    if references:
        spread = (max(references) - min(references)).total_seconds()
        if spread > FRAME_TIME_AGREEMENT_S:
            raise InputError(f"DICOM tag FrameReferenceTime (0054,1300) gives decay reference times "
                             f"{spread:.0f} s apart between slices (AcquisitionTime - FrameReferenceTime + "
                             "average-count time of ActualFrameDuration; QIBA); the beds are not decay-corrected "
                             "to one time or the tags are wrong: re-export the series with SeriesTime at the scan "
                             "start")
        scan = min(references) + (max(references) - min(references)) / 2
        record["scan_datetime_rule"] = (f"back-computed from AcquisitionTime, FrameReferenceTime and "
                                        f"ActualFrameDuration of every slice (QIBA): {why}; slices agree within "
                                        f"{spread:.2f} s")
        record["scan_minus_earliest_acquisition_s"] = (scan - earliest).total_seconds()
        return scan, acquisitions
    record["scan_datetime_rule"] = f"earliest AcquisitionDate/AcquisitionTime over all slices: {why}"
    return earliest, acquisitions


def _injection_datetime(tags: dict, record: dict) -> tuple[datetime, bool]:
    """The injection datetime and whether it came from a time without a date (RadiopharmaceuticalStartTime)."""
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
        time_only_given = False
    elif has_tm:
        if not _present(tags, "SeriesDate"):
            raise InputError("DICOM tag SeriesDate is missing (needed with RadiopharmaceuticalStartTime, which has "
                             "no date); add SeriesDate or RadiopharmaceuticalStartDateTime")
        start = _combine(tags["SeriesDate"], tags["RadiopharmaceuticalStartTime"], "SeriesDate",
                         "RadiopharmaceuticalStartTime")
        record["injection_datetime_rule"] = "RadiopharmaceuticalStartTime (0018,1072) on SeriesDate"
        time_only_given = True
    else:
        raise InputError("DICOM tags RadiopharmaceuticalStartDateTime and RadiopharmaceuticalStartTime are both "
                         "missing; the injection time is needed for the decay correction")
    return start, time_only_given


# ------------------------------------------------------------------------------------------- body size

def lean_body_mass_kg(weight_kg: float, height_m: float, sex: str) -> float:
    """Janmahasatian et al. 2005 (Clin Pharmacokinet 44:1051): 9270 W / (6680 + 216 BMI) men, (8780 + 244 BMI)
    women, W in kg, BMI in kg/m^2."""
    bmi = weight_kg / height_m**2
    if sex == "M":
        return 9270.0 * weight_kg / (6680.0 + 216.0 * bmi)
    return 9270.0 * weight_kg / (8780.0 + 244.0 * bmi)


def lean_body_mass_james_kg(weight_kg: float, height_m: float, sex: str) -> float:
    """James 1976 (as used by GE for SUVlbm, and by the QIBA/Slicer SUV factor calculator): 1.10 W - 128 (W/H)^2
    men, 1.07 W - 148 (W/H)^2 women, W in kg, H in cm."""
    ratio = weight_kg / (100.0 * height_m)
    if sex == "M":
        return 1.10 * weight_kg - 128.0 * ratio**2
    return 1.07 * weight_kg - 148.0 * ratio**2


def ideal_body_weight_kg(height_m: float, sex: str) -> float:
    """Devine 1974: 50 kg (men) or 45.5 kg (women) + 2.3 kg per inch above 5 ft."""
    inches = 100.0 * height_m / 2.54
    return (50.0 if sex == "M" else 45.5) + 2.3 * (inches - 60.0)


def body_surface_area_m2(weight_kg: float, height_m: float) -> float:
    """Du Bois & Du Bois 1916: 0.007184 W^0.425 H^0.725, W in kg, H in cm."""
    return 0.007184 * weight_kg**0.425 * (100.0 * height_m) ** 0.725


def _weight_kg(tags: dict, record: dict) -> float:
    """PatientWeight in kg, 20-300 kg; a value in grams (20000-300000) is converted with a warning."""
    if "patient_weight_kg" in record:
        return record["patient_weight_kg"]
    value = _number(tags, "PatientWeight", "patient weight in kg")
    low, high = WEIGHT_KG
    if low <= value <= high:
        weight = value
    elif 1000 * low <= value <= 1000 * high:
        weight = value / 1000.0
        record["patient_weight_rule"] = f"PatientWeight = {value:g} read as grams (> {high:g}): {weight:g} kg"
        _warn(record, f"PatientWeight = {value:g} is in grams, not kg (DICOM); used {weight:g} kg; correct the tag")
    else:
        raise InputError(f"DICOM tag PatientWeight = {value:g} is not a plausible weight in kg (DICOM stores kg; "
                         f"accepted {low:g}-{high:g} kg, or {1000 * low:g}-{1000 * high:g} read as grams); set the "
                         "patient's real weight in kg")
    record["patient_weight_kg"] = weight
    return weight


def _height_m(tags: dict, record: dict, why: str) -> float:
    """PatientSize in m, 1.0-2.5 m; a value in centimetres (100-250) is converted with a warning."""
    if "patient_height_m" in record:
        return record["patient_height_m"]
    value = _number(tags, "PatientSize", f"patient height in m, needed for {why}")
    low, high = HEIGHT_M
    if low <= value <= high:
        height = value
    elif 100 * low <= value <= 100 * high:
        height = value / 100.0
        record["patient_height_rule"] = f"PatientSize = {value:g} read as centimetres: {height:g} m"
        _warn(record, f"PatientSize = {value:g} is in cm, not metres (DICOM); used {height:g} m; correct the tag")
    else:
        raise InputError(f"DICOM tag PatientSize = {value:g} is not a plausible height in metres (DICOM stores "
                         f"metres, e.g. 1.76; accepted {low:g}-{high:g} m or {100 * low:g}-{100 * high:g} read as "
                         f"cm); it is needed for {why}: set the real height")
    record["patient_height_m"] = height
    return height


def _sex(tags: dict, record: dict, why: str) -> str:
    sex = _text(tags.get("PatientSex")).upper()
    if sex not in ("M", "F"):
        raise InputError(f"DICOM tag PatientSex = {sex!r} is missing or not M/F; {why} needs the sex: set it"
                         + (", or use --method bw" if why.startswith("SUL") else ""))
    record["patient_sex"] = sex
    return sex


def _body_size(tags: dict, method: str, record: dict) -> float:
    """Grams (bw, lbm) or cm^2 (bsa) that replace the patient weight in the SUV formula."""
    weight_kg = _weight_kg(tags, record)
    if method == "bw":
        return 1000.0 * weight_kg
    if method == "lbm":
        why = "SUL (lean body mass, Janmahasatian 2005)"
        height_m = _height_m(tags, record, why)
        lbm = lean_body_mass_kg(weight_kg, height_m, _sex(tags, record, why))
        record.update(lean_body_mass_kg=lbm, body_size_formula="Janmahasatian 2005 lean body mass")
        return 1000.0 * lbm
    height_m = _height_m(tags, record, "SUVbsa (Du Bois body surface area)")
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




def _injected_activity_bq(tags: dict, record: dict) -> float:
    """RadionuclideTotalDose in Bq (PET; the NM module stores MBq): 37 MBq-1.11 GBq; a value in kBq or MBq is
    recognised by its magnitude, converted and warned about; anything else is refused."""
    value = _number(tags, "RadionuclideTotalDose", "injected activity in Bq")
    low, high = ACTIVITY_BQ
    for scale, unit in ((1.0, "Bq"), (1.0e3, "kBq"), (1.0e6, "MBq")):
        if low <= value * scale <= high:
            activity = value * scale
            if unit != "Bq":
                record["injected_activity_rule"] = (f"RadionuclideTotalDose = {value:g} read as {unit} (only {unit} "
                                                    f"puts it in {low / 1e6:g} MBq-{high / 1e9:g} GBq)")
                _warn(record, f"RadionuclideTotalDose = {value:g} is in {unit}, not Bq (DICOM PET); used "
                              f"{activity / 1e6:g} MBq; correct the tag")
            record["injected_activity_bq"] = activity
            return activity
    raise InputError(f"DICOM tag RadionuclideTotalDose = {value:g} is not a plausible injected activity (DICOM "
                     f"PET stores Bq; accepted {low / 1e6:g} MBq-{high / 1e9:g} GBq, given in Bq, kBq or MBq); set "
                     "the injected activity in Bq")


def _from_stored_suv(tags: dict, units: str, record: dict) -> float:
    """Factor that turns a stored SUV (Units GML, or CM2ML) back into SUVbw, from SUVType (0054,1006)."""
    suv_type = _text(tags.get("SUVType")).upper()
    record["suv_type"] = suv_type or None
    if units == "CM2ML":
        if suv_type not in ("", "BSA"):
            raise InputError(f"DICOM tags contradict each other: Units = CM2ML (SUVbsa) but SUVType = {suv_type}; "
                             "correct the wrong one")
        weight = _weight_kg(tags, record)
        bsa = body_surface_area_m2(weight, _height_m(tags, record, "turning the stored SUVbsa into SUVbw"))
        record.update(body_surface_area_m2=bsa,
                      units_rule="CM2ML: the image is SUVbsa (cm2/mL, Du Bois 1916 body surface area); SUVbw = "
                                 "SUVbsa * weight_g / BSA_cm2")
        return 1000.0 * weight / (1.0e4 * bsa)
    if suv_type in ("", "BW"):
        record["units_rule"] = "GML: the image is SUVbw already" + ("" if suv_type else " (SUVType absent)")
        return 1.0
    if suv_type == "BSA":
        raise InputError("DICOM tags contradict each other: Units = GML but SUVType = BSA (SUVbsa is in CM2ML); "
                         "correct the wrong one")
    if suv_type not in ("LBM", "IBW"):
        raise InputError(f"DICOM tag SUVType (0054,1006) = {suv_type!r} is not BW, LBM, BSA or IBW; this stored SUV "
                         "cannot be turned into SUVbw")
    weight = _weight_kg(tags, record)
    what = "turning the stored SUVlbm into SUVbw" if suv_type == "LBM" else "turning the stored SUVibw into SUVbw"
    height = _height_m(tags, record, what)
    sex = _sex(tags, record, what)
    if suv_type == "LBM":
        size = lean_body_mass_james_kg(weight, height, sex)
        formula = "James 1976 lean body mass (1.10 W - 128 (W/H)^2 men, 1.07 W - 148 (W/H)^2 women; GE)"
        record.update(stored_lean_body_mass_kg=size)
        # James is what GE (and most workstations) used; Tahari et al. (J Nucl Med 2014;55:1481) recommend
        # Janmahasatian for newer ones. Which one made the stored SUVlbm is not in the header: say how much it matters.
        other = lean_body_mass_kg(weight, height, sex)
        manufacturer = _text(tags.get("Manufacturer")) or "an unknown manufacturer"
        _warn(record, f"Units GML with SUVType LBM from {manufacturer}: turned into SUVbw with the James lean body "
                      f"mass ({size:.1f} kg, as GE uses); had the scanner used Janmahasatian ({other:.1f} kg) the SUVs "
                      f"would be {100 * (other / size - 1):+.0f} %: check one value against the scanner's SUVbw")
    else:
        size = ideal_body_weight_kg(height, sex)
        formula = "Devine 1974 ideal body weight (50 kg men, 45.5 kg women, + 2.3 kg per inch above 5 ft)"
        record.update(stored_ideal_body_weight_kg=size)
        _warn(record, "Units GML with SUVType IBW: turned into SUVbw with the Devine ideal body weight; vendors' IBW "
                      "formulas differ: check one value against the scanner's SUVbw")
    if not 0.0 < size <= (weight if suv_type == "LBM" else math.inf):  # a lean mass above the weight is no mass
        raise InputError(f"DICOM tags PatientWeight {weight:g} kg, PatientSize {height:g} m and PatientSex {sex} "
                         f"give {size:.1f} kg by the {formula.split('(')[0].strip()}: the stored "
                         f"SUV{suv_type.lower()} cannot be turned back into SUVbw; check the tags")
    record["units_rule"] = (f"GML with SUVType {suv_type}: the image is SUV{suv_type.lower()} by the {formula}; "
                            f"SUVbw = SUV{suv_type.lower()} * weight / {suv_type}")
    return weight / size


def _philips_factor(tags: dict, key: str, tag: str, record: dict) -> float | None:
    if not _present(tags, key):
        return None
    try:
        value = float(_text(tags[key]))
    except ValueError:
        raise InputError(f"Philips private tag {tag} = {tags[key]!r} is not a number; re-export the PET in BQML") \
            from None
    if value == 0.0:
        return None
    if not (math.isfinite(value) and value > 0):
        raise InputError(f"Philips private tag {tag} = {value!r} is not a positive number; re-export the PET in BQML")
    return value


def _philips_creator(tags: dict, record: dict) -> None:
    """(7053,1000)/(7053,1009) without the private creator (7053,0010): accepted only from a Philips scanner."""
    if _text(tags.get("PhilipsPrivateCreator")) != "missing":
        return
    manufacturer = _text(tags.get("Manufacturer"))
    if manufacturer and "PHILIPS" not in manufacturer.upper():
        raise InputError(f"DICOM Units = CNTS and private tags (7053,1000)/(7053,1009) without their private creator "
                         f"(7053,0010), from Manufacturer {manufacturer!r}, not Philips: their meaning is unknown; "
                         "re-export the PET in BQML")
    record["philips_private_creator"] = ("missing: (7053,1000)/(7053,1009) read at their standard Philips position "
                                         "(creator 'Philips PET Private Group' at (7053,0010) assumed)")
    _warn(record, "Philips private creator (7053,0010) is missing; read (7053,1000)/(7053,1009) at their Philips "
                  "positions" + ("" if manufacturer else " (Manufacturer missing too)"))


def _uptake_limit_s(half_life: float) -> float:
    return half_life * math.log2(1.0 / MIN_DECAY_FACTOR)


def suv_factors(tags: dict, slices: list[dict], method: str = "bw") -> SuvFactors:
    """Per-slice SUV factors (see the module docstring for the rules) and the record of what went into them."""
    if method not in METHODS:
        raise InputError(f"unknown SUV method {method!r}; use one of {', '.join(METHODS)}")
    if not slices:
        raise InputError("no PET slices")
    record: dict[str, Any] = {"method": {"bw": "SUVbw", "lbm": "SUL (SUVlbm)", "bsa": "SUVbsa"}[method],
                              "units_out": "cm2/mL" if method == "bsa" else "g/mL"}
    if not _present(tags, "Units"):
        raise InputError("DICOM tag Units (0054,1001) is missing; the PET pixel unit (BQML, CNTS, GML or CM2ML) is "
                         "needed")
    units = _text(tags["Units"]).upper()
    if units not in ("BQML", "CNTS", "GML", "CM2ML"):
        raise InputError(f"DICOM tag Units = {units!r} is not BQML, CNTS, GML or CM2ML; this PET cannot be "
                         "converted to SUV")
    record["units"] = units
    decay = _check_corrections(tags, record)
    n = len(slices)

    if units == "CNTS":
        _philips_creator(tags, record)
    philips_suv = _philips_factor(tags, "PhilipsSUVScaleFactor", "(7053,1000)", record) if units == "CNTS" else None
    if units in ("GML", "CM2ML") or philips_suv is not None:
        if philips_suv is None:
            to_suvbw = _from_stored_suv(tags, units, record)
        else:
            to_suvbw = philips_suv
            record["units_rule"] = "CNTS: Philips private (7053,1000) SUV scale factor gives SUVbw"
            record["philips_suv_scale_factor"] = to_suvbw
        factor = to_suvbw
        if method != "bw":  # SUVbw -> SUL/SUVbsa: replace the weight by the LBM (g) or BSA (cm^2)
            size = _body_size(tags, method, record)
            factor = to_suvbw * size / (1000.0 * record["patient_weight_kg"])
        record["to_suvbw_factor"] = to_suvbw
        record["suv_factor"] = factor
        return SuvFactors(np.full(n, factor), record)

    activity_scale = 1.0
    if units == "CNTS":
        activity_scale = _philips_factor(tags, "PhilipsActivityConcentrationScaleFactor", "(7053,1009)", record)
        if activity_scale is None:
            raise InputError("DICOM Units = CNTS but the Philips private tags (7053,1000) SUV scale factor and "
                             "(7053,1009) activity concentration scale factor are missing or zero; re-export the "
                             "PET in BQML")
        record["units_rule"] = "CNTS: Philips private (7053,1009) activity concentration scale factor gives Bq/mL"
        record["philips_activity_concentration_scale_factor"] = activity_scale
    else:
        record["units_rule"] = "BQML: Bq/mL"

    injected_bq = _injected_activity_bq(tags, record)
    half_life = _half_life(tags, record)
    start, time_only = _injection_datetime(tags, record)
    scan, acquisitions = _scan_datetime(tags, slices, record, half_life)
    record["scan_datetime"] = _iso(scan)
    decay_s = (scan - start).total_seconds()
    limit_s = _uptake_limit_s(half_life)
    if decay_s < 0 and time_only and 0 <= decay_s + 86400.0 <= limit_s:
        start -= timedelta(days=1)
        decay_s += 86400.0
        record["injection_datetime_rule"] = ("RadiopharmaceuticalStartTime (0018,1072) on the day before SeriesDate: "
                                             "on SeriesDate it would be after the scan, so the injection was before "
                                             "midnight (QIBA: consider spanning midnight)")
        _warn(record, "RadiopharmaceuticalStartTime has no date and is later in the day than the scan: taken as the "
                      f"day before ({decay_s / 60:.0f} min uptake); add RadiopharmaceuticalStartDateTime to be sure")
    record["injection_datetime"] = _iso(start)
    record["decay_time_s"] = decay_s
    record["uptake_time_min"] = decay_s / 60.0
    if decay_s < 0:
        raise InputError(f"scan time {_iso(scan)} ({record['scan_datetime_rule']}) is before the injection "
                         f"{_iso(start)} ({record['injection_datetime_rule']}); if the injection was on another day "
                         "the series needs RadiopharmaceuticalStartDateTime; correct the times")
    if decay_s > limit_s:
        message = (f"uptake time {decay_s / 3600:.1f} h (injection {_iso(start)} by {record['injection_datetime_rule']}"
                   f", scan {_iso(scan)}) is longer than {limit_s / 3600:.1f} h, i.e. {math.log2(10):.1f} half-lives "
                   f"of {record.get('radionuclide', 'the nuclide')}")
        if decay != "ADMIN":
            raise InputError(f"{message}: less than 10 % of the activity would be left, so the injection or scan "
                             "date/time (RadiopharmaceuticalStartDateTime/StartTime, SeriesDate/SeriesTime) is most "
                             "likely wrong; correct it")
        _warn(record, f"{message}; the image is decay-corrected to the injection (ADMIN) so the SUV does not use it, "
                      "but check the injection date")
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
    return SuvFactors(factors, record)


# ---------------------------------------------------------------------------------- plausibility of the result

SUV_MAX_RANGE = (0.5, 1000.0)  # the maximum SUVbw of a whole-body PSMA PET (kidneys, bladder, lesions) lies within


def implausible_suv_reason(record: dict, max_suv: float) -> str:
    """'' when the maximum SUVbw is plausible; else a sentence naming the DICOM tag most likely wrong."""
    low, high = SUV_MAX_RANGE
    if low <= max_suv <= high:
        return ""
    units = record.get("units", "")
    too_high = max_suv > high
    used = []
    if "patient_weight_kg" in record:
        used.append(f"PatientWeight {record['patient_weight_kg']:g} kg")
    if "injected_activity_bq" in record:
        used.append(f"RadionuclideTotalDose {record['injected_activity_bq'] / 1e6:.4g} MBq")
    if "uptake_time_min" in record:
        used.append(f"uptake {record['uptake_time_min']:.0f} min")
    if units in ("GML", "CM2ML"):
        suspect = (f"Units (0054,1001) = {units}: the pixels are probably not an SUV "
                   f"({'activity concentration in Bq/mL?' if too_high else 'check RescaleSlope (0028,1053)'})")
    elif "philips_suv_scale_factor" in record:
        suspect = "the Philips SUV scale factor (7053,1000) or RescaleSlope (0028,1053)"
    elif too_high and isinstance(record.get("decay_factor"), float) and record["decay_factor"] < 0.3:
        suspect = ("the injection date/time (RadiopharmaceuticalStartDateTime/StartTime) or SeriesDate/SeriesTime: "
                   f"the decay correction divides by {record['decay_factor']:.2g}")
    elif too_high and record.get("injected_activity_bq", 1e9) < 100e6:
        suspect = "RadionuclideTotalDose (0018,1074): the injected activity looks too small"
    elif not too_high and record.get("injected_activity_bq", 0) > 700e6:
        suspect = "RadionuclideTotalDose (0018,1074): the injected activity looks too large"
    else:
        suspect = (f"Units (0054,1001) = {units} or RescaleSlope (0028,1053): the pixel values are "
                   f"{'larger' if too_high else 'smaller'} than an activity concentration in Bq/mL would be"
                   + ("" if too_high else " (kBq/mL or MBq/mL stored as BQML?)"))
    return (f"maximum SUVbw {max_suv:.4g} is not plausible (expected {low:g}-{high:g}); SUV factor from "
            f"{', '.join(used) or units}; the most likely wrong DICOM tag is {suspect}; correct it")
