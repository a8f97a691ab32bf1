"""Per-prediction explanations: groups of related features moved together towards the training median."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from psmadose.explain import FEATURE_GROUPS, explain_predictions
from psmadose.model import DoseModel, DoseModelSet, group_features, training_domain
from psmadose.physics import unit_dose_gy_per_gbq
from threadpoolctl import threadpool_limits


def _synthetic_table(n: int = 240, seed: int = 0) -> pd.DataFrame:
    """Kidneys whose dose is physics x (eGFR/75)^-0.5; weight, height, BSA and BMI strongly correlated."""
    rng = np.random.default_rng(seed)
    table = pd.DataFrame({f: rng.uniform(1.0, 100.0, n) for f in group_features("kidney")})
    for tracer in ("tracer_18F-DCFPyL", "tracer_18F-PSMA-1007", "tracer_68Ga-PSMA-11"):
        table[tracer] = 0.0
    table["tracer_18F-DCFPyL"] = 1.0
    weight = rng.uniform(55.0, 120.0, n)
    height = 150.0 + 0.3 * weight + rng.normal(0, 2.0, n)
    table["weight_kg"], table["height_cm"] = weight, height
    table["bsa_m2"] = 0.007184 * weight**0.425 * height**0.725
    table["bmi_kg_m2"] = weight / (height / 100) ** 2
    table["egfr_ml_min_1_73m2"] = rng.uniform(30.0, 110.0, n)
    table["suv_tissue"] = rng.uniform(8.0, 35.0, n)
    table["structure_type"] = "kidney"
    table["case_id"] = [f"p{i // 2:03d}" for i in range(n)]
    table["segment"] = [f"kidney_{'left' if i % 2 else 'right'}_{i}" for i in range(n)]
    table["dose"] = 0.45 * unit_dose_gy_per_gbq(table["suv_tissue"], weight, table["structure_type"]) \
        * (table["egfr_ml_min_1_73m2"] / 75.0) ** -0.5
    return table


def _model_set(candidate: str) -> DoseModelSet:
    table = _synthetic_table()
    with threadpool_limits(1):  # small data: OpenMP threads only add overhead on a busy machine
        model = DoseModel("kidney", candidate).fit(table, table["dose"], groups=table["case_id"])
    return DoseModelSet({"kidney": model}, {"kidney": {"80": [-0.1, 0.1], "90": [-0.2, 0.2]}},
                        {"kidney": training_domain(table, "kidney")}, [])


@pytest.mark.parametrize("candidate", ["physics_trees", "physics_ridge"])
def test_own_uptake_explains_exactly_and_renal_function_is_the_correction(candidate):
    model_set = _model_set(candidate)
    test = _synthetic_table(20, seed=1)
    test["suv_tissue"] = np.r_[np.full(10, 9.0), np.full(10, 33.0)]  # far below / above the middle
    test["egfr_ml_min_1_73m2"] = 75.0
    explanations = explain_predictions(model_set, test)
    assert "moved together" in explanations["method"]
    median_suv = float(_synthetic_table()["suv_tissue"].median())
    for i, segment in enumerate(test["segment"]):
        e = explanations["segments"][segment]
        top = max(e["up"] + e["down"], key=lambda x: abs(x["log_effect"]))
        assert top["group"] == "own tissue uptake (physics)"
        # Elasticity 1: the effect is exactly ln(SUV / median SUV) (independent: the training median by pandas).
        assert top["log_effect"] == pytest.approx(math.log(test["suv_tissue"].iloc[i] / median_suv), abs=0.02)
        assert (top in e["down"]) == (i < 10)
        assert top["factor"] == pytest.approx(np.exp(top["log_effect"]))
        assert len(e["up"]) <= 3 and len(e["down"]) <= 3


def test_correlated_body_size_features_are_one_group_never_separate_effects():
    # The failure: one collinear feature moved alone ("suv_std x2.0") explained effects that do not
    # exist. Here weight, height, BSA and BMI move together, so no explanation names one of them alone.
    model_set = _model_set("physics_ridge")
    test = _synthetic_table(10, seed=2)
    explanations = explain_predictions(model_set, test)
    groups = {x["group"] for e in explanations["segments"].values() for x in e["up"] + e["down"]}
    assert groups <= set(FEATURE_GROUPS)
    for e in explanations["segments"].values():
        for item in e["up"] + e["down"]:
            if item["group"] == "body size":
                assert set(item["features"]) == {"weight_kg", "height_cm", "bsa_m2", "bmi_kg_m2"}


def test_reference_is_the_training_median_of_the_structure_type_and_the_midpoint_without_one():
    from psmadose.explain import typical_values

    table = _synthetic_table(241)  # odd: a unique middle value (with an even count a log-scale median differs)
    domain = training_domain(table, "kidney")
    typical = typical_values(domain, "kidney", ["suv_tissue", "age_years", "n_lesions"])
    # Independent: pandas' median of the training rows (suv_tissue is a log feature, stored as a log median).
    for feature in ("suv_tissue", "age_years", "n_lesions"):
        assert typical[feature] == pytest.approx(float(table[feature].median()), rel=1e-9), feature
    without = {k: v for k, v in domain.items() if k != "multivariate"}
    low, high = domain["ranges"]["age_years"]
    assert typical_values(without, "kidney", ["age_years"])["age_years"] == pytest.approx((low + high) / 2)
