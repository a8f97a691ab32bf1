"""scikit-learn's own estimator checks (parametrize_with_checks) on psmadose's estimators (issue 17): every
estimator passes every check, none is skipped. The physics estimators declare ``poor_score`` (on arbitrary
regression data X[:, 1] is no ln unit dose) and, with two columns, PhysicsCorrected has no correction to learn
and predicts the baseline."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from psmadose.model import MixedEffectsRegressor, PhysicsBaseline, PhysicsCorrected, PopulationMeanRegressor
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import Ridge
from sklearn.utils.estimator_checks import parametrize_with_checks


@parametrize_with_checks([PopulationMeanRegressor(), MixedEffectsRegressor(), MixedEffectsRegressor(Ridge(), tol=0.0),
                          PhysicsBaseline(), PhysicsCorrected(Ridge()), PhysicsCorrected(Ridge(), mixed=True)])
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


def _grouped_data():
    rng = np.random.default_rng(0)
    groups = np.repeat(np.arange(30), 5)
    X = rng.normal(size=(150, 3))
    y = X @ [0.5, -0.2, 0.1] + rng.normal(0, 0.5, 30)[groups] + rng.normal(0, 0.2, 150)
    return X, y, groups


def test_mixed_effects_em_stops_at_its_tolerance():
    X, y, groups = _grouped_data()
    default = MixedEffectsRegressor(Ridge()).fit(X, y, groups=groups)
    loose = MixedEffectsRegressor(Ridge(), max_iter=200, tol=1e-3).fit(X, y, groups=groups)
    fixed = MixedEffectsRegressor(Ridge(), max_iter=8, tol=0.0).fit(X, y, groups=groups)
    assert 1 < loose.n_iter_ <= default.n_iter_ < 100 and fixed.n_iter_ == 8
    assert default.sigma_b2_ == pytest.approx(0.25, rel=0.5)  # the simulated between-patient variance (0.5^2)


def test_mixed_effects_warns_when_em_does_not_converge():
    X, y, groups = _grouped_data()
    with pytest.warns(ConvergenceWarning, match="did not converge in 2 iterations"):
        MixedEffectsRegressor(Ridge(), max_iter=2, tol=1e-12).fit(X, y, groups=groups)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        assert MixedEffectsRegressor(Ridge(), max_iter=2, tol=0.0).fit(X, y, groups=groups).n_iter_ == 2


def test_physics_columns_policy():
    """ln unit dose may be NaN (no positive uptake: NaN prediction, as before validate_data); the stratum code
    may not; a wrong number of columns is refused with scikit-learn's message."""
    rng = np.random.default_rng(1)
    X = np.column_stack([rng.integers(0, 2, 60) * 10.0, rng.normal(size=60), rng.normal(size=(60, 2))])
    y = X[:, 1] + 0.3 + rng.normal(0, 0.1, 60)
    for estimator in (PhysicsBaseline(), PhysicsCorrected(Ridge())):
        fitted = estimator.fit(X, y)
        assert fitted.n_features_in_ == 4
        row = X[:2].copy()
        row[0, 1] = np.nan
        predicted = fitted.predict(row)
        assert np.isnan(predicted[0]) and np.isfinite(predicted[1])
        row[0, 0] = np.nan
        with pytest.raises(ValueError, match="column 0"):
            fitted.predict(row)
        with pytest.raises(ValueError, match="X has 3 features, but .* is expecting 4 features"):
            fitted.predict(X[:, :3])
    with pytest.raises(ValueError, match="at least 2 columns"):
        PhysicsCorrected(Ridge()).fit(X[:, :1], y)
    two = PhysicsCorrected(Ridge()).fit(X[:, :2], y)
    assert two.correction_ is None
    np.testing.assert_array_equal(two.predict(X[:, :2]), PhysicsBaseline().fit(X[:, :2], y).predict(X[:, :2]))
