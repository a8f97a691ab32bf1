"""Applicability domain: is a segment like the data the model was trained on?

Three checks, each giving a reason a person can read (an empty list means in domain):

1. **Tracer**: the PET tracer must be one the training data contained.
2. **Ranges**: every feature inside its training range (5 % margin of the range); a feature missing (NaN)
   where training always had it, e.g. no liver segment, is a reason too.
3. **Multivariate**: the Mahalanobis distance of the segment's feature vector from the training segments of
   the same structure type. Features are those of the model group (log of the strictly positive skewed
   ones, ``model.LOG_FEATURES``; no tracer or structure indicators), standardised, with a Ledoit-Wolf
   shrunk covariance (stable with ~30 features and a few hundred organs). This catches a combination the
   training data never showed although each value alone is inside its range (a small kidney with a huge
   total uptake). The threshold is the 99th percentile of *out-of-fold* distances: the covariance is
   fitted on 4/5 of the training patients and the distances measured on the held-out 1/5 (GroupKFold by
   patient), so about 1 % of new in-distribution segments are flagged, not more because the training rows
   were their own reference. The reason names the features that contribute most to the distance.

Only the mean, scale and precision matrix are stored (no training rows), so a site model does not carry
its patients' feature vectors.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

RANGE_MARGIN = 0.05  # fraction of the training range tolerated on either side
MAHALANOBIS_LEVEL = 0.99  # quantile of out-of-fold training distances used as the threshold
MAHALANOBIS_MIN_ROWS = 50  # fewer training segments of a type: no multivariate check for it
_TOP_CONTRIBUTIONS = 3
MULTIVARIATE_REASON = "unusual combination of features"  # how a multivariate flag's reason starts
# What to check when a feature is out of range, where a likely cause is known.
FEATURE_HINTS = {
    "suv_tissue": "implausible uptake for a {structure_type}: check that the PET is in SUVbw (not Bq/mL or kBq/mL), "
                  "the patient weight, and that the segment outlines the organ",
    "suv_tissue_to_max": "the {structure_type} segment is much smaller than the uptake around it (or drawn beside "
                         "it): its uptake cannot be measured at this PET resolution; draw the whole structure",
}


def log_positive(values: np.ndarray) -> np.ndarray:
    """Natural log of strictly positive values; NaN elsewhere (for the skewed features in LOG_FEATURES)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.log(np.where(values > 0, values, np.nan))


def domain_matrix(rows: pd.DataFrame, features: list[str], log_features) -> np.ndarray:
    columns = []
    for name in features:
        values = rows[name].to_numpy(dtype=float) if name in rows.columns else np.full(len(rows), np.nan)
        columns.append(log_positive(values) if name in log_features else values)
    return np.column_stack(columns) if columns else np.empty((len(rows), 0))


def _fit_mahalanobis(matrix: np.ndarray) -> dict:
    """Centre, scale and shrunk precision of standardised features (NaN filled with the training median)."""
    from sklearn.covariance import LedoitWolf

    median = np.nanmedian(matrix, axis=0)
    median = np.where(np.isfinite(median), median, 0.0)
    filled = np.where(np.isnan(matrix), median, matrix)
    mean, scale = filled.mean(axis=0), filled.std(axis=0)
    keep = scale > 1e-9 * np.maximum(1.0, np.abs(mean))
    z = (filled[:, keep] - mean[keep]) / scale[keep]
    precision = LedoitWolf().fit(z).precision_
    return {"keep": keep, "median": median, "mean": mean[keep], "scale": scale[keep], "precision": precision}


def _standardise(fit: dict, matrix: np.ndarray) -> np.ndarray:
    filled = np.where(np.isnan(matrix), fit["median"], matrix)
    return (filled[:, fit["keep"]] - fit["mean"]) / fit["scale"]


def _distances(fit: dict, matrix: np.ndarray) -> np.ndarray:
    z = _standardise(fit, matrix)
    return np.sqrt(np.maximum(np.einsum("ij,jk,ik->i", z, fit["precision"], z), 0.0))


