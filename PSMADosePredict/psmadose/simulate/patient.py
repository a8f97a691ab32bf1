"""Latent virtual patients: anatomy, PSMA expression, clinical biomarkers and 177Lu ground-truth doses.

This stage draws every random quantity of a patient and computes the reference doses; ``render.py`` turns
a patient into images. Keeping them apart lets calibration run on thousands of patients in seconds.

Dose model (per structure s, cycle 1, per injected GBq):
    C0_s   = SUVlu_s / W                        fraction of injected activity per gram at t = 0
    TIA_s  = C0_s * m_s * 1000 MBq * Teff_s/ln2 time-integrated activity per GBq (mono-exponential)
    D_s    = TIA_s * S_self(m_s)                MIRD self-dose, S from ICRP-107 electron energy (lu177.py)
with SUVlu_s = ratio_s * PSMA expression_s * sink * discordance_s. ratio_s is calibrated once so that a
median patient receives the published mean dose of the structure type (parameters.py).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np

from ..clinical import TRACERS  # noqa: E402  (one list of tracers)
from ..lu177 import decay_data, self_dose_gy, time_integrated_activity_mono_exp
from .parameters import TRACER_RELATIVE_UPTAKE, TRACER_UPTAKE_TIME_MIN, P

TISSUE_DENSITY_G_PER_ML = 1.04  # ICRU 44 soft tissue
REFERENCE_WEIGHT_KG = 82.0
REFERENCE_TTV_ML = 40.0
REFERENCE_EGFR = 75.0
DOSE_TYPES = ("tumour", "kidney", "parotid", "submandibular", "lacrimal")


@dataclass
class Structure:
    name: str
    kind: str  # tumour, kidney, parotid, submandibular, lacrimal, liver, spleen, bladder, lung, ...
    centre_mm: tuple[float, float, float]  # LPS
    semi_axes_mm: tuple[float, float, float]
    rotation: tuple[float, ...] = (1, 0, 0, 0, 1, 0, 0, 0, 1)  # row-major 3x3, body->LPS
    segmented: bool = False
    site: str = ""
    expression_suv: float = 0.0  # 18F-DCFPyL-equivalent PSMA expression (SUV at 60 min)
    pet_suv_true: float = 0.0  # true mean SUV on this patient's PET (tracer, time, sink), before PSF/noise
    lu_suv0: float = 0.0  # 177Lu uptake at t=0 as SUV-equivalent
    teff_h: float = 0.0
    discordance: float = 1.0
    dose_gy_per_gbq: float = 0.0
    oracle_gy_per_gbq: float = 0.0  # dose with the unobservable factors at their medians

    @property
    def volume_ml(self) -> float:
        a, b, c = self.semi_axes_mm
        return 4.0 / 3.0 * math.pi * a * b * c / 1000.0


@dataclass
class VirtualPatient:
    patient_id: str
    seed: int
    clinical: dict
    body: dict  # torso/head sizes in mm
    structures: list[Structure] = field(default_factory=list)
    background_suv: dict = field(default_factory=dict)  # PET SUV of unsegmented tissues

    @property
    def lesions(self) -> list[Structure]:
        return [s for s in self.structures if s.kind == "tumour"]

    @property
    def total_tumour_volume_ml(self) -> float:
        return sum(s.volume_ml for s in self.lesions)

    def to_dict(self) -> dict:
        return asdict(self)


def _lognormal(rng: np.random.Generator, name: str, scale: float = 1.0) -> float:
    p = P[name]
    return float(p.value * scale * math.exp(rng.normal(0.0, p.spread)))


def _ellipsoid_axes(rng: np.random.Generator, volume_ml: float, elongation: float = 0.25) -> tuple:
    ratios = np.exp(rng.normal(0.0, elongation, 3))
    ratios /= np.prod(ratios) ** (1 / 3)
    radius = (volume_ml * 1000.0 * 3 / (4 * math.pi)) ** (1 / 3)
    return tuple(float(r) for r in radius * ratios)


def _random_rotation(rng: np.random.Generator) -> tuple[float, ...]:
    q = rng.normal(size=4)
    q /= np.linalg.norm(q)
    w, x, y, z = q
    matrix = np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
    ])
    return tuple(float(v) for v in matrix.ravel())


def _organ(name, kind, centre, volume_ml, base_axes, rng, segmented=True, jitter_mm=6.0):
    base = np.array(base_axes, dtype=float)
    base_volume = 4.0 / 3.0 * math.pi * np.prod(base) / 1000.0
    axes = base * (volume_ml / base_volume) ** (1 / 3) * np.exp(rng.normal(0, 0.05, 3))
    centre = np.array(centre, dtype=float) + rng.normal(0, jitter_mm, 3)
    return Structure(name, kind, tuple(centre.tolist()), tuple(axes.tolist()), segmented=segmented)


# Lesion sites: (site, weight within bone/node, centre LPS mm, half-extent of the placement box mm)
BONE_SITES = (("spine", 0.55, (0, 60, 385), (12, 12, 210)),
              ("pelvis_left", 0.2, (88, 35, 170), (12, 35, 35)),
              ("pelvis_right", 0.2, (-88, 35, 170), (12, 35, 35)),
              ("sternum", 0.05, (0, -75, 520), (8, 6, 60)))
NODE_SITES = (("pelvic_left", 0.25, (60, 0, 140), (20, 25, 35)),
              ("pelvic_right", 0.25, (-60, 0, 140), (20, 25, 35)),
              ("paraaortic", 0.3, (0, 25, 300), (35, 12, 70)),
              ("mediastinal", 0.12, (0, 10, 540), (25, 25, 40)),
              ("supraclavicular", 0.08, (0, 20, 605), (65, 15, 8)))


def _place_lesion(rng, volume_ml, structures, bone_fraction):
    sites = BONE_SITES if rng.random() < bone_fraction else NODE_SITES
    weights = np.array([s[1] for s in sites])
    for _ in range(200):
        site, _, centre, extent = sites[rng.choice(len(sites), p=weights / weights.sum())]
        position = np.array(centre) + rng.uniform(-1, 1, 3) * np.array(extent)
        axes = _ellipsoid_axes(rng, volume_ml)
        radius = max(axes)
        clear = all(np.linalg.norm(position - np.array(s.centre_mm)) > radius + max(s.semi_axes_mm) + 4.0
                    for s in structures if s.segmented or s.kind in ("bladder",))
        if clear:
            return site, tuple(position.tolist()), axes
    return None


def lesion_counts_for_total(rng: np.random.Generator, n_patients: int, total: int) -> list[int]:
    """Lesions per patient (each >= 1) summing exactly to ``total``, with the cohort's heavy tail."""
    if total < n_patients:
        raise ValueError("need at least one lesion per patient")
    weights = np.exp(rng.normal(0.0, P["n_lesions"].spread, n_patients))
    extra = rng.multinomial(total - n_patients, weights / weights.sum())
    return [int(1 + e) for e in extra]


