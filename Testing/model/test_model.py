"""Dose models on synthetic tables with a known answer."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from psmadose.model import (
    DoseModel,
    MixedEffectsRegressor,
    group_features,
    select_group,
)
from psmadose.physics import unit_dose_gy_per_gbq
from psmadose.training import out_of_fold, train_models

TRUE_LOG_RATIO = math.log(0.4)  # therapy-to-PET uptake ratio of the synthetic cohort
EGFR_EXPONENT = -0.8  # a known correction: dose x (eGFR / 75) ** -0.8


def synthetic_table(n_patients=60, per_patient=6, seed=0, structure_type="tumour", noise=0.1, patient_sd=0.0):
    """Dose = R x physics unit dose(suv_tissue, weight) x (eGFR/75) ** -0.8 with log-normal noise and an optional
    patient effect; other features are noise around 1."""
    rng = np.random.default_rng(seed)
    rows = []
    for p in range(n_patients):
        effect = rng.normal(0, patient_sd)
        weight = float(np.exp(rng.normal(math.log(80), 0.15)))
        egfr = float(np.exp(rng.normal(math.log(75), 0.3)))
        for s in range(per_patient):
            row = {name: float(rng.normal(1.0, 0.1)) for name in group_features("tumour")}
            row.update({"case_id": f"p{p:03d}", "segment": f"lesion_{s}", "structure_type": structure_type,
                        "suv_tissue": float(np.exp(rng.normal(2.3, 0.5))), "weight_kg": weight,
                        "egfr_ml_min_1_73m2": egfr, "volume_ml": float(np.exp(rng.normal(1, 1)))})
            for tracer in ("18F-DCFPyL", "18F-PSMA-1007", "68Ga-PSMA-11"):
                row[f"tracer_{tracer}"] = float(tracer == "18F-DCFPyL")
            unit = float(unit_dose_gy_per_gbq(row["suv_tissue"], weight, [structure_type])[0])
            row["reference_gy_per_gbq"] = float(math.exp(TRUE_LOG_RATIO) * unit * (egfr / 75) ** EGFR_EXPONENT
                                                * math.exp(rng.normal(0, noise) + effect))
            rows.append(row)
    return pd.DataFrame(rows)


def _mape(model, table) -> float:
    return float(np.mean(np.abs(model.predict(table) - table["reference_gy_per_gbq"]) / table["reference_gy_per_gbq"]))


def test_physics_baseline_calibrates_the_uptake_ratio():
    # Without noise in the correction (eGFR fixed), the calibrated ln R is the true one (mean of log residuals).
    table = synthetic_table(noise=0.05)
    table["egfr_ml_min_1_73m2"] = 75.0
    table["reference_gy_per_gbq"] = math.exp(TRUE_LOG_RATIO) * unit_dose_gy_per_gbq(
        table["suv_tissue"], table["weight_kg"], table["structure_type"])
    model = DoseModel("tumour", "physics").fit(table, table["reference_gy_per_gbq"])
    assert model.estimator_.overall_log_ratio_ == pytest.approx(TRUE_LOG_RATIO, abs=1e-9)
    assert np.allclose(model.predict(table), table["reference_gy_per_gbq"])


@pytest.mark.parametrize("candidate", ["physics_ridge", "physics_trees"])
def test_learned_correction_recovers_renal_function_and_keeps_elasticity_one(candidate):
    # The eGFR power law is the only thing to learn beyond physics; MAPE ~8% is E|exp(N(0, 0.1)) - 1|.
    table = synthetic_table()
    model = DoseModel("tumour", candidate).fit(table, table["reference_gy_per_gbq"])
    physics = DoseModel("tumour", "physics").fit(table, table["reference_gy_per_gbq"])
    test = synthetic_table(seed=1)
    assert _mape(model, test) < 0.12 and _mape(physics, test) > 0.16
    # Elasticity to the structure's own uptake is exactly 1 by construction: uptake enters only via physics.
    scaled = test.assign(suv_tissue=test["suv_tissue"] * 1.3)
    assert np.allclose(np.log(model.predict(scaled) / model.predict(test)) / math.log(1.3), 1.0)


def test_correction_is_bounded_whatever_the_inputs():
    # An absurd eGFR (a unit mistake) cannot move the dose beyond the corrections seen in training.
    table = synthetic_table()
    model = DoseModel("tumour", "physics_ridge").fit(table, table["reference_gy_per_gbq"])
    test = synthetic_table(2, 2, seed=3)
    extreme = test.assign(egfr_ml_min_1_73m2=1e-3)
    correction = np.log(model.predict(extreme)) - np.log(model.physics_gy_per_gbq(extreme))
    low, high = model.estimator_.bounds_
    assert np.all(correction >= low - 1e-12) and np.all(correction <= high + 1e-12)


def test_population_mean_predicts_the_training_mean_per_type():
    table = pd.concat([synthetic_table(10, 3, structure_type="parotid"),
                       synthetic_table(10, 3, seed=3, structure_type="submandibular")], ignore_index=True)
    table.loc[table["structure_type"] == "submandibular", "reference_gy_per_gbq"] *= 3
    model = DoseModel("salivary", "population_mean").fit(table, table["reference_gy_per_gbq"])
    predicted = model.predict(table)
    for kind in ("parotid", "submandibular"):
        expected = table.loc[table["structure_type"] == kind, "reference_gy_per_gbq"].mean()
        assert np.allclose(predicted[table["structure_type"] == kind], expected)


def test_mixed_effects_estimates_the_patient_variance():
    # Random intercept SD 0.4 and residual SD 0.1 by construction; a constant fixed effect (least squares on a
    # zero column: the intercept) isolates them. EM runs to its default tolerance. (Not PopulationMeanRegressor:
    # its fit is ln mean exp, not the mean, of the target, so EM keeps moving that offset into the intercepts.)
    rng = np.random.default_rng(5)
    groups = np.repeat(np.arange(200), 8)
    y = rng.normal(0, 0.4, 200)[groups] + rng.normal(0, 0.1, len(groups))
    X = np.zeros((len(y), 1))
    model = MixedEffectsRegressor().fit(X, y, groups=groups)
    assert model.n_iter_ < 20
    assert math.sqrt(model.sigma_b2_) == pytest.approx(0.4, rel=0.15)
    assert math.sqrt(model.sigma_e2_) == pytest.approx(0.1, rel=0.15)


def test_grouped_cv_never_puts_a_patient_on_both_sides(monkeypatch):
    table = synthetic_table(20, 5)
    seen = []
    original = DoseModel.fit

    def spy(self, rows, y, groups=None):
        seen.append(set(rows["case_id"]))
        return original(self, rows, y, groups)

    monkeypatch.setattr(DoseModel, "fit", spy)
    oof = out_of_fold(select_group(table, "tumour"), "tumour", "physics_ridge", n_splits=5)
    assert len(seen) == 5 and np.isfinite(oof).all()
    # Every patient is held out exactly once: it is absent from exactly one training set.
    for patient in table["case_id"].unique():
        assert sum(patient not in s for s in seen) == 1


def test_train_models_picks_a_model_better_than_the_baseline_and_calibrated_intervals():
    table = synthetic_table(80, 6, noise=0.15)
    model_set, card = train_models(table, candidates=("population_mean", "physics", "physics_ridge"))
    metrics = card["metrics"]["tumour"]
    assert metrics["selected"] == "physics_ridge"
    assert metrics["mape"] < 0.5 * metrics["baseline_mape"]
    assert metrics["mape"] < metrics["physics_mape"]
    assert 0.7 <= metrics["coverage_80_cv"] <= 0.9
    # Intervals on new patients from the same process should cover about 80% / 90%.
    test = synthetic_table(80, 6, seed=11, noise=0.15)
    predicted = model_set.predict(test)
    ref = test["reference_gy_per_gbq"].to_numpy()
    inside = (ref >= predicted["interval_90_low_gy_per_gbq"]) & (ref <= predicted["interval_90_high_gy_per_gbq"])
    assert 0.82 <= inside.mean() <= 0.97


def test_out_of_domain_flags_name_the_reason():
    table = synthetic_table(30, 5)
    model_set, _ = train_models(table, candidates=("physics_ridge",))
    test = synthetic_table(2, 2, seed=4)
    test.loc[0, "suv_tissue"] = 500.0
    test["tracer_18F-DCFPyL"] = 0.0
    test["tracer_68Ga-PSMA-11"] = 1.0
    predicted = model_set.predict(test)
    assert not predicted.loc[0, "in_domain"]
    assert "suv_tissue = 500" in predicted.loc[0, "domain_warnings"]
    assert "check that the PET is in SUVbw" in predicted.loc[0, "domain_warnings"]
    assert "68Ga-PSMA-11 not in the training data" in predicted.loc[1, "domain_warnings"]
