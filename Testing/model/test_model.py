"""Dose models on synthetic tables with a known answer."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from psmadose.model import (
    DoseModel,
    MixedEffectsRegressor,
    PopulationMeanRegressor,
    group_features,
    select_group,
)
from psmadose.training import out_of_fold, train_models


def synthetic_table(n_patients=60, per_patient=6, seed=0, structure_type="tumour", noise=0.1, patient_sd=0.0):
    """Dose = 0.3 * suv_mean ** 1.0 * volume_ml ** -0.2 with log-normal noise and an optional patient effect."""
    rng = np.random.default_rng(seed)
    rows = []
    for p in range(n_patients):
        effect = rng.normal(0, patient_sd)
        for s in range(per_patient):
            row = {name: float(rng.normal(1.0, 0.1)) for name in group_features("tumour")}
            row.update({"case_id": f"p{p:03d}", "segment": f"lesion_{s}", "structure_type": structure_type,
                        "suv_mean": float(np.exp(rng.normal(2.3, 0.5))), "volume_ml": float(np.exp(rng.normal(1, 1)))})
            for tracer in ("18F-DCFPyL", "18F-PSMA-1007", "68Ga-PSMA-11"):
                row[f"tracer_{tracer}"] = float(tracer == "18F-DCFPyL")
            row["reference_gy_per_gbq"] = float(0.3 * row["suv_mean"] * row["volume_ml"] ** -0.2
                                                * math.exp(rng.normal(0, noise) + effect))
            rows.append(row)
    return pd.DataFrame(rows)


def test_linear_model_recovers_a_power_law():
    # The target is an exact power law in suv_mean and volume (log-linear): ridge on log features must fit it
    # to within the 10% noise; MAPE of ~8% is E|exp(N(0, 0.1)) - 1|.
    table = synthetic_table()
    model = DoseModel("tumour", "linear_uptake").fit(table, table["reference_gy_per_gbq"])
    test = synthetic_table(seed=1)
    mape = np.mean(np.abs(model.predict(test) - test["reference_gy_per_gbq"]) / test["reference_gy_per_gbq"])
    assert mape < 0.12


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
    # Random intercept SD 0.4 and residual SD 0.1 by construction; a constant fixed effect isolates them.
    rng = np.random.default_rng(5)
    groups = np.repeat(np.arange(200), 8)
    y = rng.normal(0, 0.4, 200)[groups] + rng.normal(0, 0.1, len(groups))
    X = np.zeros((len(y), 1))
    model = MixedEffectsRegressor(PopulationMeanRegressor(), max_iter=20).fit(X, y, groups=groups)
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
    oof = out_of_fold(select_group(table, "tumour"), "tumour", "linear_uptake", n_splits=5)
    assert len(seen) == 5 and np.isfinite(oof).all()
    # Every patient is held out exactly once: it is absent from exactly one training set.
    for patient in table["case_id"].unique():
        assert sum(patient not in s for s in seen) == 1


def test_train_models_picks_a_model_better_than_the_baseline_and_calibrated_intervals():
    table = synthetic_table(80, 6, noise=0.15)
    model_set, card = train_models(table, candidates=("population_mean", "linear_uptake"))
    metrics = card["metrics"]["tumour"]
    assert metrics["selected"] == "linear_uptake"
    assert metrics["mape"] < 0.5 * metrics["baseline_mape"]
    assert 0.7 <= metrics["coverage_80_cv"] <= 0.9
    # Intervals on new patients from the same process should cover about 80% / 90%.
    test = synthetic_table(80, 6, seed=11, noise=0.15)
    predicted = model_set.predict(test)
    ref = test["reference_gy_per_gbq"].to_numpy()
    inside = (ref >= predicted["interval_90_low_gy_per_gbq"]) & (ref <= predicted["interval_90_high_gy_per_gbq"])
    assert 0.82 <= inside.mean() <= 0.97


def test_out_of_domain_flags_name_the_reason():
    table = synthetic_table(30, 5)
    model_set, _ = train_models(table, candidates=("linear_uptake",))
    test = synthetic_table(2, 2, seed=4)
    test.loc[0, "suv_mean"] = 500.0
    test["tracer_18F-DCFPyL"] = 0.0
    test["tracer_68Ga-PSMA-11"] = 1.0
    predicted = model_set.predict(test)
    assert not predicted.loc[0, "in_domain"]
    assert "suv_mean = 500" in predicted.loc[0, "domain_warnings"]
    assert "68Ga-PSMA-11 not in the training data" in predicted.loc[1, "domain_warnings"]
