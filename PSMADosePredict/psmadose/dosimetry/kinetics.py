"""Time-activity curves -> time-integrated activity (TIA), with uncertainty.

Models (activity A in MBq, t in h after injection, lambda_p the physical decay constant of Lu-177 from ICRP-107):

- ``mono``: A(t) = A0 exp(-lambda t), lambda >= lambda_p (no biological half-life shorter than infinity can make
  activity decay slower than physics); TIA = A0 / lambda.
- ``bi``: uptake and washout, A(t) = A0 (exp(-lambda_w t) - exp(-lambda_u t)), lambda_u > lambda_w >= lambda_p;
  TIA = A0 (1/lambda_w - 1/lambda_u).
- ``trapezoid``: trapezoids between the points, the first value held back to t = 0 (the activity is already
  near its plateau at the first scan for PSMA organs; EANM practice), and a physical-decay tail A_n / lambda_p
  after the last point (an upper bound: no biological washout assumed).
- single time point: ``hanscheid`` (Hanscheid et al., J Nucl Med 2018;59:75: TIA ~ A(t) 2t / ln 2, exact when the
  effective half-life equals t) and ``madsen`` (Madsen et al., Med Phys 2018;45:2318; Hou et al., J Nucl Med
  2021: TIA = A(t) exp(lambda_eff t) / lambda_eff with a population effective half-life,
  ``psmadose.physics.EFFECTIVE_HALF_LIFE_H``, Kurth et al. 2018 medians).

Fits are weighted least squares (scipy.optimize.curve_fit) with each point's standard deviation
sigma_i = q A_i (q = relative uncertainty of one quantitative SPECT activity; 10 % by default, the order given in
the EANM guidance on uncertainty analysis, Gear et al., EJNMMI 2018;45:2456). The parameter covariance is scaled
by max(1, chi^2 / dof) when there are degrees of freedom, and propagated to the TIA by the delta method
(Jacobian of TIA with respect to the parameters): var(TIA) = J C J^T (Gear et al. 2018).

Model choice (``auto``): among the fits with at least k + 2 points (so the small-sample AICc,
AICc = chi^2 + 2k + 2k(k+1)/(n-k-1), is defined) the smallest AICc wins; with fewer points the mono-exponential
(2 points or more) is used; if it fails (e.g. rising activity at the last scan), trapezoid + physical tail.
With one time point ``auto`` uses ``madsen`` for structures with a population half-life, else ``hanscheid``.
Single-time-point uncertainty is stated, not fitted: the TIA error when the patient's effective half-life lies
anywhere within +-30 % of the population median (a typical inter-patient spread), computed from the formulas.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ..errors import InputError
from ..lu177 import decay_data

MULTI_POINT = ("mono", "bi", "trapezoid")
SINGLE_POINT = ("hanscheid", "madsen")
METHODS = ("auto",) + MULTI_POINT + SINGLE_POINT
DEFAULT_ACTIVITY_COV = 0.10
STP_TEFF_SPREAD = 0.30
STP_REFERENCE_TIME_H = 48.0  # Hou et al. 2021: 48 h is the best single time for 177Lu-PSMA


@dataclass
class TiaResult:
    tia_mbq_h: float
    sd_mbq_h: float
    model: str
    effective_half_life_h: float
    params: dict = field(default_factory=dict)
    aicc: dict = field(default_factory=dict)
    note: str = ""

    @property
    def relative_sd(self) -> float:
        return self.sd_mbq_h / self.tia_mbq_h if self.tia_mbq_h > 0 else math.nan

    def curve(self, t_h: np.ndarray) -> np.ndarray:
        p = self.params
        if self.model == "mono":
            return p["a0_mbq"] * np.exp(-p["lambda_per_h"] * t_h)
        if self.model == "bi":
            return p["a0_mbq"] * (np.exp(-p["lambda_w_per_h"] * t_h) - np.exp(-p["lambda_u_per_h"] * t_h))
        if self.model in SINGLE_POINT:
            return p["a0_mbq"] * np.exp(-p["lambda_per_h"] * t_h)
        return np.full_like(t_h, np.nan, dtype=float)


def _lambda_p() -> float:
    return decay_data().decay_constant_per_h


def _mono(t, a0, lam_b):
    return a0 * np.exp(-(_lambda_p() + lam_b) * t)


def _bi(t, a0, lam_b, lam_gap):
    lam_w = _lambda_p() + lam_b
    return a0 * (np.exp(-lam_w * t) - np.exp(-(lam_w + lam_gap) * t))


def _aicc(chi2: float, n: int, k: int) -> float:
    return chi2 + 2 * k + 2 * k * (k + 1) / (n - k - 1) if n - k - 1 > 0 else math.nan


def _fit(model: str, t: np.ndarray, a: np.ndarray, sigma: np.ndarray) -> TiaResult | None:
    from scipy.optimize import curve_fit

    lam_p = _lambda_p()
    n = len(t)
    if model == "mono":
        # start from a log-linear fit of the last two points
        slope = -np.diff(np.log(np.maximum(a[-2:], 1e-12)))[0] / max(t[-1] - t[-2], 1e-9)
        lam_b0 = max(slope - lam_p, 1e-4)
        p0 = [a[0] * math.exp((lam_p + lam_b0) * t[0]), lam_b0]
        func, bounds, k = _mono, ([0, 0], [np.inf, 10.0]), 2
    else:
        lam_b0 = 0.01
        p0 = [a.max() * 2, lam_b0, 0.5]
        func, bounds, k = _bi, ([0, 0, 1e-4], [np.inf, 10.0, 50.0]), 3
    try:
        params, cov = curve_fit(func, t, a, p0=p0, sigma=sigma, absolute_sigma=True, bounds=bounds, maxfev=20000)
    except (RuntimeError, ValueError):
        return None
    chi2 = float((((func(t, *params) - a) / sigma) ** 2).sum())
    dof = n - k
    if dof > 0:
        cov = cov * max(1.0, chi2 / dof)
    if model == "mono":
        a0, lam_b = params
        lam = lam_p + lam_b
        tia = a0 / lam
        jac = np.array([1 / lam, -a0 / lam ** 2])
        details = {"a0_mbq": float(a0), "lambda_per_h": float(lam)}
        teff = math.log(2) / lam
    else:
        a0, lam_b, gap = params
        lam_w, lam_u = lam_p + lam_b, lam_p + lam_b + gap
        tia = a0 * (1 / lam_w - 1 / lam_u)
        jac = np.array([1 / lam_w - 1 / lam_u, -a0 / lam_w ** 2 + a0 / lam_u ** 2, a0 / lam_u ** 2])
        details = {"a0_mbq": float(a0), "lambda_w_per_h": float(lam_w), "lambda_u_per_h": float(lam_u)}
        teff = math.log(2) / lam_w
    variance = float(jac @ cov @ jac) if np.all(np.isfinite(cov)) else math.nan
    result = TiaResult(float(tia), math.sqrt(max(variance, 0.0)), model, teff, details)
    result.aicc = {model: _aicc(chi2, n, k)}
    return result


def _trapezoid(t: np.ndarray, a: np.ndarray, sigma: np.ndarray) -> TiaResult:
    lam_p = _lambda_p()
    # weights w_i with TIA = sum w_i A_i: first value held to t=0, trapezoids, physical tail
    w = np.zeros(len(t))
    w[0] += t[0]
    for i in range(len(t) - 1):
        dt = t[i + 1] - t[i]
        w[i] += dt / 2
        w[i + 1] += dt / 2
    w[-1] += 1 / lam_p
    tia = float(w @ a)
    sd = float(math.sqrt(((w * sigma) ** 2).sum()))
    # effective half-life between the first and last point (for the table), physical if it does not decrease
    if len(t) > 1 and a[-1] > 0 and a[0] > a[-1]:
        teff = math.log(2) * (t[-1] - t[0]) / math.log(a[0] / a[-1])
    else:
        teff = math.log(2) / lam_p
    return TiaResult(tia, sd, "trapezoid", teff, {"weights_h": w.tolist()},
                     note="physical-decay tail after the last point (no biological washout assumed)")


def _stp_factor(method: str, t_h: float, teff_h: float) -> float:
    """TIA / A(t) for a single time point."""
    if method == "hanscheid":
        return 2 * t_h / math.log(2)
    lam = math.log(2) / teff_h
    return math.exp(lam * t_h) / lam


def single_time_point(method: str, t_h: float, activity_mbq: float, population_teff_h: float | None) -> TiaResult:
    if method == "madsen" and population_teff_h is None:
        raise InputError("--fit madsen needs a population effective half-life, known for kidney, salivary, "
                         "lacrimal glands and tumours only; use --fit hanscheid for other segments")
    teff_pop = population_teff_h if population_teff_h is not None else t_h  # Hanscheid: exact for Teff = t
    factor = _stp_factor(method, t_h, teff_pop)
    # stated uncertainty: the error of this factor when the true Teff lies within +-30 % of the population value
    errors = []
    for scale in (1 - STP_TEFF_SPREAD, 1 + STP_TEFF_SPREAD):
        true_teff = teff_pop * scale
        errors.append(abs(factor / _stp_factor("madsen", t_h, true_teff) - 1))
    tia = activity_mbq * factor
    teff = teff_pop if method == "madsen" else t_h
    lam = math.log(2) / teff
    return TiaResult(tia, tia * max(errors), method, teff,
                     {"a0_mbq": activity_mbq * math.exp(lam * t_h), "lambda_per_h": lam, "time_h": t_h},
                     note=f"single time point at {t_h:g} h; uncertainty stated for an effective half-life within "
                          f"+-{STP_TEFF_SPREAD:.0%} of {teff_pop:.1f} h")


def time_integrated_activity(times_h, activities_mbq, method: str = "auto", *, activity_cov: float =
                             DEFAULT_ACTIVITY_COV, population_teff_h: float | None = None) -> TiaResult:
    """TIA (MBq h) of one TAC; see the module docstring for the models and the choice among them."""
    t = np.asarray(times_h, dtype=float)
    a = np.asarray(activities_mbq, dtype=float)
    if method not in METHODS:
        raise InputError(f"unknown fit method {method!r}; use one of {', '.join(METHODS)}")
    if len(t) == 0 or np.any(np.diff(t) <= 0) or t[0] <= 0:
        raise InputError("time points must be after the injection and in increasing order")
    if method in MULTI_POINT and len(t) < 2:
        raise InputError(f"--fit {method} needs at least 2 time points and the study has 1; use --fit madsen or "
                         "--fit hanscheid (single time point) or add time points")
    if method in SINGLE_POINT or (method == "auto" and len(t) == 1):
        if method == "auto":
            method = "madsen" if population_teff_h is not None else "hanscheid"
        i = int(np.argmin(np.abs(t - STP_REFERENCE_TIME_H)))
        return single_time_point(method, float(t[i]), float(a[i]), population_teff_h)
    sigma = np.maximum(activity_cov * np.abs(a), 1e-9 * max(float(np.abs(a).max()), 1e-9))
    if method == "trapezoid":
        return _trapezoid(t, a, sigma)
    if method in ("mono", "bi"):
        k = 2 if method == "mono" else 3
        if len(t) < k:
            raise InputError(f"--fit {method} needs at least {k} time points and the study has {len(t)}; use "
                             "--fit mono, trapezoid or auto")
        result = _fit(method, t, a, sigma)
        if result is None:
            raise InputError(f"the {method}-exponential fit did not converge; use --fit trapezoid or auto")
        return result
    # auto
    candidates = [m for m, k in (("mono", 2), ("bi", 3)) if len(t) >= k + 2]
    fits = [f for f in (_fit(m, t, a, sigma) for m in candidates) if f is not None]
    aicc = {m: v for f in fits for m, v in f.aicc.items()}
    if fits:
        best = min(fits, key=lambda f: f.aicc[f.model])
        best.aicc = aicc
        best.note = "chosen by AICc among " + ", ".join(f"{m} {v:.2f}" for m, v in aicc.items())
        return best
    mono = _fit("mono", t, a, sigma)
    if mono is not None and a[-1] < a[0]:
        mono.note = f"{len(t)} points: too few for AICc (needs k+2), mono-exponential used"
        return mono
    result = _trapezoid(t, a, sigma)
    result.note += "; the mono-exponential fit failed or did not decrease"
    return result
