"""Lu-177 decay data and kernels against independent values: ICRP-107 energies per decay as published
(shared/REFERENCES.md: beta 133.3 keV, IC 13.5 keV, Auger 1.1 keV, total electron 147.9 keV, self-dose
0.0853 g Gy/(MBq h)); energy conservation of the voxel S-values; sphere self-dose against the published Lu-177
sphere S-values (IDAC-Dose/OLINDA sphere model as tabulated in PyTheranostics, see kernel.PUBLISHED_SPHERE_S);
FFT against direct convolution."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
from psmadose.dosimetry import kernel as K
from psmadose.lu177 import JOULE_PER_MEV, decay_data


def test_icrp107_energy_per_decay():
    k = K.radial_kernel()
    data = decay_data()
    assert k.beta_mev == pytest.approx(0.1333, abs=0.0002)
    assert k.local_mev == pytest.approx(0.0135 + 0.0011, abs=0.0002)
    assert data.electron_energy_mev == pytest.approx(0.1479, abs=0.0002)
    assert data.self_dose_gy_g_per_mbq_h == pytest.approx(0.0853, rel=0.002)
    assert data.half_life_h == pytest.approx(6.647 * 24, rel=1e-4)
    # four beta branches; the derived end-point of the main one is near the tabulated 498 keV
    main = max(k.branches, key=lambda b: b[1])
    assert main[2] == pytest.approx(0.498, rel=0.05)


@pytest.mark.parametrize("spacing", [(4.42, 4.42, 4.42), (5.0, 3.9, 3.9), (2.21, 2.21, 2.21)])
def test_voxel_s_values_conserve_the_electron_energy(spacing):
    kernel = K.voxel_s_values(spacing)
    mass_kg = float(np.prod(spacing)) / 1e6  # unit density
    deposited_mev = float(kernel.sum()) * mass_kg / JOULE_PER_MEV
    assert deposited_mev == pytest.approx(decay_data().electron_energy_mev, rel=0.002)
    centre = tuple(n // 2 for n in kernel.shape)
    assert np.unravel_index(np.argmax(kernel), kernel.shape) == centre
    # symmetric: the S-value of +1 and -1 neighbours agree within the sampling noise
    c = centre
    assert kernel[c[0], c[1], c[2] + 1] == pytest.approx(kernel[c[0], c[1], c[2] - 1], rel=0.05)


def test_central_voxel_fraction_is_close_to_the_equal_volume_sphere():
    # A cube keeps a little less than a sphere of equal volume (more surface) but within a few percent.
    side = 4.42
    kernel = K.voxel_s_values((side,) * 3)
    mass_kg = side ** 3 / 1e6
    centre = tuple(n // 2 for n in kernel.shape)
    fraction = kernel[centre] * mass_kg / JOULE_PER_MEV / decay_data().electron_energy_mev
    sphere = K.sphere_absorbed_fraction((3 * side ** 3 / (4 * math.pi)) ** (1 / 3))
    assert fraction < sphere
    assert fraction == pytest.approx(sphere, rel=0.03)


@pytest.mark.parametrize("index", range(7))  # 2-16 mm diameters: photons add < 1 % there
def test_sphere_self_dose_matches_published_s_values(index):
    table = K.PUBLISHED_SPHERE_S
    mass = table["mass_g"][index]
    ours = K.sphere_s_gy_per_bq_s(mass, density_g_ml=1.03)
    assert ours == pytest.approx(table["s_gy_per_bq_s"][index], rel=0.02)


@pytest.mark.parametrize("index", range(7, 11))  # 16-40 mm: published values include photons (a few %)
def test_sphere_self_dose_larger_spheres_within_five_percent(index):
    table = K.PUBLISHED_SPHERE_S
    ours = K.sphere_s_gy_per_bq_s(table["mass_g"][index], density_g_ml=1.03)
    published = table["s_gy_per_bq_s"][index]
    assert ours <= published * 1.005  # electrons only: never more than electrons + photons
    assert ours == pytest.approx(published, rel=0.05)


def test_published_sphere_interpolation_hits_the_table():
    table = K.PUBLISHED_SPHERE_S
    for mass, s in zip(table["mass_g"], table["s_gy_per_bq_s"]):
        assert K.published_sphere_s(mass) == pytest.approx(s, rel=1e-9)


def test_fft_equals_direct_convolution():
    rng = np.random.default_rng(3)
    tia = rng.gamma(2.0, 1e6, size=(30, 34, 28))
    kernel = K.voxel_s_values((4.0, 4.0, 4.0))
    t0 = time.perf_counter()
    fft = K.convolve(tia, kernel, "fft")
    t1 = time.perf_counter()
    direct = K.convolve(tia, kernel, "direct")
    t2 = time.perf_counter()
    np.testing.assert_allclose(fft, direct, rtol=1e-6, atol=1e-9 * float(direct.max()))
    print(f"fft {t1 - t0:.4f} s, direct {t2 - t1:.4f} s")


@pytest.mark.parametrize("side", [4.0, 4.8])
def test_voxel_s_values_match_lanconelli_2012(side):
    # Published: Lanconelli et al. 2012 (PUBLISHED_VOXEL_S). Their source deposits the beta spectrum (not the
    # ICRP-107 IC/Auger electrons) in unit-density tissue: compare our beta component at unit density.
    published = K.PUBLISHED_VOXEL_S[side]
    beta = K.voxel_s_values((side,) * 3, 1.0, include_local=False) * 1e9  # mGy / (MBq s)
    c = tuple(n // 2 for n in beta.shape)
    assert beta[c] == pytest.approx(published[(0, 0, 0)], rel=0.05)
    assert beta[c[0], c[1], c[2] + 1] == pytest.approx(published[(0, 0, 1)], rel=0.05)
    # with IC/Auger deposited locally (what we use), the central voxel is higher by exactly that energy
    full = K.voxel_s_values((side,) * 3, 1.0) * 1e9
    local = K.radial_kernel().local_mev * JOULE_PER_MEV / (side ** 3 / 1e6) * 1e9
    assert full[c] - beta[c] == pytest.approx(local, rel=1e-9)
