"""Issue 12 rules of the SUV factor (psmadose.dicom.suv), from dicts of tag values, without files.

Every expected value is computed here by hand from the rule it tests (cited beside it), never by calling the
code under test: stored-SUV conversions (GE SUVType LBM/IBW, CM2ML), the QIBA frame-reference scan time, the
midnight rule and the plausibility limits with their unit recognition.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest
from psmadose.dicom.suv import PET_HALF_LIFE_S, implausible_suv_reason, nuclide_half_life_s, suv_factors
from psmadose.errors import InputError

sys.path.insert(0, str(Path(__file__).parent))
from dicom_writer import suv_tags  # noqa: E402

F18_S = 6586.2  # ICRP-107: 109.77 min
GA68_S = 4062.6  # ICRP-107: 67.71 min
DECAYED_2H = 300e6 * 2 ** (-7200 / F18_S)  # 300 MBq at 08:00, scan 10:00 (QIBA START)


base = suv_tags


def one(time: str = "100000") -> list[dict]:
    return [{"AcquisitionDate": "20240105", "AcquisitionTime": time}]


# ------------------------------------------------------------------------------- stored SUVs back to SUVbw

@pytest.mark.parametrize("sex, lbm_kg", [
    # James 1976 (GE's SUVlbm): 1.10 W - 128 (W/H)^2 men, 1.07 W - 148 (W/H)^2 women; W 80 kg, H 180 cm.
    ("M", 1.10 * 80 - 128 * (80 / 180) ** 2),  # 62.716 kg
    ("F", 1.07 * 80 - 148 * (80 / 180) ** 2),  # 56.365 kg
])
def test_gml_suvlbm_james_back_to_suvbw(sex, lbm_kg):
    # SUVlbm = C * LBM_g / D and SUVbw = C * W_g / D, so SUVbw = SUVlbm * W / LBM.
    result = suv_factors(base(Units="GML", SUVType="LBM", PatientSex=sex), one())
    assert result.factor == pytest.approx(80 / lbm_kg, rel=1e-12)
    assert "James" in result.record["units_rule"] and result.record["suv_type"] == "LBM"
    assert any("Janmahasatian" in w for w in result.record["warnings"])  # the formula is an assumption: said
    # ... and on to SUL (Janmahasatian): SUVbw * LBM_janma / W.
    bmi = 80 / 1.8**2
    janma = 9270 * 80 / ((6680 + 216 * bmi) if sex == "M" else (8780 + 244 * bmi))
    sul = suv_factors(base(Units="GML", SUVType="LBM", PatientSex=sex), one(), "lbm")
    assert sul.factor == pytest.approx(80 / lbm_kg * janma / 80, rel=1e-12)


def test_gml_suvibw_devine_back_to_suvbw():
    # Devine 1974: 50 kg (men) + 2.3 kg per inch above 60 in; 180 cm = 70.866 in -> 74.99 kg.
    ibw = 50 + 2.3 * (180 / 2.54 - 60)
    result = suv_factors(base(Units="GML", SUVType="IBW"), one())
    assert result.factor == pytest.approx(80 / ibw, rel=1e-12)
    assert any("IBW" in w for w in result.record["warnings"])  # vendor IBW formulas differ: said


def test_cm2ml_suvbsa_back_to_suvbw():
    # SUVbsa = C * BSA_cm2 / D (Du Bois: 0.007184 W^0.425 H_cm^0.725 m^2) -> SUVbw = SUVbsa * W_g / BSA_cm2.
    bsa_cm2 = 1e4 * 0.007184 * 80**0.425 * 180**0.725
    for suv_type in (None, "BSA"):
        result = suv_factors(base(Units="CM2ML", SUVType=suv_type), one())
        assert result.factor == pytest.approx(80000 / bsa_cm2, rel=1e-12)
    # SUVbsa wanted from a CM2ML image: back to SUVbw, then * BSA / W: the stored value itself (factor 1).
    assert suv_factors(base(Units="CM2ML"), one(), "bsa").factor == pytest.approx(1.0, rel=1e-12)


@pytest.mark.parametrize("changes, tag", [
    ({"Units": "GML", "SUVType": "BSA"}, "SUVType = BSA"),
    ({"Units": "CM2ML", "SUVType": "LBM"}, "SUVType = LBM"),
    ({"Units": "GML", "SUVType": "XYZ"}, "SUVType"),
    ({"Units": "GML", "SUVType": "LBM", "PatientSize": None}, "PatientSize"),
    ({"Units": "GML", "SUVType": "LBM", "PatientSex": "O"}, "PatientSex"),
    ({"Units": "GML", "SUVType": "IBW", "PatientWeight": 7.5}, "PatientWeight"),
])
def test_stored_suv_contradictions_are_named(changes, tag):
    with pytest.raises(InputError, match=tag):
        suv_factors(base(**changes), one())


# -------------------------------------------------------------------------- scan time from frame references

def _t_ave(duration_s: float, half_life: float) -> float:
    # DICOM PS3.3 C.8.9.4.1.5: average-count time of a frame of duration T: ln(lambda T / (1 - e^-lambda T)) / lambda
    lam = math.log(2) / half_life
    return math.log(lam * duration_s / (1 - math.exp(-lam * duration_s))) / lam


def test_series_time_after_acquisition_back_computed_from_frame_reference_time():
    # Two beds of 180 s starting 10:00:00 and 10:03:00, decay-corrected to 09:57:40 (the decay reference time):
    # FrameReferenceTime = reference -> average-count time of the frame = (start - 09:57:40 + t_ave) in ms.
    # SeriesTime 10:30 (re-created series) is later than the acquisition: QIBA back-computes the reference.
    t_ave = _t_ave(180, F18_S)
    beds = [{"AcquisitionDate": "20240105", "AcquisitionTime": start, "ActualFrameDuration": 180000,
             "FrameReferenceTime": (offset + t_ave) * 1000} for start, offset in (("100000", 140), ("100300", 320))]
    result = suv_factors(base(SeriesTime="103000"), beds)
    decay_s = 2 * 3600 - 140  # 08:00 -> 09:57:40
    assert result.record["decay_time_s"] == pytest.approx(decay_s, abs=1e-3)
    assert result.factor == pytest.approx(80000 / (300e6 * 2 ** (-decay_s / F18_S)), rel=1e-9)
    assert "FrameReferenceTime" in result.record["scan_datetime_rule"]
    # The earliest-acquisition rule would have been 2^(140/T) = 1.5 % off: the test tells the rules apart.
    assert abs(result.factor / (80000 / DECAYED_2H) - 1) > 0.01


def test_beds_decay_corrected_to_different_times_are_refused():
    t_ave = _t_ave(180, F18_S)
    beds = [{"AcquisitionDate": "20240105", "AcquisitionTime": start, "ActualFrameDuration": 180000,
             "FrameReferenceTime": (offset + t_ave) * 1000} for start, offset in (("100000", 140), ("100300", 140))]
    with pytest.raises(InputError, match="FrameReferenceTime"):
        suv_factors(base(SeriesTime="103000"), beds)


# --------------------------------------------------------------------------------------- unit recognition

def test_patient_weight_in_grams_is_converted_and_warned():
    result = suv_factors(base(PatientWeight=70000), one())
    # 70000 is 70 kg in grams: SUVbw factor = 70000 g / decayed dose.
    assert result.factor == pytest.approx(70000 / DECAYED_2H, rel=1e-12)
    assert result.record["patient_weight_kg"] == 70 and "grams" in result.record["patient_weight_rule"]
    assert any("PatientWeight" in w for w in result.record["warnings"])


@pytest.mark.parametrize("weight", [7.5, 15, 350, 1000, 400000])
def test_implausible_weight_is_refused(weight):
    with pytest.raises(InputError, match="PatientWeight"):
        suv_factors(base(PatientWeight=weight), one())


@pytest.mark.parametrize("dose, bq, unit", [
    (370000, 370e6, "kBq"),  # 370 MBq written in kBq
    (368.08, 368.08e6, "MBq"),  # NM-module habit: MBq
    (3.7e8, 3.7e8, None),
])
def test_injected_activity_unit_by_magnitude(dose, bq, unit):
    result = suv_factors(base(RadionuclideTotalDose=dose), one())
    # SUVbw factor = 80000 g / (activity in Bq decayed over 2 h of F-18)
    assert result.factor == pytest.approx(80000 / (bq * 2 ** (-7200 / F18_S)), rel=1e-12)
    if unit:
        assert unit in result.record["injected_activity_rule"]
        assert any("RadionuclideTotalDose" in w for w in result.record["warnings"])
    else:
        assert "warnings" not in result.record


@pytest.mark.parametrize("dose", [1e4, 20e6, 5e9, 20.0, 5000.0])
def test_implausible_activity_is_refused(dose):
    with pytest.raises(InputError, match="RadionuclideTotalDose"):
        suv_factors(base(RadionuclideTotalDose=dose), one())


def test_half_life_in_minutes_is_recognised():
    result = suv_factors(base(RadionuclideHalfLife=109.77), one())
    # 109.77 min = 6586.2 s (F-18): the decay uses 6586.2 s.
    assert result.record["half_life_s"] == pytest.approx(6586.2)
    assert result.factor == pytest.approx(80000 / DECAYED_2H, rel=1e-12)
    assert any("minutes" in w for w in result.record["warnings"])
    ga = suv_factors(base(RadionuclideHalfLife=67.71, RadionuclideTotalDose=150e6,
                          RadiopharmaceuticalStartDateTime="20240105090000"), one())
    assert ga.record["radionuclide"] == "Ga-68"
    assert ga.factor == pytest.approx(80000 / (150e6 * 2 ** (-3600 / (67.71 * 60))), rel=1e-12)


@pytest.mark.parametrize("changes", [
    {"RadionuclideHalfLife": 5000.0},  # no PET nuclide in s or min
    {"RadionuclideHalfLife": 109.77, "RadionuclideCodeValue": "C-131A3"},  # F-18 minutes but coded Ga-68
    {"RadionuclideHalfLife": 10.0},
])
def test_half_life_matching_no_nuclide_is_refused(changes):
    with pytest.raises(InputError, match="RadionuclideHalfLife"):
        suv_factors(base(**changes), one())


def test_height_in_cm_is_converted_for_sul():
    result = suv_factors(base(PatientSize=180), one(), "lbm")
    bmi = 80 / 1.8**2  # Janmahasatian men with the height read as 1.80 m
    assert result.factor == pytest.approx(1000 * 9270 * 80 / (6680 + 216 * bmi) / DECAYED_2H, rel=1e-12)
    assert any("PatientSize" in w for w in result.record["warnings"])


# ------------------------------------------------------------------------------------------ uptake time

def test_uptake_time_limits_depend_on_the_nuclide():
    # F-18: refused beyond log2(10) half-lives = 6.07 h (decay factor < 0.1): 7 h after 08:00 is 15:00.
    with pytest.raises(InputError, match="uptake time 7.0 h"):
        suv_factors(base(SeriesTime="150000"), one("150000"))
    # ADMIN does not use the uptake time: only a warning.
    admin = suv_factors(base(SeriesTime="150000", DecayCorrection="ADMIN"), one("150000"))
    assert admin.factor == pytest.approx(80000 / 300e6, rel=1e-12) and admin.record["warnings"]
    # Ga-68: limit 3.32 x 67.71 min = 3.75 h. 3.5 h accepted, 4 h refused.
    ga = dict(RadionuclideHalfLife=GA68_S, RadionuclideTotalDose=150e6)
    result = suv_factors(base(SeriesTime="113000", **ga), one("113000"))
    assert result.factor == pytest.approx(80000 / (150e6 * 2 ** (-3.5 * 3600 / GA68_S)), rel=1e-12)
    with pytest.raises(InputError, match="uptake time 4.0 h"):
        suv_factors(base(SeriesTime="120000", **ga), one("120000"))


def test_half_life_table_is_icrp107():
    for nuclide, seconds in PET_HALF_LIFE_S.items():
        assert seconds == pytest.approx(nuclide_half_life_s(nuclide), rel=1e-9), nuclide


# ----------------------------------------------------------------------------- implausible SUV: which tag

def test_implausible_suv_names_the_likely_tag():
    record = suv_factors(base(), one()).record
    assert implausible_suv_reason(record, 12.0) == ""
    low = implausible_suv_reason(record, 0.02)  # kBq/mL stored as BQML: SUV 1000x too low
    assert "Units (0054,1001) = BQML or RescaleSlope" in low and "kBq/mL" in low
    gml = implausible_suv_reason(suv_factors(base(Units="GML"), one()).record, 5.0e4)
    assert "Units (0054,1001) = GML" in gml
    small_dose = implausible_suv_reason(suv_factors(base(RadionuclideTotalDose=40e6), one()).record, 3000.0)
    assert "RadionuclideTotalDose" in small_dose
