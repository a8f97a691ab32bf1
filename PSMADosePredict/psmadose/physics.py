"""The physics baseline: the absorbed dose per GBq that a structure's measured PSMA uptake implies.

For a structure whose tissue holds activity concentration C(t) after injecting A, MIRD self-dose with full local
absorption of the Lu-177 electrons (ICRP-107 mean electron energy, ``psmadose.lu177``) gives

    D / A = R x (SUV_tissue / W) x T_eff / ln 2 x S_self(1 g)

- ``SUV_tissue`` (g/mL): the tissue concentration on the pre-therapy PET, measured so that it does not depend on
  image formation (``psmadose.features.concentration``); SUV / W (kg) is the fraction of the injected activity
  per gram x 1000, i.e. MBq per g per GBq injected.
- ``T_eff``: population effective half-life of 177Lu-PSMA-617 in the tissue (``EFFECTIVE_HALF_LIFE_H``).
- ``R``: the therapy-to-PET uptake ratio of the tissue (177Lu-PSMA at t=0 per unit PET SUV), calibrated on the
  training cohort per structure type and tracer (``calibrate_log_ratio``): PET and therapy ligands differ, and a
  1:1 mapping is biased (Siebinga, EJNMMI Phys 2023: ratios 0.29-1.43 for DOTATATE).

The dose is proportional to the structure's own uptake by construction (elasticity exactly 1), and the structure's
mass cancels (self-dose is concentration times energy per decay).
"""

from __future__ import annotations

import math

import numpy as np

from .lu177 import decay_data

# Population effective half-lives (h) of 177Lu-PSMA-617, medians: kidney 35.5 h and parotid 42.2 h (Kurth et al.
# 2018); submandibular and lacrimal glands take the parotid value and tumours 55 h (longer than whole body
# 40.5 h): assumptions, as in the simulator's parameter table. R absorbs any constant error in these.
EFFECTIVE_HALF_LIFE_H = {"kidney": 35.5, "parotid": 42.2, "submandibular": 42.2, "lacrimal": 42.2, "tumour": 55.0}


def unit_dose_gy_per_gbq(suv_tissue, weight_kg, structure_type) -> np.ndarray:
    """Dose per GBq for R = 1 (vectorised); NaN where the uptake is not positive."""
    suv = np.asarray(suv_tissue, dtype=float)
    weight = np.asarray(weight_kg, dtype=float)
    teff = np.array([EFFECTIVE_HALF_LIFE_H.get(t, math.nan) for t in np.atleast_1d(structure_type)])
    s_self = decay_data().self_dose_gy_g_per_mbq_h
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(suv > 0, suv / weight * teff / math.log(2) * s_self, np.nan)


def calibrate_log_ratio(log_dose: np.ndarray, log_unit: np.ndarray, keys: np.ndarray, min_rows: int = 10
                        ) -> tuple[list, np.ndarray, float]:
    """ln R per key (structure type x tracer): mean of ln(dose / unit dose); keys with fewer than ``min_rows``
    rows fall back to the overall value. Returns (keys, ln R per key, overall ln R)."""
    residual = np.asarray(log_dose, dtype=float) - np.asarray(log_unit, dtype=float)
    ok = np.isfinite(residual)
    overall = float(residual[ok].mean())
    out_keys, values = [], []
    for key in sorted(set(keys[ok].tolist())):
        selected = ok & (keys == key)
        out_keys.append(key)
        values.append(float(residual[selected].mean()) if selected.sum() >= min_rows else overall)
    return out_keys, np.array(values), overall
