"""Dose models: one scikit-learn style regressor per model group (tumour, kidney, salivary).

Every model predicts the absorbed dose per injected activity (Gy/GBq). Learners work on log(dose): doses are
log-normal across patients and the back-transformed prediction is the conditional median.

Physics first: every learned candidate is the physics baseline (``psmadose.physics``: the dose the structure's
measured tissue uptake implies, D proportional to SUV_tissue / weight) times a bounded learned correction,

    ln D = ln R(type, tracer) + ln U(SUV_tissue, weight, type) + clip(f(correction features))

where the correction features (``CORRECTION_FEATURES``) are clinical covariates, tumour burden and PET
acquisition facts, never a statistic of the structure's own image (no SUVmax/std/peak, no CT, no texture,
no drawn volume). So the predicted dose is proportional to the structure's own uptake (elasticity exactly 1)
and cannot depend on noise, blur, voxel size or texture except through the robust tissue uptake. The
correction's inputs are clipped to their training range and its output to the range of corrections seen in
training. Candidates:

- ``population_mean``: the training mean dose of the structure type (the baseline of Xue et al. 2022);
- ``physics``: the physics baseline alone (R calibrated per structure type and tracer), no learning;
- ``physics_ridge``: physics x ridge correction (univariate selection inside the pipeline);
- ``physics_trees``: physics x gradient-boosted-tree correction (scikit-learn HistGradientBoosting);
- ``physics_mixed``: physics x the same trees as fixed effects with a random patient intercept fitted by EM
  (MERF, Hajjem et al. 2014), acknowledging that lesions of one patient are not independent.

Cross-validation is patient-grouped; calibration of R and feature selection live inside the estimators, so
they are refitted in every fold and never see a test patient.
"""

from __future__ import annotations

import math
import re
import warnings

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, RegressorMixin, clone
from sklearn.ensemble import HistGradientBoostingRegressor
from sklearn.exceptions import ConvergenceWarning
from sklearn.feature_selection import SelectKBest, f_regression
from sklearn.impute import SimpleImputer
from sklearn.linear_model import RidgeCV
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.validation import check_is_fitted, validate_data

from .clinical import TRACERS
from .domain import UPTAKE_FEATURE, domain_reasons, log_positive, tracer_of, uptake_scale_reason
from .domain import training_domain as _training_domain
from .errors import InputError
from .intervals import LEVELS as INTERVAL_LEVELS
from .intervals import describe_stratum, interval_bounds, level_key, row_strata
from .physics import calibrate_log_ratio, unit_dose_gy_per_gbq
from .structures import GROUP_STRUCTURE_TYPES  # one definition, re-exported for model users

# The structure's own uptake (UPTAKE_FEATURE) enters only through the physics baseline, never the correction.
PATIENT_FEATURES = ("n_lesions", "total_tumour_volume_ml")
CLINICAL_FEATURES = ("age_years", "weight_kg", "height_cm", "bsa_m2", "bmi_kg_m2", "egfr_ml_min_1_73m2",
                     "log_psa_ng_ml", "alp_u_l", "ldh_u_l", "hemoglobin_g_dl", "prior_taxane_lines", "prior_arpi",
                     "pet_uptake_time_min") + tuple(f"tracer_{tracer}" for tracer in TRACERS)
CORRECTION_FEATURES = PATIENT_FEATURES + CLINICAL_FEATURES
# Strictly positive, right-skewed features: the learners and the domain check see their logarithm.
LOG_FEATURES = ("suv_tissue", "suv_tissue_to_max", "n_lesions", "total_tumour_volume_ml", "weight_kg", "alp_u_l",
                "ldh_u_l", "egfr_ml_min_1_73m2")


FEATURE_SETS = ("uptake", "radiomics")  # uptake = uptake + patient + clinical; radiomics = those + PET/CT radiomics
_RADIOMICS_COLUMN = re.compile(r"^(shape_|(pet|ct)_(firstorder|glcm|glrlm|glszm|gldm|ngtdm)_)")


def radiomics_columns(table: pd.DataFrame) -> list[str]:
    """Radiomics columns of a feature table (names made by psmadose.features.radiomics), in table order."""
    return [c for c in table.columns if _RADIOMICS_COLUMN.match(c)]