def mahalanobis_domain(rows: pd.DataFrame, features: list[str], log_features, n_splits: int = 5) -> dict | None:
    """The multivariate check for one structure type's training rows, or None with too few rows/patients."""
    from sklearn.model_selection import GroupKFold

    matrix = domain_matrix(rows, features, log_features)
    groups = rows["case_id"].to_numpy()
    if len(rows) < MAHALANOBIS_MIN_ROWS or len(set(groups)) < n_splits:
        return None
    held_out = np.empty(len(rows))
    for train_idx, test_idx in GroupKFold(n_splits=n_splits).split(matrix, groups=groups):
        held_out[test_idx] = _distances(_fit_mahalanobis(matrix[train_idx]), matrix[test_idx])
    fit = _fit_mahalanobis(matrix)
    return {"features": [f for f, k in zip(features, fit["keep"]) if k], "all_features": list(features),
            "keep": fit["keep"], "median": fit["median"], "mean": fit["mean"], "scale": fit["scale"],
            "precision": fit["precision"], "level": MAHALANOBIS_LEVEL,
            "threshold": float(np.quantile(held_out, MAHALANOBIS_LEVEL)), "n": len(rows)}


def mahalanobis_reasons(check: dict, rows: pd.DataFrame, log_features) -> list[str]:
    """One reason string per row ('' when within the threshold)."""
    matrix = domain_matrix(rows, check["all_features"], log_features)
    z = _standardise(check, matrix)
    terms = z * (z @ check["precision"])  # per-feature terms; they sum to the squared distance
    distance = np.sqrt(np.maximum(terms.sum(axis=1), 0.0))
    out = []
    for d, row_terms in zip(distance, terms):
        if d <= check["threshold"]:
            out.append("")
            continue
        top = [check["features"][j] for j in np.argsort(-row_terms)[:_TOP_CONTRIBUTIONS] if row_terms[j] > 0]
        out.append(f"{MULTIVARIATE_REASON}: Mahalanobis distance {d:.1f} beyond {check['threshold']:.1f} "
                   f"(the {100 * check['level']:.0f}th percentile of held-out training patients); largest "
                   f"contributions: {', '.join(top)}")
    return out


def training_domain(rows: pd.DataFrame, features: list[str], log_features, structure_types) -> dict:
    """Tracers, feature ranges, features seen missing and a multivariate check per structure type."""
    ranges, nan_seen = {}, []
    for feature in features:
        values = rows[feature].to_numpy(dtype=float)
        finite = values[np.isfinite(values)]
        if len(finite) < len(values):
            nan_seen.append(feature)
        if len(finite):
            ranges[feature] = [float(finite.min()), float(finite.max())]
    tracers = sorted(c[len("tracer_"):] for c in rows.columns if c.startswith("tracer_") and (rows[c] == 1.0).any())
    multivariate = {}
    for structure_type in structure_types:
        subset = rows[rows["structure_type"] == structure_type]
        check = mahalanobis_domain(subset, features, log_features)
        if check is not None:
            multivariate[structure_type] = check
    return {"tracers": tracers, "ranges": ranges, "nan_seen": nan_seen, "multivariate": multivariate}


def _row_tracer(row: pd.Series) -> str | None:
    return next((c[len("tracer_"):] for c in row.index if c.startswith("tracer_") and row[c] == 1.0), None)


def univariate_reasons(domain: dict, row: pd.Series) -> list[str]:
    reasons = []
    tracer = _row_tracer(row)
    if tracer is not None and tracer not in domain["tracers"]:
        reasons.append(f"PET tracer {tracer} not in the training data ({', '.join(domain['tracers'])})")
    for feature, (low, high) in domain["ranges"].items():
        value = row.get(feature, math.nan)
        if value is None or (isinstance(value, float) and math.isnan(value)):
            if feature not in domain["nan_seen"]:
                reasons.append(f"{feature} missing (its reference organ or CT is not segmented/given)")
            continue
        margin = RANGE_MARGIN * (high - low)
        if value < low - margin or value > high + margin:
            reason = f"{feature} = {value:.3g} outside the training range {low:.3g}-{high:.3g}"
            if feature in FEATURE_HINTS:
                reason += " (" + FEATURE_HINTS[feature].format(structure_type=row.get("structure_type", "structure")) \
                    + ")"
            reasons.append(reason)
    return reasons


