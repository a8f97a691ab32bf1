"""Accuracy metrics on Gy/GBq (fractions, not percent)."""

from __future__ import annotations

import math

import numpy as np
from scipy.stats import spearmanr


def dose_metrics(reference: np.ndarray, predicted: np.ndarray) -> dict[str, float]:
    reference = np.asarray(reference, dtype=float)
    predicted = np.asarray(predicted, dtype=float)
    n = len(reference)
    if n == 0:
        return {"n": 0}
    error = predicted - reference
    ss_tot = float(np.sum((reference - reference.mean()) ** 2))
    r2 = 1.0 - float(np.sum(error**2)) / ss_tot if ss_tot > 0 else math.nan
    rho = float(spearmanr(reference, predicted)[0]) if n > 2 and np.ptp(predicted) > 0 else math.nan
    return {"n": n, "mape": float(np.mean(np.abs(error) / reference)), "mae_gy_per_gbq": float(np.mean(np.abs(error))),
            "r2": r2, "spearman": rho}


def coverage(reference: np.ndarray, low: np.ndarray, high: np.ndarray) -> float:
    reference = np.asarray(reference, dtype=float)
    return float(np.mean((reference >= low) & (reference <= high))) if len(reference) else math.nan


BOOTSTRAP_METRICS = ("mape", "mae_gy_per_gbq", "r2", "spearman")


def _weighted_ranks(values: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Average ranks of ``values`` in every resample, where row b repeats item i ``weights[b, i]`` times.

    Equal to ``scipy.stats.rankdata`` of the expanded resample (ties share their average rank), without
    materialising it: ranks follow from cumulative weights in sorted order, with ties grouped.
    """
    order = np.argsort(values, kind="stable")
    sorted_values = values[order]
    starts = np.flatnonzero(np.r_[True, sorted_values[1:] != sorted_values[:-1]])
    group_of = np.repeat(np.arange(len(starts)), np.diff(np.r_[starts, len(values)]))
    group_weight = np.add.reduceat(weights[:, order], starts, axis=1)
    before = np.cumsum(group_weight, axis=1) - group_weight
    ranks_sorted = (before + (group_weight + 1) / 2)[:, group_of]
    ranks = np.empty_like(ranks_sorted)
    ranks[:, order] = ranks_sorted
    return ranks


def _weighted_pearson(x: np.ndarray, y: np.ndarray, w: np.ndarray) -> np.ndarray:
    total = w.sum(axis=1, keepdims=True)
    dx = x - (w * x).sum(axis=1, keepdims=True) / total
    dy = y - (w * y).sum(axis=1, keepdims=True) / total
    cov = (w * dx * dy).sum(axis=1)
    var = (w * dx**2).sum(axis=1) * (w * dy**2).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(var > 0, cov / np.sqrt(np.where(var > 0, var, 1.0)), np.nan)


def bootstrap_dose_metrics(reference, predicted, patients, *, n_resamples: int = 1000, seed: int = 0,
                           baseline=None, level: float = 0.95) -> dict[str, list[float]]:
    """Patient-level (cluster) bootstrap percentile intervals of the ``dose_metrics`` of one table.

    Patients, not segments, are resampled with replacement: lesions of one patient share that patient's
    kinetics, so resampling segments would understate the uncertainty. Each resample is a vector of
    per-patient multiplicities turned into per-segment weights, so all resamples are computed at once.
    Returns ``{"mape_ci95": [lo, hi], ...}`` (plus ``baseline_mape_ci95`` when ``baseline`` is given); a
    metric undefined in too many resamples (e.g. R² with one patient) gives ``[nan, nan]``.
    """
    reference = np.asarray(reference, dtype=float)
    predicted = np.asarray(predicted, dtype=float)
    labels, patient_index = np.unique(np.asarray(patients), return_inverse=True)
    suffix = f"_ci{round(100 * level)}"
    keys = list(BOOTSTRAP_METRICS) + (["baseline_mape"] if baseline is not None else [])
    if len(reference) == 0 or len(labels) < 2:
        return {f"{k}{suffix}": [math.nan, math.nan] for k in keys}
    rng = np.random.default_rng(seed)
    drawn = rng.integers(0, len(labels), size=(n_resamples, len(labels)))
    counts = np.zeros((n_resamples, len(labels)))
    np.add.at(counts, (np.arange(n_resamples)[:, None], drawn), 1.0)
    w = counts[:, patient_index]  # (resamples, segments)
    total = w.sum(axis=1)
    error = predicted - reference
    values = {
        "mape": (w * (np.abs(error) / reference)).sum(axis=1) / total,
        "mae_gy_per_gbq": (w * np.abs(error)).sum(axis=1) / total,
    }
    mean_ref = (w * reference).sum(axis=1, keepdims=True) / total[:, None]
    ss_tot = (w * (reference - mean_ref) ** 2).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        values["r2"] = np.where(ss_tot > 0, 1.0 - (w * error**2).sum(axis=1) / np.where(ss_tot > 0, ss_tot, 1.0),
                                np.nan)
    values["spearman"] = _weighted_pearson(_weighted_ranks(reference, w), _weighted_ranks(predicted, w), w)
    if baseline is not None:
        baseline = np.asarray(baseline, dtype=float)
        values["baseline_mape"] = (w * (np.abs(baseline - reference) / reference)).sum(axis=1) / total
    tail = 100 * (1 - level) / 2
    out = {}
    for key in keys:
        finite = values[key][np.isfinite(values[key])]
        # Percentile intervals from fewer than half the resamples would describe a different population.
        if len(finite) < n_resamples / 2:
            out[f"{key}{suffix}"] = [math.nan, math.nan]
        else:
            out[f"{key}{suffix}"] = [float(v) for v in np.percentile(finite, [tail, 100 - tail])]
    return out


def bland_altman(reference, predicted) -> dict[str, dict[str, float]]:
    """Bland-Altman agreement of predicted with reference dose: bias and 95 % limits of agreement.

    ``log_ratio``: on d = ln(predicted / reference) (doses are log-normal, errors multiplicative);
    ``ratio_*`` are exp() of those, i.e. predicted/reference factors. ``gy_per_gbq``: on d = predicted -
    reference. Limits are bias +- 1.96 SD of d (sample SD, ddof=1) — Bland & Altman 1986.
    """
    reference = np.asarray(reference, dtype=float)
    predicted = np.asarray(predicted, dtype=float)
    out = {}
    for name, d in (("log_ratio", np.log(predicted / reference)), ("gy_per_gbq", predicted - reference)):
        n = len(d)
        bias = float(np.mean(d)) if n else math.nan
        sd = float(np.std(d, ddof=1)) if n > 1 else math.nan
        out[name] = {"n": n, "bias": bias, "sd": sd, "loa_low": bias - 1.96 * sd, "loa_high": bias + 1.96 * sd}
    log_ratio = out["log_ratio"]
    log_ratio.update({f"ratio_{k}": math.exp(log_ratio[k]) if math.isfinite(log_ratio[k]) else math.nan
                      for k in ("bias", "loa_low", "loa_high")})
    return out