def group_features(group: str) -> list[str]:
    """Correction features of a group (structure-type indicators for the salivary group)."""
    features = list(CORRECTION_FEATURES)
    if len(GROUP_STRUCTURE_TYPES[group]) > 1:
        features += [f"is_{t}" for t in GROUP_STRUCTURE_TYPES[group]]
    return features


def design_matrix(table: pd.DataFrame, features: list[str], log_features: tuple[str, ...] = ()) -> np.ndarray:
    """Numeric matrix of the model's features (structure-type indicators derived, logs where asked)."""
    columns = []
    for name in features:
        if name.startswith("is_"):
            values = (table["structure_type"] == name[3:]).astype(float).to_numpy()
        elif name not in table.columns:
            raise InputError(f"feature {name!r} needed by the model is missing from the feature table; "
                             "recompute features with this psmadose version")
        else:
            values = table[name].to_numpy(dtype=float)
            if name in log_features:
                values = log_positive(values)
        columns.append(values)
    return np.column_stack(columns) if columns else np.empty((len(table), 0))


class PopulationMeanRegressor(RegressorMixin, BaseEstimator):
    """Predicts the training mean dose of each structure type (column 0 of X codes the type; y is ln dose)."""

    def fit(self, X, y):
        X, y = validate_data(self, X, y, y_numeric=True)
        dose = np.exp(y)
        self.codes_ = np.unique(X[:, 0])
        self.log_means_ = np.array([math.log(dose[X[:, 0] == c].mean()) for c in self.codes_])
        self.overall_log_mean_ = math.log(dose.mean())
        return self

    def predict(self, X):
        check_is_fitted(self, "log_means_")
        X = validate_data(self, X, reset=False)
        out = np.full(len(X), self.overall_log_mean_)
        for code, value in zip(self.codes_, self.log_means_):
            out[X[:, 0] == code] = value
        return out


class MixedEffectsRegressor(RegressorMixin, BaseEstimator):
    """Fixed effects by any regressor plus a random intercept per patient, fitted by EM (MERF).

    A new patient's random effect is unknown, so predictions use the fixed effects only; the random intercept
    keeps patients with many lesions from dominating the fixed-effects fit. EM stops when both variance
    components change by less than ``tol`` (relative) in one iteration, or after ``max_iter`` iterations (with a
    ``ConvergenceWarning``); ``n_iter_`` says how many ran. ``tol=0`` runs exactly ``max_iter`` iterations, no
    warning: the ``physics_mixed`` candidate does that (``MIXED_EM_ITERATIONS``), as the bundled model was built.
    ``fixed_effects=None``: ordinary least squares.
    """

    def __init__(self, fixed_effects=None, max_iter: int = 100, tol: float = 1e-4):
        self.fixed_effects = fixed_effects
        self.max_iter = max_iter
        self.tol = tol

    def fit(self, X, y, groups=None):
        from sklearn.linear_model import LinearRegression

        # NaN allowed: the fixed-effects estimator (an imputing pipeline, or trees) handles missing features
        X, y = validate_data(self, X, y, y_numeric=True, ensure_all_finite="allow-nan")
        base = self.fixed_effects if self.fixed_effects is not None else LinearRegression()
        groups = np.asarray(groups if groups is not None else np.arange(len(y)))
        labels, inverse = np.unique(groups, return_inverse=True)
        counts = np.bincount(inverse)
        b = np.zeros(len(labels))
        sigma_b2, sigma_e2 = np.var(y) * 0.1, np.var(y) * 0.9
        sigma_b2, sigma_e2 = max(float(sigma_b2), 1e-6), max(float(sigma_e2), 1e-6)
        self.n_iter_ = 0
        for _ in range(max(int(self.max_iter), 1)):
            model = clone(base).fit(X, y - b[inverse])
            residual = y - model.predict(X)
            shrink = sigma_b2 / (sigma_b2 + sigma_e2 / counts)
            b = shrink * np.bincount(inverse, weights=residual) / counts
            within = residual - b[inverse]
            previous = (sigma_b2, sigma_e2)
            sigma_e2 = max(float(np.mean(within**2)), 1e-6)
            sigma_b2 = max(float(np.mean(b**2 + shrink * sigma_e2 / counts)), 1e-6)
            self.n_iter_ += 1
            change = max(abs(sigma_b2 - previous[0]) / previous[0], abs(sigma_e2 - previous[1]) / previous[1])
            if self.tol > 0 and change < self.tol:
                break
        else:
            if self.tol > 0:
                warnings.warn(f"MixedEffectsRegressor: EM did not converge in {self.n_iter_} iterations (relative "
                              f"change of the variance components {change:.2g} > tol={self.tol:g}); raise max_iter",
                              ConvergenceWarning, stacklevel=2)
        self.fixed_effects_ = model
        self.sigma_b2_, self.sigma_e2_ = sigma_b2, sigma_e2
        return self

    def predict(self, X):
        check_is_fitted(self, "fixed_effects_")
        X = validate_data(self, X, reset=False, ensure_all_finite="allow-nan")
        return self.fixed_effects_.predict(X)


