"""Issue 7, part 3: per-prediction explanations by perturbation towards the training median."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from psmadose.explain import explain_predictions
from psmadose.model import DoseModel, DoseModelSet, group_features, training_domain
from threadpoolctl import threadpool_limits


def _synthetic_table(n: int = 240, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    table = pd.DataFrame({f: rng.uniform(1.0, 100.0, n) for f in group_features("kidney")})
    for tracer in ("tracer_18F-DCFPyL", "tracer_18F-PSMA-1007", "tracer_68Ga-PSMA-11"):
        table[tracer] = 0.0
    table["tracer_18F-DCFPyL"] = 1.0
    table["suv_mean"] = rng.uniform(5.0, 40.0, n)
    table["structure_type"] = "kidney"
    table["case_id"] = [f"p{i // 2:03d}" for i in range(n)]
    table["segment"] = [f"kidney_{'left' if i % 2 else 'right'}_{i}" for i in range(n)]
    return table


# mixed_effects predicts with the same trees as tree_ensemble (fixed effects only); eight EM refits are slow.
@pytest.mark.parametrize("candidate", ["tree_ensemble", "linear_uptake"])
def test_suv_mean_is_the_top_contributor_when_dose_depends_only_on_it(candidate):
    table = _synthetic_table()
    dose = 0.03 * table["suv_mean"].to_numpy()  # Gy/GBq depends on suv_mean alone
    with threadpool_limits(1):  # small data: OpenMP threads only add overhead on a busy machine
        model = DoseModel("kidney", candidate).fit(table, dose, groups=table["case_id"])
    model_set = DoseModelSet({"kidney": model}, {"kidney": {"80": [-0.1, 0.1], "90": [-0.2, 0.2]}},
                             {"kidney": training_domain(table, "kidney")}, [])
    test = _synthetic_table(20, seed=1)
    test["suv_mean"] = np.r_[np.full(10, 6.0), np.full(10, 38.0)]  # far below / above the middle
    explanations = explain_predictions(model_set, test)
    assert "training median" in explanations["method"]
    for i, segment in enumerate(test["segment"]):
        e = explanations["segments"][segment]
        contributors = e["up"] + e["down"]
        top = max(contributors, key=lambda x: abs(x["log_effect"]))
        assert top["feature"] == "suv_mean"
        # low suv_mean pushes the dose down, high pushes it up
        assert (top in e["down"]) == (i < 10)
        assert top["factor"] == pytest.approx(np.exp(top["log_effect"]))
        assert len(e["up"]) <= 3 and len(e["down"]) <= 3


def test_reference_is_the_training_median_of_the_structure_type_and_the_midpoint_without_one():
    from psmadose.explain import typical_values

    table = _synthetic_table(241)  # odd: a unique middle value (with an even count a log-scale median differs)
    domain = training_domain(table, "kidney")
    typical = typical_values(domain, "kidney", ["suv_mean", "age_years", "volume_ml"])
    # Independent: pandas' median of the training rows (volume_ml is a log feature, stored as a log median).
    for feature in ("suv_mean", "age_years", "volume_ml"):
        assert typical[feature] == pytest.approx(float(table[feature].median()), rel=1e-9), feature
    without = {k: v for k, v in domain.items() if k != "multivariate"}
    low, high = domain["ranges"]["age_years"]
    assert typical_values(without, "kidney", ["age_years"])["age_years"] == pytest.approx((low + high) / 2)
