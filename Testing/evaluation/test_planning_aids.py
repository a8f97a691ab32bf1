"""Issue 7, part 2: planning aids from predicted doses (hand-computed numbers)."""

from __future__ import annotations

import json

import pytest
from psmadose.dose_references import TUMOUR_DOSE_REFERENCES
from psmadose.planning import planning_html, planning_summary


def _row(segment, structure_type, volume_ml, gy_per_gbq, low80, high80, low90=None, high90=None):
    return {"segment": segment, "structure_type": structure_type, "volume_ml": volume_ml,
            "predicted_gy_per_gbq": gy_per_gbq, "interval_80_low_gy_per_gbq": low80,
            "interval_80_high_gy_per_gbq": high80, "interval_90_low_gy_per_gbq": low90 or low80 * 0.9,
            "interval_90_high_gy_per_gbq": high90 or high80 * 1.1}


ROWS = [
    _row("kidney_left", "kidney", 100.0, 0.5, 0.4, 0.625),
    _row("kidney_right", "kidney", 300.0, 0.7, 0.56, 0.875),
    _row("parotid_left", "parotid", 25.0, 0.8, 0.6, 1.0),
    _row("lesion_a", "tumour", 5.0, 3.0, 2.0, 3.9),
    _row("lesion_b", "tumour", 5.0, 4.5, 3.0, 6.0),
    _row("lesion_c", "tumour", 5.0, 2.0, 1.0, 5.0),
]


def test_kidney_cumulative_dose_and_activity_under_the_limit():
    kidneys = planning_summary(ROWS, activity_gbq=7.4, cycles=4)["kidneys"]
    # Volume-weighted mean: (100 * 0.5 + 300 * 0.7) / 400 = 0.65 Gy/GBq; upper 80 %: (62.5 + 262.5) / 400 = 0.8125
    assert kidneys["mean_gy_per_gbq"] == pytest.approx(0.65)
    assert kidneys["cumulative_gy"] == pytest.approx(0.65 * 7.4 * 4)  # 19.24 Gy
    assert kidneys["cumulative_80_low_gy"] == pytest.approx((40 + 168) / 400 * 29.6)
    assert kidneys["cumulative_80_high_gy"] == pytest.approx(0.8125 * 29.6)  # 24.05 Gy
    assert kidneys["limit_gy"] == 23.0
    assert kidneys["activity_per_cycle_under_limit_gbq"] == pytest.approx(23 / (0.65 * 4))  # 8.846 GBq
    assert kidneys["activity_per_cycle_under_limit_conservative_gbq"] == pytest.approx(23 / (0.8125 * 4))  # 7.077
    assert kidneys["planned_activity_exceeds_limit_activity"] is False
    assert "note" not in kidneys
    assert planning_summary(ROWS, activity_gbq=9.0, cycles=4)["kidneys"]["planned_activity_exceeds_limit_activity"]


def test_low_tumour_dose_flag_uses_volter_non_responder_mean():
    tumours = planning_summary(ROWS, activity_gbq=7.4, cycles=4)["tumours"]
    assert tumours["reference_gy_per_gbq"] == 4.0 == TUMOUR_DOSE_REFERENCES[0].value_gy_per_gbq
    assert "Volter" in tumours["source"]
    assert tumours["n_tumours"] == 3
    flagged = {t["segment"]: t["upper_80_below_reference"] for t in tumours["low_dose_tumours"]}
    assert flagged == {"lesion_a": True, "lesion_c": False}


def test_no_kidneys_and_single_kidney():
    assert planning_summary(ROWS[2:], 7.4, 4)["kidneys"] is None
    single = planning_summary(ROWS[:1], 7.4, 4)["kidneys"]
    assert single["mean_gy_per_gbq"] == pytest.approx(0.5) and "1 kidney" in single["note"]


def test_a_flagged_kidney_dose_is_never_planned_with():
    # Issue 11: a dose outside the model's domain gives no activity suggestion; the aid names segment and reason.
    rows = [dict(r) for r in ROWS]
    rows[0].update(in_domain=False, warnings="suv_tissue = 2 outside the training range 8-45")
    kidneys = planning_summary(rows, 7.4, 4)["kidneys"]
    assert kidneys["withheld"] and "activity_per_cycle_under_limit_gbq" not in kidneys
    assert "kidney_left is outside the model's domain (suv_tissue = 2" in kidneys["note"]
    html = planning_html(planning_summary(rows, 7.4, 4))
    assert "no kidney planning aid" in html and "GBq at the upper 80 %" not in html
    # A flagged tumour is not listed as low-dose; it is listed as not assessed.
    rows[3].update(in_domain=False, warnings="unusual combination of features")
    tumours = planning_summary(rows, 7.4, 4)["tumours"]
    assert "lesion_a" not in {t["segment"] for t in tumours["low_dose_tumours"]}
    assert tumours["withheld"] == [{"segment": "lesion_a", "reasons": "unusual combination of features"}]


def test_planning_html_says_decision_support():
    text = planning_html(planning_summary(ROWS, 7.4, 4))
    assert "decision support, not a prescription" in text
    assert "7.08 GBq" in text and "19.2 Gy" in text and "lesion_a" in text


def test_predict_writes_planning_and_explanations(demo_case, tmp_path):
    from psmadose.predict import run_predict

    out = tmp_path / "pred"
    result = run_predict(demo_case, out)
    document = json.loads((out / "doses.json").read_text())
    planning = document["planning"]
    kidneys = [p for p in result.predictions if p.structure_type == "kidney"]
    expected = sum(p.volume_ml * p.predicted_gy_per_gbq for p in kidneys) / sum(p.volume_ml for p in kidneys)
    assert planning["kidneys"]["mean_gy_per_gbq"] == pytest.approx(expected)
    assert planning["kidneys"]["cumulative_gy"] == pytest.approx(expected * result.activity_gbq * result.cycles)
    assert set(document["explanations"]["segments"]) == {p.segment for p in result.predictions}
    report = (out / "report.html").read_text()
    assert "Planning aids (decision support, not a prescription)" in report
    assert "What drove each prediction" in report
