"""Dose models: one scikit-learn style regressor per model group (tumour, kidney, salivary).

Every model predicts the absorbed dose per injected activity (Gy/GBq). Learners work on log(dose): doses are
log-normal across patients and the back-transformed prediction is the conditional median. Candidates:

- ``population_mean``: the training mean dose of the structure type (the baseline of Xue et al. 2022);
- ``linear_uptake``: ridge regression on log uptake/clinical features with univariate selection;
- ``tree_ensemble``: gradient-boosted trees (scikit-learn HistGradientBoosting);
- ``mixed_effects``: the same trees as fixed effects with a random patient intercept fitted by EM
  (MERF, Hajjem et al. 2014), acknowledging that lesions of one patient are not independent.

Cross-validation is patient-grouped; feature selection lives inside the pipelines, so it is refitted in
every fold and never sees a test patient.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, RegressorMixin, clone
from sklearn.ensemble import HistGradientBoostingRegressor
from sklearn.feature_selection import SelectKBest, f_regression
from sklearn.impute import SimpleImputer
from sklearn.linear_model import RidgeCV
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.validation import check_is_fitted

from .domain import domain_reasons, log_positive
from .domain import training_domain as _training_domain
from .errors import InputError
from .intervals import LEVELS as INTERVAL_LEVELS
from .intervals import describe_stratum, interval_bounds, level_key, row_strata

GROUP_STRUCTURE_TYPES = {
    "tumour": ("tumour",),
    "kidney": ("kidney",),
    "salivary": ("parotid", "submandibular", "lacrimal"),
}

SEGMENT_FEATURES = ("volume_ml", "suv_max", "suv_mean", "suv_std", "suv_peak", "total_uptake_suv_ml",
                    "ct_hu_mean", "suv_mean_to_parotid", "suv_mean_to_kidney", "suv_mean_to_liver")
PATIENT_FEATURES = ("n_lesions", "total_tumour_volume_ml", "total_lesion_uptake_suv_ml", "tumour_suv_mean_patient",
                    "kidney_suv_mean_patient", "parotid_suv_mean_patient", "submandibular_suv_mean_patient",
                    "liver_suv_mean_patient", "spleen_suv_mean_patient")
CLINICAL_FEATURES = ("age_years", "weight_kg", "height_cm", "bsa_m2", "bmi_kg_m2", "egfr_ml_min_1_73m2",
                     "log_psa_ng_ml", "alp_u_l", "ldh_u_l", "hemoglobin_g_dl", "prior_taxane_lines", "prior_arpi",
                     "pet_uptake_time_min", "tracer_18F-DCFPyL", "tracer_18F-PSMA-1007", "tracer_68Ga-PSMA-11")
# Strictly positive, right-skewed features: the linear model sees their logarithm.
LOG_FEATURES = ("volume_ml", "suv_max", "suv_mean", "suv_std", "suv_peak", "total_uptake_suv_ml",
                "suv_mean_to_parotid", "suv_mean_to_kidney", "suv_mean_to_liver", "n_lesions",
                "total_tumour_volume_ml", "total_lesion_uptake_suv_ml", "tumour_suv_mean_patient",
                "kidney_suv_mean_patient", "parotid_suv_mean_patient", "submandibular_suv_mean_patient",
                "liver_suv_mean_patient", "spleen_suv_mean_patient", "weight_kg", "alp_u_l", "ldh_u_l",
                "egfr_ml_min_1_73m2")


FEATURE_SETS = ("uptake", "radiomics")  # uptake = uptake + patient + clinical; radiomics = those + PET/CT radiomics
_RADIOMICS_COLUMN = re.compile(r"^(shape_|(pet|ct)_(firstorder|glcm|glrlm|glszm|gldm|ngtdm)_)")


def radiomics_columns(table: pd.DataFrame) -> list[str]:
    """Radiomics columns of a feature table (names made by psmadose.features.radiomics), in table order."""
    return [c for c in table.columns if _RADIOMICS_COLUMN.match(c)]


def group_features(group: str) -> list[str]:
    features = list(SEGMENT_FEATURES) + list(PATIENT_FEATURES) + list(CLINICAL_FEATURES)
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
    """Predicts the training mean dose of each structure type (column 0 of X codes the type)."""

    def fit(self, X, y):
        X = np.asarray(X, dtype=float)
        dose = np.exp(np.asarray(y, dtype=float))
        self.codes_ = np.unique(X[:, 0])
        self.log_means_ = np.array([math.log(dose[X[:, 0] == c].mean()) for c in self.codes_])
        self.overall_log_mean_ = math.log(dose.mean())
        return self

    def predict(self, X):
        check_is_fitted(self, "log_means_")
        X = np.asarray(X, dtype=float)
        out = np.full(len(X), self.overall_log_mean_)
        for code, value in zip(self.codes_, self.log_means_):
            out[X[:, 0] == code] = value
        return out


class MixedEffectsRegressor(RegressorMixin, BaseEstimator):
    """Fixed effects by any regressor plus a random intercept per patient, fitted by EM (MERF).

    A new patient's random effect is unknown, so predictions use the fixed effects only; the random intercept
    keeps patients with many lesions from dominating the fixed-effects fit.
    """

    def __init__(self, fixed_effects=None, max_iter: int = 8):
        self.fixed_effects = fixed_effects
        self.max_iter = max_iter

    def fit(self, X, y, groups=None):
        y = np.asarray(y, dtype=float)
        groups = np.asarray(groups if groups is not None else np.arange(len(y)))
        labels, inverse = np.unique(groups, return_inverse=True)
        counts = np.bincount(inverse)
        b = np.zeros(len(labels))
        sigma_b2, sigma_e2 = np.var(y) * 0.1, np.var(y) * 0.9
        for _ in range(self.max_iter):
            model = clone(self.fixed_effects).fit(X, y - b[inverse])
            residual = y - model.predict(X)
            shrink = sigma_b2 / (sigma_b2 + sigma_e2 / counts)
            b = shrink * np.bincount(inverse, weights=residual) / counts
            within = residual - b[inverse]
            sigma_e2 = max(float(np.mean(within**2)), 1e-6)
            sigma_b2 = max(float(np.mean(b**2 + shrink * sigma_e2 / counts)), 1e-6)
        self.fixed_effects_ = model
        self.sigma_b2_, self.sigma_e2_ = sigma_b2, sigma_e2
        return self

    def predict(self, X):
        check_is_fitted(self, "fixed_effects_")
        return self.fixed_effects_.predict(X)


def _trees(random_state: int = 0) -> HistGradientBoostingRegressor:
    return HistGradientBoostingRegressor(max_iter=300, learning_rate=0.05, max_leaf_nodes=15, min_samples_leaf=15,
                                         l2_regularization=1.0, random_state=random_state)


CANDIDATES = ("population_mean", "linear_uptake", "tree_ensemble", "mixed_effects")


@dataclass(frozen=True)
class CandidateSpec:
    name: str
    log_features: bool

    def build(self, n_features: int, select_k: int | None = None):
        """The estimator; ``select_k`` puts univariate selection of k features in front of the trees (used with
        radiomics: hundreds of correlated features)."""
        if self.name == "population_mean":
            return PopulationMeanRegressor()
        if self.name == "linear_uptake":
            return Pipeline([
                ("impute", SimpleImputer(strategy="median", keep_empty_features=True)),
                ("scale", StandardScaler()),
                ("select", SelectKBest(f_regression, k=min(15, n_features))),
                ("ridge", RidgeCV(alphas=np.logspace(-3, 3, 13))),
            ])
        if self.name in ("tree_ensemble", "mixed_effects"):
            trees = _trees()
            if select_k is not None:
                trees = Pipeline([
                    ("impute", SimpleImputer(strategy="median", keep_empty_features=True)),
                    ("select", SelectKBest(f_regression, k=min(select_k, n_features))),
                    ("trees", trees),
                ])
            return MixedEffectsRegressor(trees) if self.name == "mixed_effects" else trees
        raise ValueError(self.name)


SPECS = {name: CandidateSpec(name, log_features=name in ("linear_uptake",)) for name in CANDIDATES}


class DoseModel(RegressorMixin, BaseEstimator):
    """Gy/GBq for one model group, from a feature table (pandas DataFrame) of that group's segments."""

    def __init__(self, group: str = "kidney", candidate: str = "tree_ensemble", feature_set: str = "uptake"):
        self.group = group
        self.candidate = candidate
        self.feature_set = feature_set

    def _matrix(self, table: pd.DataFrame) -> np.ndarray:
        if self.candidate == "population_mean":
            codes = table["structure_type"].map({t: i for i, t in enumerate(GROUP_STRUCTURE_TYPES[self.group])})
            return codes.to_numpy(dtype=float)[:, None]
        log_features = LOG_FEATURES if SPECS[self.candidate].log_features else ()
        return design_matrix(table, self.features_in_, log_features)

    def fit(self, table: pd.DataFrame, dose_gy_per_gbq, groups=None):
        if self.group not in GROUP_STRUCTURE_TYPES or self.candidate not in SPECS or \
                self.feature_set not in FEATURE_SETS:
            raise ValueError(f"unknown group/candidate/feature set {self.group}/{self.candidate}/{self.feature_set}")
        self.features_in_ = group_features(self.group)
        if self.feature_set == "radiomics":
            extra = radiomics_columns(table)
            if not extra:
                raise InputError("the radiomics feature set was asked for but the feature table has no radiomics "
                                 "columns; install psmadose[radiomics] and recompute features")
            self.features_in_ = self.features_in_ + extra
        X = self._matrix(table)
        y = np.log(np.asarray(dose_gy_per_gbq, dtype=float))
        select_k = 40 if self.feature_set == "radiomics" else None
        estimator = SPECS[self.candidate].build(X.shape[1], select_k)
        if isinstance(estimator, MixedEffectsRegressor):
            estimator.fit(X, y, groups=groups)
        else:
            estimator.fit(X, y)
        self.estimator_ = estimator
        return self

    def predict(self, table: pd.DataFrame) -> np.ndarray:
        check_is_fitted(self, "estimator_")
        return np.exp(self.estimator_.predict(self._matrix(table)))


