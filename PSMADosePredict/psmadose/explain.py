"""Per-prediction explanations: what made a segment's predicted dose higher or lower than a typical one.

The model is physics times a bounded correction (``psmadose.model``), so an explanation has two parts:

1. **Own uptake** (exact): the structure's tissue uptake enters only through the physics baseline, with
   elasticity 1; its effect is ln(SUV_tissue / typical SUV_tissue of the structure type in training).
2. **Groups of related features** (``FEATURE_GROUPS``): features that measure one thing and are correlated
   (body size: weight, height, BSA, BMI; tumour burden: lesion count, total tumour volume; disease markers:
   PSA, ALP, LDH, haemoglobin; ...) are moved *together* to their typical training values for the structure
   type, and the segment is predicted again:

       log_effect(group) = ln(predicted) - ln(predicted with the whole group at typical values)

Moving a group together never creates a combination the model has not seen (a heavy patient with a tiny BSA),
which is what made one-at-a-time effects of correlated features meaningless. Weight also enters the physics
(uptake per body mass), so "body size" includes that. Effects need not add up exactly to the prediction (the
correction may interact between groups); they describe the model, not the patient's biology.

Why not SHAP: ``shap`` (PyPI) pulls in numba/llvmlite and a PyPI package named ``slicer`` that would shadow
3D Slicer's own ``slicer`` module.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from .model import LOG_FEATURES, UPTAKE_FEATURE, DoseModelSet, select_group

FEATURE_GROUPS: dict[str, tuple[str, ...]] = {
    "own tissue uptake (physics)": (UPTAKE_FEATURE,),
    "body size": ("weight_kg", "height_cm", "bsa_m2", "bmi_kg_m2"),
    "tumour burden (sink)": ("n_lesions", "total_tumour_volume_ml"),
    "renal function": ("egfr_ml_min_1_73m2",),
    "disease markers": ("log_psa_ng_ml", "alp_u_l", "ldh_u_l", "hemoglobin_g_dl"),
    "treatment history": ("prior_taxane_lines", "prior_arpi"),
    "PET acquisition": ("pet_uptake_time_min",),
    "age": ("age_years",),
}
METHOD = ("grouped perturbation: each group of related features moved together to its training median for the "
          "structure type; log_effect = ln(predicted) - ln(predicted with the group at typical values); the "
          "structure's own uptake acts through the physics baseline with elasticity 1")
TOP = 3
_NEGLIGIBLE = 1e-3


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
        elif feature in ranges:
            out[feature] = _midpoint(feature, *ranges[feature])
    return out


def explain_group(model, rows: pd.DataFrame, domain: dict, top: int = TOP) -> list[dict]:
    """One explanation per row of ``rows`` (segments of the model's group), in row order."""
    used = set(getattr(model, "feature_names_in_", [])) | {UPTAKE_FEATURE, "weight_kg"}
    groups = {name: [f for f in features if f in used and f in rows.columns]
              for name, features in FEATURE_GROUPS.items()}
    groups = {name: features for name, features in groups.items() if features}
    if not groups or rows.empty:
        return [{"up": [], "down": []} for _ in range(len(rows))]
    all_features = sorted({f for features in groups.values() for f in features})
    typical = {t: typical_values(domain, t, all_features) for t in rows["structure_type"].unique()}
    reference = pd.DataFrame([typical[t] for t in rows["structure_type"]], index=rows.index)
    base = np.log(model.predict(rows))
    names = [name for name, features in groups.items() if all(f in reference.columns for f in features)]
    perturbed = pd.concat([rows.assign(**{f: reference[f] for f in groups[name]}) for name in names],
                          ignore_index=True)
    moved = np.log(model.predict(perturbed)).reshape(len(names), len(rows))
    effects = base[None, :] - moved
    out = []
    for i in range(len(rows)):
        items = []
        for j, name in enumerate(names):
            if not np.isfinite(effects[j, i]) or abs(effects[j, i]) < _NEGLIGIBLE:
                continue
            values = {f: float(rows[f].iloc[i]) for f in groups[name]}
            typical_row = {f: float(reference[f].iloc[i]) for f in groups[name]}
            items.append({"group": name, "features": values, "reference_values": typical_row,
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


def _describe(item: dict) -> str:
    values = ", ".join(f"{f} {v:.3g}" for f, v in item["features"].items())  # text: the template escapes it
    return f"{item['group']} ({values}; ×{item['factor']:.2f})"


def _items(items: list[dict]) -> str:
    return "; ".join(_describe(x) for x in items) or "–"


def explanations_html(explanations: dict | None) -> str:
    """A short report section: the feature groups that pushed each segment's dose up and down."""
    from .html import environment

    if not explanations or not explanations.get("segments"):
        return ""
    rows = [(segment, _items(e["up"]), _items(e["down"])) for segment, e in explanations["segments"].items()]
    return str(environment().get_template("_sections.html.j2").module.explanations(rows, METHOD))
