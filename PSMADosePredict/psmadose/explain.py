"""Per-prediction explanations: which features pushed a segment's predicted dose up or down.

Model-agnostic and computed at prediction time from the fitted model and its recorded training domain: for
each feature with a recorded training range, the feature alone is moved to its training median for the
segment's structure type (stored with the multivariate domain check, ``psmadose.domain``; a model without
it falls back to the midpoint of the training range, geometric for the skewed features in
``model.LOG_FEATURES``) and the segment is predicted again. The effect of the feature is

    log_effect = ln(dose with the actual value) - ln(dose with the typical value)

(positive: the segment's actual value pushed the dose up; ``factor`` = exp(log_effect)). This is a one-at-
a-time sensitivity against a "typical" training value, not a SHAP decomposition: effects need not add up
to the prediction, and correlated features (e.g. SUVmean and SUVpeak) share credit unevenly.

Why not SHAP: ``shap`` (PyPI) pulls in numba/llvmlite and a PyPI package named ``slicer`` that would
shadow 3D Slicer's own ``slicer`` module; and the bundled models wrap their trees (mixed effects,
pipelines with selection), which TreeExplainer does not take as they are.
"""

from __future__ import annotations

import html
import math

import numpy as np
import pandas as pd

from .model import LOG_FEATURES, DoseModelSet, select_group

METHOD = ("one-at-a-time perturbation: each feature moved to its training median for the structure type (the "
          "midpoint of the training range for a model without medians); "
          "log_effect = ln(predicted) - ln(predicted with the typical value)")
TOP = 3
_NEGLIGIBLE = 1e-6


def _midpoint(feature: str, low: float, high: float) -> float:
    if feature in LOG_FEATURES and low > 0:
        return math.sqrt(low * high)
    return 0.5 * (low + high)


def typical_values(domain: dict, structure_type: str, features: list[str]) -> dict:
    """Training median of each feature for the structure type, or the range midpoint without medians."""
    ranges = domain.get("ranges", {})
    check = domain.get("multivariate", {}).get(structure_type)
    medians = dict(zip(check["all_features"], check["median"])) if check else {}
    out = {}
    for feature in features:
        if feature in medians and math.isfinite(float(medians[feature])):
            value = float(medians[feature])
            out[feature] = math.exp(value) if feature in LOG_FEATURES else value  # medians stored on the log scale
        else:
            out[feature] = _midpoint(feature, *ranges[feature])
    return out


def explain_group(model, rows: pd.DataFrame, domain: dict, top: int = TOP) -> list[dict]:
    """One explanation per row of ``rows`` (segments of the model's group), in row order."""
    ranges = domain.get("ranges", {})
    features = [f for f in getattr(model, "features_in_", []) if f in ranges]
    if not features or rows.empty:
        return [{"up": [], "down": []} for _ in range(len(rows))]
    base = np.log(model.predict(rows))
    typical = {t: typical_values(domain, t, features) for t in rows["structure_type"].unique()}
    reference = pd.DataFrame([typical[t] for t in rows["structure_type"]], index=rows.index)
    # One prediction call for all (feature, row) pairs.
    perturbed = pd.concat([rows.assign(**{f: reference[f]}) for f in features], ignore_index=True)
    moved = np.log(model.predict(perturbed)).reshape(len(features), len(rows))
    effects = base[None, :] - moved
    out = []
    for i in range(len(rows)):
        items = []
        for j, feature in enumerate(features):
            value = float(rows[feature].iloc[i])
            if not math.isfinite(value) or abs(effects[j, i]) < _NEGLIGIBLE:
                continue
            items.append({"feature": feature, "value": value, "reference_value": float(reference[feature].iloc[i]),
                          "log_effect": float(effects[j, i]), "factor": float(math.exp(effects[j, i]))})
        up = sorted((x for x in items if x["log_effect"] > 0), key=lambda x: -x["log_effect"])[:top]
        down = sorted((x for x in items if x["log_effect"] < 0), key=lambda x: x["log_effect"])[:top]
        out.append({"up": up, "down": down})
    return out


def explain_predictions(model_set: DoseModelSet, table: pd.DataFrame, top: int = TOP) -> dict:
    """``{"method": ..., "segments": {segment: {"up": [...], "down": [...]}}}`` for every predicted segment."""
    segments = {}
    for group, model in model_set.models.items():
        rows = select_group(table, group)
        if rows.empty:
            continue
        domain = model_set.domain.get(group, {})
        for segment, explanation in zip(rows["segment"], explain_group(model, rows, domain, top)):
            segments[str(segment)] = explanation
    return {"method": METHOD, "segments": segments}


def _items(items: list[dict]) -> str:
    return ", ".join(f"{html.escape(x['feature'])} {x['value']:.3g} (×{x['factor']:.2f})" for x in items) or "–"


def explanations_html(explanations: dict | None) -> str:
    """A short report section: the top features that pushed each segment's dose up and down."""
    if not explanations or not explanations.get("segments"):
        return ""
    rows = "".join(f"<tr><td>{html.escape(segment)}</td><td>{_items(e['up'])}</td><td>{_items(e['down'])}</td></tr>"
                   for segment, e in explanations["segments"].items())
    return ("<h2>What drove each prediction</h2>"
            f"<p class='small'>Features that pushed the predicted Gy/GBq up or down, by the factor the prediction "
            f"changes when the feature alone is moved to its typical training value ({html.escape(METHOD)}). "
            "A description of the model, not of the patient's biology.</p>"
            f"<table><thead><tr><th>Segment</th><th>Pushed up (×factor)</th><th>Pushed down (×factor)</th></tr>"
            f"</thead><tbody>{rows}</tbody></table>")