def _trees(random_state: int = 0) -> HistGradientBoostingRegressor:
    # Small trees and strong regularisation: the correction is a smooth, modest adjustment of the physics.
    return HistGradientBoostingRegressor(max_iter=200, learning_rate=0.05, max_leaf_nodes=8, min_samples_leaf=30,
                                         l2_regularization=1.0, random_state=random_state)


CANDIDATES = ("population_mean", "physics", "physics_ridge", "physics_trees", "physics_mixed")
BASELINES = ("population_mean", "physics")
N_PHYSICS_COLUMNS = 2  # design-matrix columns before the correction features: stratum code, ln unit dose
CORRECTION_QUANTILES = (0.005, 0.995)  # the learned correction is clipped to this range of training corrections
MIXED_EM_ITERATIONS = 8  # physics_mixed: a fixed number of EM iterations (tol=0), as the bundled model was built


def _validated_physics(estimator, X, y=None, *, reset: bool):
    """``validate_data`` for the physics estimators (float64, NaN allowed), plus what it cannot check per column:
    at least the two physics columns and a finite stratum code in column 0. NaN is legitimate elsewhere: in
    ln unit dose (column 1) for a structure without positive uptake, and in correction features (imputed or
    handled by the correction estimator). Because NaN is not accepted everywhere, the estimators keep scikit-learn's
    default tag ``allow_nan=False``."""
    kwargs = {"dtype": np.float64, "ensure_all_finite": "allow-nan", "reset": reset}
    if reset:  # fit: X and y
        X, y = validate_data(estimator, X, y, y_numeric=True, **kwargs)
    else:
        X = validate_data(estimator, X, **kwargs)
    if X.shape[1] < N_PHYSICS_COLUMNS:
        raise ValueError(f"{type(estimator).__name__} needs at least {N_PHYSICS_COLUMNS} columns (stratum code, "
                         f"ln unit dose); X has {X.shape[1]} feature(s)")
    if not np.isfinite(X[:, 0]).all():
        raise ValueError(f"Input X contains NaN or infinity in column 0 (the stratum code); "
                         f"{type(estimator).__name__} needs a finite code on every row")
    return (X, y) if reset else X


class PhysicsBaseline(RegressorMixin, BaseEstimator):
    """ln dose = ln R(stratum) + ln unit dose; X[:, 0] codes the stratum (structure type x tracer), X[:, 1] is
    ln unit dose (``psmadose.physics``). ln R is calibrated per stratum on the training rows.

    X[:, 1] may be NaN (no positive uptake, so no physics dose): such rows are left out of the calibration and
    predicted as NaN (the applicability domain flags them). Columns after the first two are accepted and ignored.
    """

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.regressor_tags.poor_score = True  # no free slope: arbitrary regression data is not a unit dose
        return tags

    def fit(self, X, y):
        X, y = _validated_physics(self, X, y, reset=True)
        codes, values, overall = calibrate_log_ratio(np.asarray(y, dtype=float), X[:, 1], X[:, 0])
        self.codes_, self.log_ratios_, self.overall_log_ratio_ = np.array(codes, dtype=float), values, overall
        return self

    def _log_ratio(self, X: np.ndarray) -> np.ndarray:
        """ln R of each row of a validated X."""
        out = np.full(len(X), self.overall_log_ratio_)
        for code, value in zip(self.codes_, self.log_ratios_):
            out[X[:, 0] == code] = value
        return out

    def predict(self, X):
        check_is_fitted(self, "log_ratios_")
        X = _validated_physics(self, X, reset=False)
        return X[:, 1] + self._log_ratio(X)


