"""Time-activity curves -> TIA: analytic values (integrals of exponentials), the delta method against a Monte
Carlo of noisy curves, single-time-point formulas at the point where they are exact, and refusals."""

from __future__ import annotations

import math

import numpy as np
import pytest
from psmadose.dosimetry.kinetics import time_integrated_activity
from psmadose.errors import InputError
from psmadose.lu177 import decay_data

LN2 = math.log(2)


@pytest.mark.parametrize("teff_h", [8.0, 35.5, 60.0, 150.0])
@pytest.mark.parametrize("method", ["auto", "mono"])
def test_mono_exponential_tia_is_analytic(teff_h, method):
    # expected: integral of A0 exp(-ln2 t / Teff) from 0 to infinity = A0 Teff / ln 2
    t = np.array([4.0, 24.0, 96.0])
    a0 = 120.0
    result = time_integrated_activity(t, a0 * np.exp(-LN2 * t / teff_h), method)
    assert result.model == "mono"
    assert result.tia_mbq_h == pytest.approx(a0 * teff_h / LN2, rel=0.01)
    assert result.effective_half_life_h == pytest.approx(teff_h, rel=0.01)


def test_bi_exponential_chosen_by_aicc_and_analytic():
    # uptake 2 h, washout 40 h: TIA = A0 (Tw - Tu) / ln 2; six points let AICc compare mono and bi
    t = np.array([1.0, 4.0, 24.0, 48.0, 96.0, 168.0])
    a = 100 * (np.exp(-LN2 * t / 40) - np.exp(-LN2 * t / 2))
    result = time_integrated_activity(t, a, "auto")
    assert result.model == "bi"
    assert set(result.aicc) == {"mono", "bi"} and result.aicc["bi"] < result.aicc["mono"]
    assert result.tia_mbq_h == pytest.approx(100 * (40 - 2) / LN2, rel=0.01)


def test_trapezoid_with_physical_tail_by_hand():
    # expected by hand: held first value 4 h x 10, trapezoids, then A_n / lambda_p
    t = np.array([4.0, 24.0, 96.0])
    a = np.array([10.0, 8.0, 3.0])
    lam_p = LN2 / decay_data().half_life_h
    expected = 4 * 10 + 20 * (10 + 8) / 2 + 72 * (8 + 3) / 2 + 3 / lam_p
    result = time_integrated_activity(t, a, "trapezoid")
    assert result.tia_mbq_h == pytest.approx(expected, rel=1e-9)
    # its uncertainty is linear propagation of 10 % per point
    weights = np.array(result.params["weights_h"])
    assert result.sd_mbq_h == pytest.approx(math.sqrt(((weights * 0.1 * a) ** 2).sum()), rel=1e-9)


def test_delta_method_matches_monte_carlo_spread():
    # The fit's propagated SD must describe the actual spread of TIA over noisy replicates (10 % per point).
    rng = np.random.default_rng(7)
    t = np.array([4.0, 24.0, 48.0, 96.0, 168.0])
    truth = 50 * np.exp(-LN2 * t / 40.0)
    tias, sds = [], []
    for _ in range(200):
        noisy = truth * (1 + 0.10 * rng.standard_normal(len(t)))
        result = time_integrated_activity(t, noisy, "mono")
        tias.append(result.tia_mbq_h)
        sds.append(result.sd_mbq_h)
    empirical = float(np.std(tias))
    assert float(np.median(sds)) == pytest.approx(empirical, rel=0.3)
    assert float(np.mean(tias)) == pytest.approx(50 * 40 / LN2, rel=0.03)


def test_single_time_point_methods_exact_where_they_should_be():
    # Hanscheid 2018: TIA = A(t) 2t / ln2 is exact when Teff = t
    t, teff = 48.0, 48.0
    a_t = 30 * math.exp(-LN2 * t / teff)
    r = time_integrated_activity([t], [a_t], "hanscheid")
    assert r.tia_mbq_h == pytest.approx(30 * teff / LN2, rel=1e-9)
    # Madsen/Hou: exact when the patient's Teff equals the population value
    r = time_integrated_activity([24.0], [30 * math.exp(-LN2 * 24 / 35.5)], "madsen", population_teff_h=35.5)
    assert r.tia_mbq_h == pytest.approx(30 * 35.5 / LN2, rel=1e-9)
    # stated error: Teff +-30 % around 35.5 h changes the true TIA/A(24 h) by this much
    true_factors = [math.exp(LN2 * 24 / (35.5 * s)) * 35.5 * s / LN2 for s in (0.7, 1.3)]
    factor = math.exp(LN2 * 24 / 35.5) * 35.5 / LN2
    assert r.relative_sd == pytest.approx(max(abs(factor / f - 1) for f in true_factors), rel=1e-9)
    # auto with one point and a known structure uses Madsen; unknown structure: Hanscheid
    assert time_integrated_activity([24.0], [10.0], "auto", population_teff_h=35.5).model == "madsen"
    assert time_integrated_activity([24.0], [10.0], "auto").model == "hanscheid"


@pytest.mark.parametrize("method", ["mono", "bi", "trapezoid"])
def test_multi_point_method_with_one_time_point_is_refused(method):
    with pytest.raises(InputError, match="time point"):
        time_integrated_activity([24.0], [10.0], method)


def test_times_must_increase_and_follow_injection():
    with pytest.raises(InputError, match="increasing"):
        time_integrated_activity([24.0, 4.0], [10.0, 12.0], "mono")
    with pytest.raises(InputError, match="after the injection"):
        time_integrated_activity([0.0, 4.0], [10.0, 12.0], "mono")
