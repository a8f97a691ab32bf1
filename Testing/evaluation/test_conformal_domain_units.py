"""Issue 7: split-conformal interval calibration and the multivariate applicability domain, on synthetic data
where the right answer is known analytically."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from psmadose.domain import domain_reasons, training_domain
from psmadose.intervals import (
    MIN_ROWS_FOR_VOLUME_STRATA,
    calibrate,
    conformal_bounds,
    describe_stratum,
    interval_bounds,
    row_strata,
)


@pytest.mark.parametrize("n, level", [(19, 0.8), (24, 0.9), (200, 0.9)])
def test_conformal_bounds_have_the_exact_finite_sample_coverage(n, level):
    # For n exchangeable continuous scores, the new score exceeds the k-th smallest with probability
    # 1 - k/(n+1) (rank argument; Lei et al. 2018, JASA, Thm 2.2). Equal tails with k = ceil((n+1)(1-a/2)) give
    # coverage exactly 1 - 2 (1 - k/(n+1)) >= level. Checked by Monte Carlo over 20000 calibration sets.
    rng = np.random.default_rng(0)
    k = math.ceil((n + 1) * (1 - (1 - level) / 2))
    exact = 1 - 2 * (1 - k / (n + 1))
    assert exact >= level
    scores = rng.standard_normal((20000, n))
    new = rng.standard_normal(20000)
    covered = [lo <= y <= hi for y, lo, hi in ((y, *conformal_bounds(s, level)) for y, s in zip(new, scores))]
    assert np.mean(covered) == pytest.approx(exact, abs=0.01)  # Monte Carlo SE about 0.003


def _rows(types: dict, rng, volumes=None) -> tuple[pd.DataFrame, np.ndarray]:
    """Rows of several structure types; each type's log residuals have its own spread."""
    frames, residuals = [], []
    for structure_type, (n, spread) in types.items():
        frames.append(pd.DataFrame({"structure_type": structure_type,
                                    "volume_ml": rng.lognormal(1.0, 1.0, n) if volumes is None else volumes}))
        residuals.append(rng.normal(0.0, spread, n))
    return pd.concat(frames, ignore_index=True), np.concatenate(residuals)


def test_mondrian_strata_cover_each_structure_type_where_pooling_does_not():
    rng = np.random.default_rng(1)
    types = {"parotid": (800, 0.2), "lacrimal": (800, 0.6)}
    rows, residuals = _rows(types, rng)
    calibration = calibrate(rows, residuals)
    new_rows, new_residuals = _rows({t: (20000, s) for t, (_, s) in types.items()}, rng)
    strata = row_strata(calibration, new_rows)
    for level in (0.8, 0.9):
        low, high = interval_bounds(calibration, strata, level)
        covered = (new_residuals >= low) & (new_residuals <= high)
        pooled_low, pooled_high = calibration["pooled"][f"{int(level * 100)}"]
        pooled = (new_residuals >= pooled_low) & (new_residuals <= pooled_high)
        for structure_type in types:
            selection = (new_rows["structure_type"] == structure_type).to_numpy()
            assert covered[selection].mean() == pytest.approx(level, abs=0.03), (structure_type, level)
        lacrimal = (new_rows["structure_type"] == "lacrimal").to_numpy()
        # The pooled interval under-covers the hard type: what per-type calibration fixes.
        assert pooled[lacrimal].mean() < level - 0.1
        assert set(strata) == {"parotid", "lacrimal"}


def test_large_structure_types_are_split_into_volume_terciles():
    rng = np.random.default_rng(2)
    rows, residuals = _rows({"tumour": (MIN_ROWS_FOR_VOLUME_STRATA, 0.4), "kidney": (400, 0.2)}, rng)
    # Small tumours less predictable (partial volume): spread falls with volume.
    tumour = (rows["structure_type"] == "tumour").to_numpy()
    residuals[tumour] *= 1.5 / np.sqrt(rows.loc[tumour, "volume_ml"].to_numpy())
    calibration = calibrate(rows, residuals)
    assert set(calibration["strata"]) == {"tumour|0", "tumour|1", "tumour|2", "kidney"}
    small, large = calibration["strata"]["tumour|0"]["80"], calibration["strata"]["tumour|2"]["80"]
    assert small[1] - small[0] > 2 * (large[1] - large[0])
    low_edge, high_edge = calibration["volume_edges"]["tumour"]
    assert describe_stratum(calibration, "tumour|1") == f"tumour, volume {low_edge:.3g}-{high_edge:.3g} mL"
    # A structure type never calibrated falls back to the pooled bounds and says so.
    used = row_strata(calibration, pd.DataFrame({"structure_type": ["parotid"], "volume_ml": [20.0]}))
    assert used == ["pooled"]