class PhysicsCorrected(RegressorMixin, BaseEstimator):
    """Physics baseline plus a learned, bounded correction of its log residual from X[:, 2:].

    The correction's inputs are clipped to their training range and its output to the
    ``CORRECTION_QUANTILES`` of the training corrections, so no input can move a dose far from physics.
    NaN in the correction features is passed on to the correction estimator (which must impute or handle it);
    NaN in ln unit dose (X[:, 1]) gives a NaN prediction, as for ``PhysicsBaseline``. Without correction features
    (two columns) there is nothing to correct from: ``correction_`` is None and the prediction is the baseline.
    ``mixed=True`` fits the correction as the fixed effects of a ``MixedEffectsRegressor`` with ``groups``
    (patients) and a fixed ``MIXED_EM_ITERATIONS`` EM iterations.
    """

    def __init__(self, correction=None, mixed: bool = False):
        self.correction = correction
        self.mixed = mixed

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.regressor_tags.poor_score = True  # the physics part has no free slope (see PhysicsBaseline)
        return tags

    def fit(self, X, y, groups=None):
        X, y = _validated_physics(self, X, y, reset=True)
        y = np.asarray(y, dtype=float)
        self.baseline_ = PhysicsBaseline().fit(X[:, :N_PHYSICS_COLUMNS], y)
        residual = y - self.baseline_.predict(X[:, :N_PHYSICS_COLUMNS])
        Z = X[:, N_PHYSICS_COLUMNS:]
        self.input_low_ = np.nanmin(Z, axis=0)
        self.input_high_ = np.nanmax(Z, axis=0)
        if Z.shape[1] == 0:
            estimator = None
        elif self.mixed:
            estimator = MixedEffectsRegressor(self.correction, max_iter=MIXED_EM_ITERATIONS, tol=0.0)
            estimator.fit(Z, residual, groups=groups)
        else:
            estimator = clone(self.correction).fit(Z, residual)
        self.correction_ = estimator
        self.bounds_ = np.quantile(residual, CORRECTION_QUANTILES)
        return self

    def _log_correction(self, X: np.ndarray) -> np.ndarray:
        """The clipped correction of each row of a validated X."""
        if self.correction_ is None:
            return np.zeros(len(X))
        Z = np.clip(X[:, N_PHYSICS_COLUMNS:], self.input_low_, self.input_high_)
        return np.clip(self.correction_.predict(Z), self.bounds_[0], self.bounds_[1])

    def predict(self, X):
        check_is_fitted(self, "correction_")
        X = _validated_physics(self, X, reset=False)
        return self.baseline_.predict(X[:, :N_PHYSICS_COLUMNS]) + self._log_correction(X)


def _ridge(n_features: int) -> Pipeline:
    return Pipeline([
        ("impute", SimpleImputer(strategy="median", keep_empty_features=True)),
        ("scale", StandardScaler()),
        ("select", SelectKBest(f_regression, k=min(15, n_features))),
        ("ridge", RidgeCV(alphas=np.logspace(-2, 4, 13))),
    ])


def build_candidate(name: str, n_features: int):
    """The estimator of a candidate; ``n_features`` counts the correction features."""
    if name == "population_mean":
        return PopulationMeanRegressor()
    if name == "physics":
        return PhysicsBaseline()
    if name == "physics_ridge":
        return PhysicsCorrected(_ridge(n_features))
    if name == "physics_trees":
        return PhysicsCorrected(_trees())
    if name == "physics_mixed":
        return PhysicsCorrected(_trees(), mixed=True)
    raise ValueError(name)


