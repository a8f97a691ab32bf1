"""Every parameter of the virtual-patient simulator, in one table, with its source.

``source`` cites the published figure (see shared REFERENCES.md of the project); ``assumption`` marks a value
chosen by us where no figure was available to the team: those are plausible, documented, and the first
candidates to revisit. Distributions: ``median`` and ``log_sd`` describe a log-normal (log_sd is the SD of
the natural log); ``mean``/``sd`` a normal.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Param:
    value: float
    unit: str
    source: str
    spread: float = 0.0  # log_sd for log-normal parameters, sd for normal ones
    note: str = ""


ASSUMPTION = "assumption (no published figure at hand; plausible value, revisit)"

P: dict[str, Param] = {
    # --- Lu-177 physics: NOT in this table on purpose, read from ICRP-107 (psmadose.lu177). ---
    # --- Patients ---
    "age_years": Param(71, "years", "typical mCRPC trial population (VISION median age 70-71)", 7),
    "weight_kg": Param(82, "kg", "contract example; adult male", 0.16),
    "height_cm": Param(176, "cm", "adult male", 7),
    "egfr_ml_min_1_73m2": Param(75, "mL/min/1.73m2", "contract example; mCRPC cohorts", 0.25),
    "hemoglobin_g_dl": Param(12.3, "g/dL", "mCRPC cohorts (mild anaemia)", 1.3),
    "ldh_u_l": Param(230, "U/L", "mCRPC cohorts", 0.3),
    "alp_u_l": Param(110, "U/L", "mCRPC cohorts; rises with bone burden", 0.35),
    # PSA from tumour burden: log PSA = log(psa_per_ml_tumour * TTV) + noise (total tumour dose vs PSA
    # r = -0.57 in REFERENCES emerges through the tumour sink).
    "psa_ng_ml_per_ml_tumour": Param(3.0, "ng/mL per mL", ASSUMPTION, 0.6),
    # --- Disease burden ---
    "n_lesions": Param(7, "lesions", "PSMA-PET mCRPC cohorts (median several, heavy tail)", 0.9,
                       "log-normal count, at least 1, at most 30"),
    "lesion_volume_ml": Param(3.5, "mL", "REFERENCES: lesions ~0.5-100 mL", 1.1,
                              "log-normal, truncated to 0.5-100 mL"),
    "bone_lesion_fraction": Param(0.6, "fraction", "mCRPC: bone predominant, nodal second"),
    # --- Normal-organ PSMA PET uptake, 18F-DCFPyL SUVmean (REFERENCES) with between-patient spread ---
    "suv_kidney": Param(20.0, "SUV", "REFERENCES: 18F-DCFPyL normal-organ SUVmean", 0.22),
    "suv_parotid": Param(9.0, "SUV", "REFERENCES: 18F-DCFPyL normal-organ SUVmean", 0.4),
    "suv_submandibular": Param(9.5, "SUV", "REFERENCES: 18F-DCFPyL normal-organ SUVmean", 0.4),
    "suv_lacrimal": Param(6.5, "SUV", "REFERENCES: 18F-DCFPyL normal-organ SUVmean", 0.3),
    "suv_liver": Param(5.0, "SUV", "REFERENCES: 18F-DCFPyL liver SUVmean 5.0, CoV ~14%", 0.14),
    "suv_spleen": Param(4.0, "SUV", ASSUMPTION, 0.25),
    "suv_bladder": Param(25.0, "SUV", ASSUMPTION + "; urinary excretion of 18F-DCFPyL", 0.6),
    "suv_blood_pool": Param(1.5, "SUV", ASSUMPTION, 0.2),
    "suv_marrow": Param(1.2, "SUV", ASSUMPTION, 0.2),
    "suv_soft_tissue": Param(0.5, "SUV", ASSUMPTION, 0.2),
    "suv_lung": Param(0.3, "SUV", ASSUMPTION, 0.2),
    # Lesion PSMA expression: patient-level log-mean and lesion-level spread (between and within patients).
    "suv_lesion": Param(12.0, "SUV", "PSMA-PET lesion SUVmean in mCRPC selected for RLT (VISION: SUVmax>liver)",
                        0.45, "patient-level log-normal"),
    "suv_lesion_within_patient_log_sd": Param(0.45, "log", ASSUMPTION),
    "lesion_texture_log_sd": Param(0.25, "log", ASSUMPTION + "; intra-lesion heterogeneity"),
    "lesion_necrosis_volume_ml": Param(20.0, "mL", ASSUMPTION + "; lesions above this get a cold core"),
    "lesion_uptake_time_exponent": Param(0.3, "-", ASSUMPTION + "; lesion SUV rises between 1 and 2 h"),
    # Tumour sink (Gafita 2022: top tumour-volume quintile has lower normal-organ uptake; REFERENCES: kidney
    # dose vs total tumour volume r = -0.58): factor = (1 + TTV / v_half) ** -exponent.
    "sink_v_half_ml": Param(60.0, "mL", "calibrated to REFERENCES kidney dose vs TTV r = -0.58"),
    "sink_exponent_pet": Param(0.3, "-", "calibrated to REFERENCES kidney dose vs TTV r = -0.58"),
    "sink_exponent_therapy_extra": Param(0.15, "-", ASSUMPTION + "; therapy ligand mass saturates more"),
    # Lesions share the injected ligand: mean tumour dose falls with burden (REFERENCES: total tumour dose vs
    # PSA r = -0.57, PSA tracking tumour volume).
    "sink_exponent_tumour": Param(0.4, "-", "calibrated to REFERENCES tumour dose vs PSA r = -0.57"),
    # --- Tracers: contrast relative to 18F-DCFPyL, resolution and noise ---
    "tracer_fraction_dcfpyl": Param(0.6, "fraction", ASSUMPTION),
    "tracer_fraction_psma1007": Param(0.2, "fraction", ASSUMPTION),
    "tracer_fraction_ga68": Param(0.2, "fraction", ASSUMPTION),
    "fwhm_mm_18f": Param(6.5, "mm", "REFERENCES/issue: PET resolution ~6-7 mm FWHM"),
    "fwhm_mm_68ga": Param(7.5, "mm", ASSUMPTION + "; longer positron range of Ga-68"),
    "noise_cov_liver_18f": Param(0.12, "CoV", "REFERENCES: liver CoV ~14% (incl. biological)"),
    "noise_cov_liver_68ga": Param(0.17, "CoV", ASSUMPTION + "; fewer counts for Ga-68"),
    # --- 177Lu-PSMA-617 therapy, cycle 1 ---
    # Effective half-lives, medians and log-normal spread (Kurth 2018 / AAPM 2026 abstract in REFERENCES).
    "teff_kidney_h": Param(35.5, "h", "REFERENCES: kidney median 35.5 h", 0.15),
    "teff_parotid_h": Param(42.2, "h", "REFERENCES: parotid median 42.2 h", 0.18),
    "teff_submandibular_h": Param(42.2, "h", "REFERENCES parotid value used; " + ASSUMPTION, 0.18),
    "teff_lacrimal_h": Param(42.2, "h", "REFERENCES parotid value used; " + ASSUMPTION, 0.25),
    "teff_tumour_h": Param(55.0, "h", ASSUMPTION + "; longer than whole body 40.5 h (REFERENCES)", 0.2),
    "teff_renal_function_exponent": Param(-0.1, "-", ASSUMPTION + "; slower whole-body clearance at low eGFR"
                                          " (kidney Teff itself did not correlate with CrCl, REFERENCES)"),
    # PET-to-therapy discordance: multiplicative log-normal noise on the Lu-177 uptake not seen on PET.
    # Tumour SUV on PET vs 177Lu r ~0.9, organ SUV vs dose r ~0.6 (REFERENCES).
    "discordance_kidney_log_sd": Param(0.12, "log", "calibrated to REFERENCES organ SUV vs dose r ~0.6"),
    "discordance_salivary_log_sd": Param(0.15, "log", "calibrated to REFERENCES organ SUV vs dose r ~0.6"),
    "discordance_tumour_log_sd": Param(0.2, "log", "calibrated to REFERENCES tumour PET vs 177Lu r ~0.9"),
    # Target population doses (Gy/GBq) the Lu/PET uptake ratios are calibrated to.
    "dose_kidney_gy_per_gbq": Param(0.55, "Gy/GBq", "REFERENCES: Ells 2024 meta-analysis ~0.55 (PSMA-617)"),
    "dose_parotid_gy_per_gbq": Param(0.6, "Gy/GBq", "REFERENCES: between Peters 2022 0.39 and Ells 2024 0.79"),
    "dose_submandibular_gy_per_gbq": Param(0.5, "Gy/GBq", ASSUMPTION + "; a little below parotid"),
    "dose_lacrimal_gy_per_gbq": Param(1.5, "Gy/GBq", ASSUMPTION + "; lacrimal dose per GBq above salivary"),
    "dose_tumour_gy_per_gbq": Param(3.5, "Gy/GBq", "REFERENCES: Peters 2022 3.25 +- 3.19; Volter 2021 4.0-10.2"),
    "egfr_kidney_uptake_exponent": Param(-0.15, "-", ASSUMPTION + "; reduced renal function, higher dose"),
    # --- CT (HU) ---
    "hu_soft_tissue": Param(40, "HU", "standard CT values", 12),
    "hu_fat": Param(-100, "HU", "standard CT values", 12),
    "hu_lung": Param(-820, "HU", "standard CT values", 30),
    "hu_bone": Param(550, "HU", "standard CT values (cortical+trabecular mix)", 60),
    "hu_kidney": Param(35, "HU", "standard CT values (non-contrast)", 12),
    "hu_liver": Param(55, "HU", "standard CT values (non-contrast)", 12),
    "hu_gland": Param(20, "HU", "standard CT values (parotid is fatty)", 12),
    "hu_urine": Param(8, "HU", "standard CT values", 10),
    "hu_air": Param(-1000, "HU", "definition of HU"),
    # --- Post-therapy SPECT ---
    "spect_fwhm_mm": Param(12.0, "mm", "issue: SPECT resolution ~10-15 mm"),
    "spect_noise_cov": Param(0.15, "CoV", ASSUMPTION),
}


def table_rows() -> list[tuple[str, float, float, str, str]]:
    return [(name, p.value, p.spread, p.unit, p.source) for name, p in P.items()]


# PET uptake relative to 18F-DCFPyL, by tracer and tissue. 18F-PSMA-1007 clears mainly through the liver
# (high liver/spleen, little urine); 68Ga-PSMA-11 shows higher kidney and salivary SUVs. All values:
# ASSUMPTION, informed by the qualitative biodistribution literature; revisit with published SUV tables.
TRACER_RELATIVE_UPTAKE: dict[str, dict[str, float]] = {
    "18F-DCFPyL": {},
    "18F-PSMA-1007": {"liver": 2.3, "spleen": 2.5, "bladder": 0.15, "kidney": 0.9, "parotid": 1.2,
                      "submandibular": 1.2, "lacrimal": 1.1, "tumour": 1.1},
    "68Ga-PSMA-11": {"kidney": 1.5, "parotid": 1.5, "submandibular": 1.5, "lacrimal": 1.3, "bladder": 1.3,
                     "tumour": 0.85, "blood_pool": 1.2},
}
TRACER_UPTAKE_TIME_MIN = {"18F-DCFPyL": (120, 15), "18F-PSMA-1007": (100, 15), "68Ga-PSMA-11": (60, 8)}

# 177Lu-PSMA-617 in tissues that are not dose targets (rendered into SPECT only): SUV-equivalent at t=0 and
# effective half-life. Liver/spleen/marrow half-lives: REFERENCES (medians); SUV-equivalents: ASSUMPTION.
LU_BACKGROUND: dict[str, tuple[float, float]] = {
    "liver": (1.2, 22.9), "spleen": (1.5, 16.8), "marrow": (0.3, 32.0), "blood_pool": (1.0, 8.0),
    "soft_tissue": (0.3, 8.0), "lung": (0.2, 15.1), "bladder": (8.0, 3.0),
}

# Domain randomisation: how sites differ in forming and contouring images (render.Imaging). None of these
# changes a structure's true uptake or dose, so a model trained across them cannot use them. Ranges:
IMAGING_RANGES: dict = {
    # Reconstructed whole-body PET resolution, 18F and 68Ga, old and new scanners and reconstructions (issue 11:
    # PSF 4-9 mm; EARL 1/2 harmonisation targets span ~5-8 mm).
    "fwhm_mm": (4.0, 9.0),
    # Noise level x0.5..x2 around the tracer's liver CoV (short/long frames, counts, reconstruction): assumption.
    "noise_scale": (0.5, 2.0),
    "noise_grain_voxels": (0.5, 1.5),  # noise texture (filtering, iterations): assumption
    # PET voxels: 3-5 mm in plane (2 mm only in the robustness check, for simulation time), 2-5 mm slices.
    "voxel_in_plane_mm": (3.0, 5.0),
    "voxel_slice_mm": (2.0, 5.0),
    # Kidney cortex/medulla: PSMA ligands bind in the proximal tubules of the cortex; medulla/cortex contrast on
    # PSMA PET is visible but varies with resolution and timing: assumption.
    "kidney_medulla_ratio": (0.35, 1.0),
    "gland_lobular_log_sd": (0.0, 0.3),  # lobular salivary/lacrimal glands: assumption
    # Organs drawn on CT: one voxel loose / exact / one voxel tight (inter-observer variation): assumption.
    "organ_contour_voxels_p": (0.2, 0.6, 0.2),
    # Lesions: half drawn exactly (e.g. on CT/fused), half thresholded on PET at 40-50 % of SUVmax (common
    # fixed-threshold practice, e.g. 41 % in EANM tumour imaging guideline, Boellaard 2015).
    "lesion_threshold_p": 0.5,
    "lesion_threshold": (0.40, 0.50),
    "ct_contrast_p": 0.3,  # share of contrast-enhanced CTs: assumption
}