def domain_reasons(domain: dict, rows: pd.DataFrame, log_features) -> list[list[str]]:
    """Reasons per row of ``rows`` (one model group's segments); an empty list means in domain."""
    reasons = [univariate_reasons(domain, row) for _, row in rows.iterrows()]
    for structure_type, check in domain.get("multivariate", {}).items():
        selection = np.flatnonzero((rows["structure_type"] == structure_type).to_numpy())
        if len(selection) == 0:
            continue
        for i, reason in zip(selection, mahalanobis_reasons(check, rows.iloc[selection], log_features)):
            if reason:
                reasons[i].append(reason)
    return reasons


# A PET in the wrong units (kBq/mL, Bq/mL) or an SUV from a wrong weight scales *every* organ alike. One organ
# far from typical is biology; all of them together by the same factor is a unit or calibration problem.
SCALE_ORGANS = ("kidney", "parotid", "submandibular", "liver", "spleen")
SCALE_QUANTILES = (0.001, 0.999)  # per-case scale factors of training patients outside these are flagged
UPTAKE_FEATURE = "suv_tissue"


def tracer_of(rows: pd.DataFrame) -> np.ndarray:
    """The PET tracer of each row from its one-hot ``tracer_*`` columns ('' when none is set)."""
    tracer = np.full(len(rows), "", dtype=object)
    for column in (c for c in rows.columns if c.startswith("tracer_")):
        tracer[rows[column].to_numpy(dtype=float) == 1.0] = column[len("tracer_"):]
    return tracer


def _log_scale_per_case(reference: dict, rows: pd.DataFrame) -> pd.Series:
    """Median over a case's organ segments of ln(uptake / training median of its type and tracer): a unit error
    moves every organ, one failing organ (a non-functioning kidney) does not move the median."""
    keys = [f"{t}|{tr}" for t, tr in zip(rows["structure_type"], tracer_of(rows))]
    values = rows[UPTAKE_FEATURE].to_numpy(dtype=float)
    logs = [math.log(v) - reference[k] if k in reference and v > 0 else math.nan for k, v in zip(keys, values)]
    frame = pd.DataFrame({"case_id": rows["case_id"].to_numpy(), "log": logs}).dropna()
    counts = frame.groupby("case_id")["log"].count()
    return frame.groupby("case_id")["log"].median()[counts >= 2]


def uptake_scale_reference(table: pd.DataFrame) -> dict:
    """Training medians of ln uptake per organ type and tracer, and the range of per-case scale factors."""
    organs = table[table["structure_type"].isin(SCALE_ORGANS) & (table[UPTAKE_FEATURE] > 0)]
    keys = [f"{t}|{tr}" for t, tr in zip(organs["structure_type"], tracer_of(organs))]
    medians = pd.Series(np.log(organs[UPTAKE_FEATURE].to_numpy(dtype=float))).groupby(keys).median()
    reference = {str(k): float(v) for k, v in medians.items()}
    scales = _log_scale_per_case(reference, organs)
    if len(scales) < 20:
        return {}
    low, high = np.quantile(scales.to_numpy(), SCALE_QUANTILES)
    return {"medians": reference, "log_limits": [float(low), float(high)], "n_cases": int(len(scales))}


def uptake_scale_reason(reference: dict, rows: pd.DataFrame) -> str:
    """'' or a reason when the organ uptakes of one case are all scaled beyond what training patients showed."""
    if not reference or UPTAKE_FEATURE not in rows.columns:
        return ""
    scales = _log_scale_per_case(reference["medians"], rows[rows["structure_type"].isin(SCALE_ORGANS)])
    if scales.empty:
        return ""
    log_scale = float(scales.iloc[0])
    low, high = reference["log_limits"]
    if low <= log_scale <= high:
        return ""
    n = int(rows["structure_type"].isin(SCALE_ORGANS).sum())
    return (f"every organ's PET uptake is {math.exp(log_scale):.2g} x the training median for its tracer ({n} organ "
            f"segments; training patients {math.exp(low):.2g}-{math.exp(high):.2g} x): the PET may not be in SUVbw "
            "(kBq/mL or Bq/mL?), or the weight or injected activity behind the SUV may be wrong")