def stratum_codes(table: pd.DataFrame, group: str) -> np.ndarray:
    """Code of (structure type, tracer) per row: type index x 10 + tracer index (9: no tracer column)."""
    types = GROUP_STRUCTURE_TYPES[group]
    type_code = table["structure_type"].map({t: i for i, t in enumerate(types)}).to_numpy(dtype=float)
    tracer_code = np.array([TRACERS.index(t) if t in TRACERS else 9 for t in tracer_of(table)], dtype=float)
    return type_code * 10 + tracer_code


def log_unit_dose(table: pd.DataFrame) -> np.ndarray:
    if UPTAKE_FEATURE not in table.columns:
        raise InputError(f"feature {UPTAKE_FEATURE!r} needed by the model is missing from the feature table; "
                         "recompute features with this psmadose version")
    unit = unit_dose_gy_per_gbq(table[UPTAKE_FEATURE].to_numpy(dtype=float), table["weight_kg"].to_numpy(dtype=float),
                                table["structure_type"].to_numpy())
    return log_positive(unit)


class DoseModel(RegressorMixin, BaseEstimator):
    """Gy/GBq for one model group, from a feature table (pandas DataFrame) of that group's segments.

    Unlike a plain scikit-learn estimator it takes a whole feature table and reads its columns by name, so other
    columns are ignored, not an error. After ``fit``, ``feature_names_in_`` (ndarray of str) names the columns
    the learned correction reads (``group_features``, plus radiomics columns with ``feature_set="radiomics"``;
    also set, and recorded in the model card, for the baselines that use none of them) and ``n_features_in_``
    counts them. The physics baseline also reads ``structure_type``, ``suv_tissue`` (``UPTAKE_FEATURE``),
    ``weight_kg`` and the ``tracer_*`` indicators.
    """

    def __init__(self, group: str = "kidney", candidate: str = "physics_ridge", feature_set: str = "uptake"):
        self.group = group
        self.candidate = candidate
        self.feature_set = feature_set

    def _matrix(self, table: pd.DataFrame) -> np.ndarray:
        if self.candidate == "population_mean":
            codes = table["structure_type"].map({t: i for i, t in enumerate(GROUP_STRUCTURE_TYPES[self.group])})
            return codes.to_numpy(dtype=float)[:, None]
        physics = np.column_stack([stratum_codes(table, self.group), log_unit_dose(table)])
        if self.candidate == "physics":
            return physics
        return np.column_stack([physics, design_matrix(table, list(self.feature_names_in_), LOG_FEATURES)])

    def fit(self, table: pd.DataFrame, dose_gy_per_gbq, groups=None):
        if self.group not in GROUP_STRUCTURE_TYPES or self.candidate not in CANDIDATES or \
                self.feature_set not in FEATURE_SETS:
            raise ValueError(f"unknown group/candidate/feature set {self.group}/{self.candidate}/{self.feature_set}")
        features = group_features(self.group)
        if self.feature_set == "radiomics":
            extra = radiomics_columns(table)
            if not extra:
                raise InputError("the radiomics feature set was asked for but the feature table has no radiomics "
                                 "columns; install psmadose[radiomics] and recompute features")
            features = features + extra
        self.feature_names_in_ = np.asarray(features, dtype=object)
        self.n_features_in_ = len(features)
        X = self._matrix(table)
        y = np.log(np.asarray(dose_gy_per_gbq, dtype=float))
        estimator = build_candidate(self.candidate, self.n_features_in_)
        if isinstance(estimator, PhysicsCorrected) and estimator.mixed:
            estimator.fit(X, y, groups=groups)
        else:
            estimator.fit(X, y)
        self.estimator_ = estimator
        return self

    def predict(self, table: pd.DataFrame) -> np.ndarray:
        check_is_fitted(self, "estimator_")
        return np.exp(self.estimator_.predict(self._matrix(table)))

    def __setstate__(self, state):
        # Models trained before psmadose named the correction features ``features_in_`` (a list): a site's own
        # model file keeps loading (trusted), with the attributes of this version.
        if "features_in_" in state and "feature_names_in_" not in state:
            state = dict(state)
            features = list(state.pop("features_in_"))
            state["feature_names_in_"] = np.asarray(features, dtype=object)
            state["n_features_in_"] = len(features)
        super().__setstate__(state)

    def physics_gy_per_gbq(self, table: pd.DataFrame) -> np.ndarray | None:
        """The physics baseline of this model's calibration (None for the population-mean candidate)."""
        check_is_fitted(self, "estimator_")
        baseline = getattr(self.estimator_, "baseline_", self.estimator_)
        if not isinstance(baseline, PhysicsBaseline):
            return None
        physics = np.column_stack([stratum_codes(table, self.group), log_unit_dose(table)])
        return np.exp(baseline.predict(physics))