def select_group(table: pd.DataFrame, group: str) -> pd.DataFrame:
    return table[table["structure_type"].isin(GROUP_STRUCTURE_TYPES[group])].reset_index(drop=True)


class DoseModelSet:
    """The fitted models of all groups plus what prediction needs besides them: the interval calibration
    (``psmadose.intervals``, from patient-grouped out-of-fold residuals) and the training domain
    (``psmadose.domain``)."""

    def __init__(self, models: dict, intervals: dict, domain: dict, feature_families: list,
                 population_means: dict | None = None):
        self.models = models  # group -> DoseModel
        self.population_means = population_means or {}  # structure type -> training mean Gy/GBq (baseline)
        self.intervals = intervals  # group -> intervals.calibrate(...) result
        self.domain = domain  # group -> domain.training_domain(...) result
        self.feature_families = feature_families

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
        return pd.concat(out, ignore_index=True)


def domain_features(group: str) -> list[str]:
    """Features the applicability domain checks: the group's features without tracer/structure indicators."""
    return [f for f in group_features(group) if not f.startswith(("is_", "tracer_"))]


def training_domain(table: pd.DataFrame, group: str) -> dict:
    rows = select_group(table, group)
    return _training_domain(rows, domain_features(group), LOG_FEATURES, GROUP_STRUCTURE_TYPES[group])