def _calibration_ratio(kind: str) -> float:
    """Lu/PET ratio giving the published mean dose to a median patient (see module docstring)."""
    expression = P[f"suv_{'lesion' if kind == 'tumour' else kind}"].value
    teff = P[f"teff_{kind}_h"].value
    sink = (1 + REFERENCE_TTV_ML / P["sink_v_half_ml"].value) ** -(
        P["sink_exponent_pet"].value + P["sink_exponent_therapy_extra"].value)
    if kind == "tumour":
        sink = (1 + REFERENCE_TTV_ML / P["sink_v_half_ml"].value) ** -P["sink_exponent_tumour"].value
    dose_per_unit = _dose_from_uptake(expression * sink, teff, REFERENCE_WEIGHT_KG, mass_g=1.0)
    return P[f"dose_{kind}_gy_per_gbq"].value / dose_per_unit


def _dose_from_uptake(lu_suv0: float, teff_h: float, weight_kg: float, mass_g: float) -> float:
    """Gy per GBq injected for a structure of mass m with uptake lu_suv0 (SUV-equivalent at t=0)."""
    fraction_per_g = lu_suv0 / (weight_kg * 1000.0)
    a0_mbq_per_gbq = fraction_per_g * mass_g * 1000.0
    tia = time_integrated_activity_mono_exp(a0_mbq_per_gbq, teff_h)
    return self_dose_gy(tia, mass_g)