def select_group(table: pd.DataFrame, group: str) -> pd.DataFrame:
    return table[table["structure_type"].isin(GROUP_STRUCTURE_TYPES[group])].reset_index(drop=True)


class DoseModelSet:
    """The fitted models of all groups plus what prediction needs besides them: the interval calibration
    (``psmadose.intervals``, from patient-grouped out-of-fold residuals) and the training domain
    (``psmadose.domain``)."""

    def __init__(self, models: dict, intervals: dict, domain: dict, feature_families: list,
                 population_means: dict | None = None, uptake_reference: dict | None = None):
        self.models = models  # group -> DoseModel
        self.population_means = population_means or {}  # structure type -> training mean Gy/GBq (baseline)
        self.intervals = intervals  # group -> intervals.calibrate(...) result
        self.domain = domain  # group -> domain.training_domain(...) result
        self.feature_families = feature_families
        self.uptake_reference = uptake_reference or {}  # domain.uptake_scale_reference: organ uptake per tracer

    def predict(self, table: pd.DataFrame) -> pd.DataFrame:
        """Predictions for every predictable row of a feature table, with intervals and domain flags."""
        out = []
        for group, model in self.models.items():
            rows = select_group(table, group)
            if rows.empty:
                continue
            dose = model.predict(rows)
            result = rows[["case_id", "segment", "structure_type"]].copy()
            result["model_group"] = group
            result["predicted_gy_per_gbq"] = dose
            physics = model.physics_gy_per_gbq(rows)
            result["physics_gy_per_gbq"] = physics if physics is not None else np.nan
            result["population_mean_gy_per_gbq"] = rows["structure_type"].map(self.population_means).astype(float)
            strata = row_strata(self.intervals[group], rows)
            for level in INTERVAL_LEVELS:
                low, high = interval_bounds(self.intervals[group], strata, level)
                result[f"interval_{level_key(level)}_low_gy_per_gbq"] = dose * np.exp(low)
                result[f"interval_{level_key(level)}_high_gy_per_gbq"] = dose * np.exp(high)
            result["interval_stratum"] = [describe_stratum(self.intervals[group], s) for s in strata]
            reasons = domain_reasons(self.domain[group], rows, LOG_FEATURES)
            result["in_domain"] = [not r for r in reasons]
            result["domain_warnings"] = ["; ".join(r) for r in reasons]
            out.append(result)
        if not out:
            return pd.DataFrame()
        result = pd.concat(out, ignore_index=True)
        # A case whose organs are all scaled alike (units, weight): every prediction of that case is flagged.
        for case_id, rows in table.groupby("case_id", sort=False):
            reason = uptake_scale_reason(getattr(self, "uptake_reference", {}), rows)
            if reason:
                selected = (result["case_id"] == case_id).to_numpy()
                result.loc[selected, "in_domain"] = False
                result.loc[selected, "domain_warnings"] = [
                    "; ".join(x for x in (w, reason) if x) for w in result.loc[selected, "domain_warnings"]]
        return result


def domain_features(group: str) -> list[str]:
    """Features the applicability domain checks: the structure's tissue uptake and the correction features
    (without tracer/structure indicators)."""
    return [UPTAKE_FEATURE, "suv_tissue_to_max"] + [f for f in group_features(group)
                                                    if not f.startswith(("is_", "tracer_"))]


def training_domain(table: pd.DataFrame, group: str) -> dict:
    rows = select_group(table, group)
    # Features a table does not have (a site's own feature table from an older version) are not checked.
    features = [f for f in domain_features(group) if f in rows.columns]
    return _training_domain(rows, features, LOG_FEATURES, GROUP_STRUCTURE_TYPES[group])
