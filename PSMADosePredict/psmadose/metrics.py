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