def sample_patient(seed_sequence: np.random.SeedSequence, patient_id: str, *, n_lesions: int | None = None,
                   tracer: str | None = None, include_lacrimal: bool = True) -> VirtualPatient:
    rng = np.random.default_rng(seed_sequence)
    decay_data()  # fail early if the ICRP-107 data are missing

    # --- body and clinical basics ---
    weight = float(np.clip(_lognormal(rng, "weight_kg"), 50, 140))
    height = float(np.clip(rng.normal(P["height_cm"].value, P["height_cm"].spread), 155, 200))
    scale_lr = (weight / REFERENCE_WEIGHT_KG) ** 0.45
    # Organ positions are fixed in mm, so the torso shrinks less than weight alone would suggest; a thin
    # patient keeps room for kidneys and spleen posteriorly.
    body = {"torso_lr_mm": 165.0 * scale_lr ** 0.8, "torso_ap_mm": 118.0 * scale_lr ** 0.6,
            "neck_radius_mm": 60.0 * scale_lr ** 0.5, "head_axes_mm": (75.0, 92.0, 105.0),
            "fat_mm": 10.0 + 12.0 * max(0.0, weight / REFERENCE_WEIGHT_KG - 0.8)}

    if tracer is None:
        fractions = [P["tracer_fraction_dcfpyl"].value, P["tracer_fraction_psma1007"].value,
                     P["tracer_fraction_ga68"].value]
        tracer = TRACERS[rng.choice(3, p=np.array(fractions) / sum(fractions))]
    uptake_mean, uptake_sd = TRACER_UPTAKE_TIME_MIN[tracer]
    uptake_time = float(np.clip(round(rng.normal(uptake_mean, uptake_sd)), 45, 180))
    egfr = float(np.clip(_lognormal(rng, "egfr_ml_min_1_73m2"), 25, 130))

    # --- normal organs ---
    kidney_volume = float(np.clip(150 * math.exp(rng.normal(0, 0.2)), 80, 260))
    structures = [
        _organ("kidney_left", "kidney", (75, 55, 310), kidney_volume * math.exp(rng.normal(0, 0.08)),
               (28, 30, 52), rng),
        _organ("kidney_right", "kidney", (-75, 55, 290), kidney_volume * math.exp(rng.normal(0, 0.08)),
               (28, 30, 52), rng),
    ]
    parotid = 25 * math.exp(rng.normal(0, 0.25))
    submandibular = 8 * math.exp(rng.normal(0, 0.25))
    for side, sign in (("left", 1), ("right", -1)):
        structures.append(_organ(f"parotid_{side}", "parotid", (sign * 55, 5, 705),
                                 parotid * math.exp(rng.normal(0, 0.1)), (14, 22, 20), rng, jitter_mm=3))
        structures.append(_organ(f"submandibular_{side}", "submandibular", (sign * 40, -25, 672),
                                 submandibular * math.exp(rng.normal(0, 0.1)), (11, 13, 12), rng, jitter_mm=3))
        if include_lacrimal:
            structures.append(_organ(f"lacrimal_{side}", "lacrimal", (sign * 33, -60, 745),
                                     0.7 * math.exp(rng.normal(0, 0.25)), (8, 5, 4.5), rng, jitter_mm=1.5))
    structures += [
        _organ("liver", "liver", (-70, 0, 430), 1500 * math.exp(rng.normal(0, 0.2)), (85, 70, 60), rng),
        _organ("spleen", "spleen", (85, 35, 415), 200 * math.exp(rng.normal(0, 0.35)), (33, 45, 33), rng),
        _organ("bladder", "bladder", (0, -30, 95), 200 * math.exp(rng.normal(0, 0.5)), (42, 35, 33), rng,
               segmented=False),
    ]

    # --- lesions ---
    if n_lesions is None:
        n_lesions = int(np.clip(round(P["n_lesions"].value * math.exp(rng.normal(0, P["n_lesions"].spread))),
                                1, 30))
    bone_fraction = float(np.clip(rng.beta(3, 2) * P["bone_lesion_fraction"].value / 0.6, 0.05, 0.95))
    patient_expression = _lognormal(rng, "suv_lesion")
    lesions: list[Structure] = []
    attempts = 0
    while len(lesions) < n_lesions and attempts < n_lesions * 20:
        attempts += 1
        volume = float(np.clip(P["lesion_volume_ml"].value * math.exp(rng.normal(0, P["lesion_volume_ml"].spread)),
                               0.5, 100.0))
        placed = _place_lesion(rng, volume, structures + lesions, bone_fraction)
        if placed is None:
            continue
        site, centre, axes = placed
        lesion = Structure(f"lesion_{len(lesions) + 1:02d}", "tumour", centre, axes, _random_rotation(rng),
                           segmented=True, site=site)
        lesion.expression_suv = patient_expression * math.exp(
            rng.normal(0, P["suv_lesion_within_patient_log_sd"].value))
        lesions.append(lesion)
    if len(lesions) < n_lesions:
        raise RuntimeError(f"could not place {n_lesions} lesions for {patient_id}")
    structures += lesions
    ttv = sum(s.volume_ml for s in lesions)
    bone_ttv = sum(s.volume_ml for s in lesions if s.site in {b[0] for b in BONE_SITES})

    # --- clinical biomarkers correlated with burden ---
    clinical = {
        "age_years": int(np.clip(round(rng.normal(P["age_years"].value, P["age_years"].spread)), 50, 90)),
        "weight_kg": round(weight, 1),
        "height_cm": round(height, 1),
        "egfr_ml_min_1_73m2": round(egfr, 1),
        "psa_ng_ml": round(float(np.clip(P["psa_ng_ml_per_ml_tumour"].value * ttv
                                         * math.exp(rng.normal(0, P["psa_ng_ml_per_ml_tumour"].spread)),
                                         0.1, 20000)), 2),
        "alp_u_l": round(float(np.clip(P["alp_u_l"].value * (1 + bone_ttv / 50) ** 0.5
                                       * math.exp(rng.normal(0, P["alp_u_l"].spread)), 30, 5000)), 0),
        "ldh_u_l": round(float(np.clip(P["ldh_u_l"].value * (1 + ttv / 200) ** 0.3
                                       * math.exp(rng.normal(0, P["ldh_u_l"].spread)), 100, 5000)), 0),
        "hemoglobin_g_dl": round(float(np.clip(P["hemoglobin_g_dl"].value - 0.8 * math.log1p(bone_ttv / 50)
                                               + rng.normal(0, P["hemoglobin_g_dl"].spread), 7.0, 17.0)), 1),
        "prior_taxane_lines": int(rng.choice(3, p=[0.3, 0.5, 0.2])),
        "prior_arpi": bool(rng.random() < 0.9),
        "pet_tracer": tracer,
        "pet_uptake_time_min": uptake_time,
        "planned_activity_gbq": 7.4,
        "planned_cycles": int(rng.choice([4, 6], p=[0.4, 0.6])),
    }

    # --- PET uptake and 177Lu biokinetics ---
    relative = TRACER_RELATIVE_UPTAKE[tracer]
    sink_v_half = P["sink_v_half_ml"].value
    sink_pet = (1 + ttv / sink_v_half) ** -P["sink_exponent_pet"].value
    sink_extra = (1 + ttv / sink_v_half) ** -P["sink_exponent_therapy_extra"].value
    sink_tumour = (1 + ttv / sink_v_half) ** -P["sink_exponent_tumour"].value
    renal_teff = (egfr / REFERENCE_EGFR) ** P["teff_renal_function_exponent"].value
    time_factor = (uptake_time / 60.0) ** P["lesion_uptake_time_exponent"].value
    for s in structures:
        if s.kind == "tumour":
            s.pet_suv_true = s.expression_suv * relative.get("tumour", 1.0) * time_factor
        else:
            key = f"suv_{s.kind}"
            if key not in P:
                continue
            s.expression_suv = _lognormal(rng, key)
            organ_sink = sink_pet if s.kind in ("kidney", "parotid", "submandibular", "lacrimal", "liver",
                                               "spleen") else 1.0
            s.expression_suv *= organ_sink
            s.pet_suv_true = s.expression_suv * relative.get(s.kind, 1.0)
    # Paired organs share most of their patient-level expression: average the left/right draws partly.
    for kind in ("kidney", "parotid", "submandibular", "lacrimal"):
        pair = [s for s in structures if s.kind == kind]
        if len(pair) == 2:
            mean = math.sqrt(pair[0].expression_suv * pair[1].expression_suv)
            for s in pair:
                factor = (mean / s.expression_suv) ** 0.8
                s.expression_suv *= factor
                s.pet_suv_true *= factor

    background = {kind: _lognormal(rng, f"suv_{kind}") * relative.get(kind, 1.0)
                  for kind in ("soft_tissue", "lung", "marrow", "blood_pool")}
    for s in structures:
        if s.kind not in DOSE_TYPES:
            continue
        ratio = _calibration_ratio(s.kind)
        group = "tumour" if s.kind == "tumour" else ("kidney" if s.kind == "kidney" else "salivary")
        s.discordance = math.exp(rng.normal(0, P[f"discordance_{group}_log_sd"].value))
        renal_uptake = (egfr / REFERENCE_EGFR) ** P["egfr_kidney_uptake_exponent"].value if s.kind == "kidney" \
            else 1.0
        sink = sink_tumour if s.kind == "tumour" else sink_extra
        observable_uptake = ratio * s.expression_suv * sink * renal_uptake
        s.lu_suv0 = observable_uptake * s.discordance
        teff_param = P[f"teff_{s.kind}_h"]
        teff_median = teff_param.value * renal_teff
        s.teff_h = float(np.clip(teff_median * math.exp(rng.normal(0, teff_param.spread)), 8.0, 150.0))
        mass_g = s.volume_ml * TISSUE_DENSITY_G_PER_ML
        s.dose_gy_per_gbq = _dose_from_uptake(s.lu_suv0, s.teff_h, weight, mass_g)
        s.oracle_gy_per_gbq = _dose_from_uptake(observable_uptake, teff_median, weight, mass_g)
    return VirtualPatient(patient_id, int(seed_sequence.entropy if isinstance(seed_sequence.entropy, int)
                                          else 0), clinical, body, structures, background)
