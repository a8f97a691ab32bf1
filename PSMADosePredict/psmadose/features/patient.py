"""Per-patient features: tumour burden, reference-organ uptake and clinical covariates."""

from __future__ import annotations

import math

import numpy as np

from ..clinical import TRACERS, Clinical

REFERENCE_ORGANS = ("kidney", "parotid", "submandibular", "liver", "spleen")


def burden_features(rows: list[dict]) -> dict[str, float]:
    """Tumour burden and reference-organ SUVs from the per-segment rows of one patient."""
    tumours = [r for r in rows if r["structure_type"] == "tumour"]
    features = {
        "n_lesions": float(len(tumours)),
        "total_tumour_volume_ml": float(sum(r["volume_ml"] for r in tumours)),
        "total_lesion_uptake_suv_ml": float(sum(r["total_uptake_suv_ml"] for r in tumours)),
    }
    features["tumour_suv_mean_patient"] = (features["total_lesion_uptake_suv_ml"]
                                           / features["total_tumour_volume_ml"]) if tumours else math.nan
    for organ in REFERENCE_ORGANS:
        organ_rows = [r for r in rows if r["structure_type"] == organ]
        if organ_rows:
            volume = sum(r["volume_ml"] for r in organ_rows)
            features[f"{organ}_suv_mean_patient"] = sum(r["suv_mean"] * r["volume_ml"] for r in organ_rows) / volume
        else:
            features[f"{organ}_suv_mean_patient"] = math.nan
    return features


def ratio_features(row: dict, burden: dict[str, float]) -> dict[str, float]:
    """Segment-to-organ SUVmean ratios (tumour-to-parotid, -kidney, -liver), NaN when the organ is missing."""
    ratios = {}
    for organ in ("parotid", "kidney", "liver"):
        reference = burden[f"{organ}_suv_mean_patient"]
        ratios[f"suv_mean_to_{organ}"] = row["suv_mean"] / reference if reference and reference > 0 else math.nan
    return ratios


def clinical_features(clinical: Clinical) -> dict[str, float]:
    features = {
        "age_years": float(clinical.age_years),
        "weight_kg": float(clinical.weight_kg),
        "height_cm": float(clinical.height_cm),
        "bsa_m2": clinical.bsa_m2,
        "bmi_kg_m2": clinical.bmi_kg_m2,
        "egfr_ml_min_1_73m2": float(clinical.egfr_ml_min_1_73m2),
        "log_psa_ng_ml": float(np.log10(clinical.psa_ng_ml + 0.01)),
        "alp_u_l": float(clinical.alp_u_l),
        "ldh_u_l": float(clinical.ldh_u_l),
        "hemoglobin_g_dl": float(clinical.hemoglobin_g_dl),
        "prior_taxane_lines": float(clinical.prior_taxane_lines),
        "prior_arpi": float(clinical.prior_arpi),
        "pet_uptake_time_min": float(clinical.pet_uptake_time_min),
    }
    for tracer in TRACERS:
        features[f"tracer_{tracer}"] = float(clinical.pet_tracer == tracer)
    return features