def _correlated_patients(n_patients: int, rng, lesions: int = 3) -> pd.DataFrame:
    """Two strongly correlated log-normal features (rho 0.95), several segments per patient."""
    n = n_patients * lesions
    a = rng.standard_normal(n)
    b = 0.95 * a + math.sqrt(1 - 0.95**2) * rng.standard_normal(n)
    return pd.DataFrame({"case_id": np.repeat([f"p{i}" for i in range(n_patients)], lesions),
                         "structure_type": "tumour", "volume_ml": np.exp(a), "total_uptake_suv_ml": np.exp(1 + b),
                         "age_years": rng.normal(70, 8, n), "tracer_18F-DCFPyL": 1.0})


FEATURES = ["volume_ml", "total_uptake_suv_ml", "age_years"]
LOG = ("volume_ml", "total_uptake_suv_ml")


def test_mahalanobis_flags_about_one_percent_of_new_in_distribution_segments():
    rng = np.random.default_rng(3)
    domain = training_domain(_correlated_patients(400, rng), FEATURES, LOG, ["tumour"])
    check = domain["multivariate"]["tumour"]
    # Three standardised Gaussian features: the squared distance is chi2(3); 99th percentile sqrt(11.34) = 3.37.
    assert check["threshold"] == pytest.approx(math.sqrt(11.345), rel=0.08)
    new = _correlated_patients(2000, rng)
    reasons = domain_reasons(domain, new, LOG)
    flagged = np.mean(["Mahalanobis" in "; ".join(r) for r in reasons])
    assert 0.003 < flagged < 0.025


def test_unusual_combination_inside_every_range_is_flagged_with_the_features_named():
    rng = np.random.default_rng(4)
    training = _correlated_patients(400, rng)
    domain = training_domain(training, FEATURES, LOG, ["tumour"])
    # Small volume with a large total uptake: each value is inside its training range, the pair never occurs.
    odd = training.iloc[[0]].assign(volume_ml=float(np.quantile(training["volume_ml"], 0.05)),
                                    total_uptake_suv_ml=float(np.quantile(training["total_uptake_suv_ml"], 0.95)),
                                    age_years=float(training["age_years"].median()))
    [reasons] = domain_reasons(domain, odd, LOG)
    assert len(reasons) == 1 and reasons[0].startswith("unusual combination of features")
    assert "largest contributions: " in reasons[0]
    named = reasons[0].split("largest contributions: ")[1].split(", ")
    assert set(named[:2]) == {"volume_ml", "total_uptake_suv_ml"}
    # The same values moved together (as the training data does) are in domain.
    typical = odd.assign(total_uptake_suv_ml=float(np.exp(1 + 0.95 * np.log(odd["volume_ml"].iloc[0]))))
    assert domain_reasons(domain, typical, LOG) == [[]]


def test_domain_stores_no_training_rows():
    rng = np.random.default_rng(5)
    domain = training_domain(_correlated_patients(100, rng), FEATURES, LOG, ["tumour"])
    arrays = [v for v in domain["multivariate"]["tumour"].values() if isinstance(v, np.ndarray)]
    assert max(a.shape[0] for a in arrays) == len(FEATURES)  # summary statistics only, not 300 segment vectors


def test_unseen_tracer_and_out_of_range_values_are_reasons():
    rng = np.random.default_rng(6)
    training = _correlated_patients(100, rng)
    domain = training_domain(training, FEATURES, LOG, ["tumour"])
    row = training.iloc[[0]].assign(**{"tracer_18F-DCFPyL": 0.0, "tracer_68Ga-PSMA-11": 1.0, "age_years": 120.0})
    [reasons] = domain_reasons(domain, row, LOG)
    assert any(r.startswith("PET tracer 68Ga-PSMA-11 not in the training data (18F-DCFPyL)") for r in reasons)
    assert any(r.startswith("age_years = 120 outside the training range") for r in reasons)
