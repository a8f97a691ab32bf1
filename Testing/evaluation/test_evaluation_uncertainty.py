"""Issue 7, part 1: patient-level bootstrap intervals, Bland-Altman agreement, and the evaluate command."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from psmadose.metrics import bland_altman, bootstrap_dose_metrics, dose_metrics


def _cohort(n_patients: int, seed: int = 3, lesions: int = 4):
    rng = np.random.default_rng(seed)
    patients = np.repeat(np.arange(n_patients), lesions)
    patient_effect = rng.normal(0, 0.2, n_patients)[patients]
    reference = np.exp(rng.normal(1.0, 0.6, len(patients)))
    predicted = reference * np.exp(patient_effect + rng.normal(0, 0.2, len(patients)))
    return reference, predicted, patients


def test_bootstrap_interval_contains_point_estimate():
    reference, predicted, patients = _cohort(20)
    point = dose_metrics(reference, predicted)
    ci = bootstrap_dose_metrics(reference, predicted, patients, n_resamples=1000, seed=1)
    for key in ("mape", "mae_gy_per_gbq", "r2", "spearman"):
        low, high = ci[f"{key}_ci95"]
        assert low < point[key] < high, key


def test_bootstrap_interval_narrows_with_more_patients():
    widths = []
    for n_patients in (8, 80):
        reference, predicted, patients = _cohort(n_patients)
        low, high = bootstrap_dose_metrics(reference, predicted, patients, seed=1)["mape_ci95"]
        widths.append(high - low)
    # Cluster bootstrap width scales like 1/sqrt(patients): ten times the patients, about a third the width.
    assert widths[1] < 0.6 * widths[0]


def test_bootstrap_resamples_patients_not_segments():
    # Two patients, each with identical errors on all lesions: a patient bootstrap can only ever draw
    # MAPE values 0.1, 0.2 (mixtures) or 0.3; a segment bootstrap would give a near-continuous spread.
    reference = np.ones(20)
    predicted = np.r_[np.full(10, 1.1), np.full(10, 1.3)]
    patients = np.repeat(["a", "b"], 10)
    low, high = bootstrap_dose_metrics(reference, predicted, patients, seed=0)["mape_ci95"]
    assert low == pytest.approx(0.1) and high == pytest.approx(0.3)


def test_bootstrap_is_deterministic_and_undefined_with_one_patient():
    reference, predicted, patients = _cohort(10)
    first = bootstrap_dose_metrics(reference, predicted, patients, seed=7)
    assert first == bootstrap_dose_metrics(reference, predicted, patients, seed=7)
    single = bootstrap_dose_metrics(reference[:4], predicted[:4], patients[:4])
    assert all(math.isnan(v) for pair in single.values() for v in pair)


def test_bland_altman_matches_hand_computation():
    reference = np.array([1.0, 2.0, 4.0, 0.5])
    predicted = np.array([1.1, 1.8, 5.0, 0.5])
    ba = bland_altman(reference, predicted)
    # Gy/GBq differences 0.1, -0.2, 1.0, 0.0: mean 0.225; sample SD sqrt(0.8275/3) = 0.52520
    diffs = [0.1, -0.2, 1.0, 0.0]
    sd = math.sqrt(sum((d - 0.225) ** 2 for d in diffs) / 3)
    assert ba["gy_per_gbq"]["bias"] == pytest.approx(0.225)
    assert ba["gy_per_gbq"]["sd"] == pytest.approx(sd)
    assert ba["gy_per_gbq"]["loa_low"] == pytest.approx(0.225 - 1.96 * sd)
    assert ba["gy_per_gbq"]["loa_high"] == pytest.approx(0.225 + 1.96 * sd)
    # log ratios ln(1.1), ln(0.9), ln(1.25), 0
    logs = [math.log(1.1), math.log(0.9), math.log(1.25), 0.0]
    bias = sum(logs) / 4
    sd_log = math.sqrt(sum((x - bias) ** 2 for x in logs) / 3)
    assert ba["log_ratio"]["bias"] == pytest.approx(bias)
    assert ba["log_ratio"]["loa_high"] == pytest.approx(bias + 1.96 * sd_log)
    assert ba["log_ratio"]["ratio_bias"] == pytest.approx(math.exp(bias))
    assert ba["log_ratio"]["ratio_loa_low"] == pytest.approx(math.exp(bias - 1.96 * sd_log))


@pytest.fixture(scope="module")
def validation_cohort(tmp_path_factory):
    from psmadose.simulate.cohort import simulate_cohort

    out = tmp_path_factory.mktemp("validation") / "cohort"
    simulate_cohort(out, "validation", n_patients=6, workers=2)
    return out


def test_evaluate_cli_writes_confidence_intervals_and_bland_altman(validation_cohort, tmp_path, cli):
    from psmadose.modelfile import bundled_model_dir

    out = tmp_path / "report"
    run = cli("evaluate", validation_cohort, "--model", bundled_model_dir(), "--out", out)
    assert run.returncode == 0, run.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    for group in ("tumour", "kidney", "salivary"):
        m = metrics[group]
        for key in ("n", "mape", "mae_gy_per_gbq", "r2", "baseline_mape", "coverage_80", "coverage_90",
                    "spearman"):
            assert key in m
        for key in ("mape", "mae_gy_per_gbq", "r2", "spearman"):
            low, high = m[f"{key}_ci95"]
            assert low <= m[key] <= high, (group, key)
        assert m["n_patients"] == 6
        ba = m["bland_altman"]
        assert ba["log_ratio"]["loa_low"] < ba["log_ratio"]["bias"] < ba["log_ratio"]["loa_high"]
    assert (out / "bland_altman.png").stat().st_size > 1000
    report = (out / "report.html").read_text()
    assert "Measured on cohort" in report and "6 patients" in report
    assert "bland_altman.png" in report and "predicted_vs_reference.png" in report
    assert "bootstrap" in report and "population-mean MAPE" in report
