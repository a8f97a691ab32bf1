"""Lu-177 electron dose kernels: dose-point kernel, voxel S-values for any voxel size, sphere absorbed fractions.

Derivation (nothing fitted to the validation data):

1. ICRP-107 (``icrp107_database``) gives the four beta branches of Lu-177 as mean energy and yield. Each branch's
   end-point energy E0 is the one whose allowed beta spectrum (Fermi function, non-relativistic approximation,
   daughter Z = 72) has the ICRP-107 mean energy (gives 0.48 MeV for the main branch; tabulated 0.498 MeV).
2. The point kernel of each branch is Loevinger's beta point-source function (Loevinger R, Radiology 1956;66:55;
   also in the MIRD primer): J(x) ~ [c(1 - (nu x/c) e^(1 - nu x/c)) + nu x e^(1 - nu x)] / (nu x)^2 for
   x < c/nu and nu x e^(1 - nu x) / (nu x)^2 beyond, with nu = 18.6 (E0 - 0.036)^-1.37 cm^2/g and c = 2
   (E0 < 0.5 MeV), each normalised so that it deposits the branch's mean energy (energy conservation), and
   summed with the ICRP-107 yields. Unit-density soft tissue (range scales as 1/density).
3. Internal-conversion and Auger electrons (ICRP-107; ranges mostly below 0.2 mm) are deposited in the source
   voxel. Photons (~35 keV per decay) are left out: in a voxel or a lesion they add < 1-2 %, in a 150 mL organ a
   few percent (stated limitation, as in ``psmadose.lu177``).
4. Voxel S-values: the fraction of the beta energy emitted uniformly in one voxel that lands in each voxel of
   the kernel, by sampling (fixed seed, 1 million emission points, straight-line displacement drawn from the
   radial kernel, mirror-averaged on each axis), for the image's own voxel spacing (anisotropic allowed).
5. Sphere absorbed fractions: phi(R) = integral of the radial kernel times Berger's geometric reduction factor
   1 - 3x/4 + x^3/16 (x = r/R <= 2) for a uniform source in a sphere of radius R.

Validation (``Testing/dosimetry/test_kernel.py``): the sphere self-dose from this kernel agrees with published
Lu-177 sphere S-values (soft-tissue spheres of 2-40 mm diameter, ``PUBLISHED_SPHERE_S``) within 1 % for diameters
up to 10 mm, where photons do not matter (within 2 % to 40 mm); the beta component of the voxel S-values agrees
with Lanconelli et al. 2012 (``PUBLISHED_VOXEL_S``, 4 and 4.8 mm voxels) within 0.3 % (central voxel) and 3.3 %
(face neighbour); edge neighbours (0,1,1) are 29-39 % low (Loevinger's tail is approximate and photons are left
out; those voxels hold < 0.1 % of the energy).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cache

import numpy as np

from ..lu177 import JOULE_PER_MEV, decay_data

DAUGHTER_Z = 72  # Hf-177
ELECTRON_MASS_MEV = 0.51099895
KERNEL_SAMPLES = 1_000_000
KERNEL_SEED = 177

# Published Lu-177 sphere self-dose S-values for uniformly filled soft-tissue spheres (density 1.03 g/mL; total
# S including photons, Gy per Bq s), diameters 2-120 mm, as tabulated in PyTheranostics
# (github qurit/PyTheranostics, doodle/data/s-values/spheres.json, "100%/0%" soft-tissue column, values of the
# IDAC-Dose/OLINDA unit-density sphere model). Masses in g. The nuclide is not stated in that file; that it is
# Lu-177 follows from its magnitudes (absorbed fraction 0.83 for a 2 mm sphere; Y-90 would be ~0.2).
PUBLISHED_SPHERE_S = {
    "source": "PyTheranostics spheres.json (IDAC-Dose/OLINDA sphere model, soft tissue 1.03 g/mL)",
    "diameter_mm": [2, 3, 4, 6, 8, 10, 12, 16, 20, 30, 40, 60, 80, 100, 120],
    "mass_g": [4.31e-03, 1.46e-02, 3.45e-02, 1.16e-01, 2.76e-01, 5.39e-01, 9.32e-01, 2.21e+00, 4.31e+00, 1.46e+01,
               3.45e+01, 1.16e+02, 2.76e+02, 5.39e+02, 9.32e+02],
    "s_gy_per_bq_s": [4.54e-09, 1.44e-09, 6.29e-10, 1.93e-10, 8.26e-11, 4.27e-11, 2.49e-11, 1.06e-11, 5.46e-12,
                      1.63e-12, 6.93e-13, 2.07e-13, 8.81e-14, 4.54e-14, 2.65e-14],
}


# Published Lu-177 voxel S-values in soft tissue, mGy per MBq s, for (i, j, k) offsets (0,0,0), (0,0,1), (0,1,1):
# Lanconelli et al., Phys Med Biol 2012;57:517 (EGSnrc), as distributed with github MGHPhysicsResearch/
# MIRDCalculation (VoxelSValues/177Lu4mmsoft.txt, 177Lu4.8mmsoft.txt). These tables agree with the beta component
# of our kernel at unit density to < 4 % (central and face neighbour) but not with IC/Auger electrons added: the
# tabulated source evidently deposits the beta spectrum only (ICRP-107 IC + Auger are 10 % of the electron
# energy). We keep IC/Auger (ICRP-107 lists them; the published sphere S-values above include them, and we match
# those within 1 %).
PUBLISHED_VOXEL_S = {
    "source": "Lanconelli et al. 2012 Phys Med Biol 57:517 (via MGHPhysicsResearch/MIRDCalculation)",
    4.0: {(0, 0, 0): 3.02e-01, (0, 0, 1): 4.98e-03, (0, 1, 1): 1.78e-04},
    4.8: {(0, 0, 0): 1.78e-01, (0, 0, 1): 2.46e-03, (0, 1, 1): 8.65e-05},
}


def _allowed_mean_mev(e0: float, n: int = 2000) -> float:
    t = np.linspace(1e-5, e0, n)
    w = t + ELECTRON_MASS_MEV
    p = np.sqrt(w * w - ELECTRON_MASS_MEV ** 2)
    eta = DAUGHTER_Z * w / (137.036 * p)
    fermi = 2 * math.pi * eta / (1 - np.exp(-2 * math.pi * eta))
    shape = fermi * p * w * (e0 - t) ** 2
    return float(np.trapezoid(t * shape, t) / np.trapezoid(shape, t))


def endpoint_mev(mean_mev: float) -> float:
    from scipy.optimize import brentq

    return float(brentq(lambda e0: _allowed_mean_mev(e0) - mean_mev, mean_mev * 1.5, mean_mev * 6.0))


def loevinger(e0_mev: float, r_cm: np.ndarray) -> np.ndarray:
    """Loevinger's point-source function (unnormalised) at r (cm, unit density)."""
    nu = 18.6 * (e0_mev - 0.036) ** -1.37
    c = 2.0 if e0_mev < 0.5 else 1.5 if e0_mev < 1.5 else 1.0
    vx = nu * np.asarray(r_cm, dtype=float)
    inner = c * (1 - (vx / c) * np.exp(1 - vx / c)) + vx * np.exp(1 - vx)
    outer = vx * np.exp(1 - vx)
    return np.where(vx < c, inner, outer) / vx ** 2


@dataclass(frozen=True)
class RadialKernel:
    r_mm: np.ndarray  # radii (unit density)
    pdf_per_mm: np.ndarray  # fraction of the beta energy deposited per mm of radius (integrates to 1)
    beta_mev: float  # mean beta energy per decay (ICRP-107)
    local_mev: float  # IC + Auger energy per decay, deposited where emitted
    branches: tuple  # (mean MeV, yield, derived end-point MeV)

    @property
    def electron_mev(self) -> float:
        return self.beta_mev + self.local_mev

    def radius_mm(self, fraction: float) -> float:
        """Radius of the sphere that holds ``fraction`` of the beta energy (e.g. X90)."""
        cdf = np.cumsum(self.pdf_per_mm) * (self.r_mm[1] - self.r_mm[0])
        return float(self.r_mm[min(np.searchsorted(cdf, fraction), len(cdf) - 1)])


@cache
def radial_kernel(nuclide: str = "Lu-177") -> RadialKernel:
    from icrp107_database import get_icrp107_spectrum

    beta = get_icrp107_spectrum(nuclide, "beta-")
    r_cm = np.linspace(1e-6, 0.4, 200_001)
    pdf = np.zeros_like(r_cm)
    beta_mev, branches = 0.0, []
    for mean, weight in zip(beta["energies"], beta["weights"]):
        e0 = endpoint_mev(float(mean))
        q = 4 * math.pi * r_cm ** 2 * loevinger(e0, r_cm)
        q /= np.trapezoid(q, r_cm)
        pdf += weight * mean * q
        beta_mev += weight * mean
        branches.append((float(mean), float(weight), e0))
    pdf /= beta_mev
    data = decay_data(nuclide)
    local = data.electron_energy_mev - beta_mev
    return RadialKernel(r_cm * 10.0, pdf / 10.0, float(beta_mev), float(local), tuple(branches))


def sphere_absorbed_fraction(radius_mm: float, density_g_ml: float = 1.0) -> float:
    """Electron absorbed fraction (beta via the kernel, IC/Auger local) of a uniform source in a sphere."""
    k = radial_kernel()
    x = k.r_mm / (radius_mm * density_g_ml)  # unit-density kernel: distances scale with density
    reduction = np.where(x < 2.0, 1 - 0.75 * x + x ** 3 / 16, 0.0)
    beta_af = float(np.trapezoid(k.pdf_per_mm * reduction, k.r_mm))
    return (beta_af * k.beta_mev + k.local_mev) / k.electron_mev


def sphere_s_gy_per_bq_s(mass_g: float, density_g_ml: float = 1.0) -> float:
    """Self-dose S (electrons only) of a uniformly filled sphere of this mass, from this kernel."""
    radius_mm = (3 * mass_g / density_g_ml / (4 * math.pi)) ** (1 / 3) * 10.0
    af = sphere_absorbed_fraction(radius_mm, density_g_ml)
    return af * radial_kernel().electron_mev * JOULE_PER_MEV / (mass_g / 1000.0)


def published_sphere_s(mass_g: float) -> float:
    """Published sphere S (Gy per Bq s), log-log interpolated in mass; beyond the table, scaled as 1/mass."""
    m = np.log(PUBLISHED_SPHERE_S["mass_g"])
    s = np.log(np.asarray(PUBLISHED_SPHERE_S["s_gy_per_bq_s"]) * np.asarray(PUBLISHED_SPHERE_S["mass_g"]))
    # interpolate S*m (energy absorbed per decay, smooth) then divide by the mass
    value = float(np.exp(np.interp(math.log(mass_g), m, s)))
    return value / mass_g


@cache
def _voxel_kernel_cached(spacing_key: tuple[float, float, float], density_g_ml: float,
                         include_local: bool = True) -> np.ndarray:
    k = radial_kernel()
    spacing = np.asarray(spacing_key, dtype=float)  # (k, j, i) order, mm
    reach_mm = k.radius_mm(0.9999) / density_g_ml
    half = np.ceil(reach_mm / spacing + 0.5).astype(int)
    rng = np.random.default_rng(KERNEL_SEED)
    cdf = np.cumsum(k.pdf_per_mm)
    cdf /= cdf[-1]
    shape = tuple(int(n) for n in 2 * half + 1)
    counts = np.zeros(int(np.prod(shape)), dtype=np.float64)
    n_batches = 10
    per_batch = KERNEL_SAMPLES // n_batches
    for _ in range(n_batches):
        start = (rng.random((per_batch, 3)) - 0.5) * spacing
        r = np.interp(rng.random(per_batch), cdf, k.r_mm) / density_g_ml
        direction = rng.normal(size=(per_batch, 3))
        direction /= np.linalg.norm(direction, axis=1, keepdims=True)
        end = start + direction * r[:, None]
        index = np.floor(end / spacing + 0.5).astype(int) + half
        inside = np.all((index >= 0) & (index < np.array(shape)), axis=1)
        flat = np.ravel_multi_index(tuple(index[inside].T), shape)
        counts += np.bincount(flat, minlength=counts.size)
    fraction = counts.reshape(shape) / (per_batch * n_batches)
    # the exact kernel is mirror-symmetric on each axis: averaging the mirrored copies cuts the sampling noise
    for axis in range(3):
        fraction = 0.5 * (fraction + np.flip(fraction, axis=axis))
    energy_mev = fraction * k.beta_mev
    if include_local:
        energy_mev[tuple(half)] += k.local_mev
    mass_kg = float(np.prod(spacing)) / 1000.0 * density_g_ml / 1000.0
    return energy_mev * JOULE_PER_MEV / mass_kg  # Gy per decay in the source voxel = Gy per (Bq s)


def voxel_s_values(spacing_kji_mm, density_g_ml: float = 1.0, include_local: bool = True) -> np.ndarray:
    """Voxel S-value kernel (Gy per Bq s of the source voxel), (k, j, i) spacing in mm, odd shape, centred.
    ``include_local=False`` leaves out the IC/Auger energy (the beta component alone, for comparisons)."""
    key = tuple(round(float(s), 4) for s in spacing_kji_mm)
    return _voxel_kernel_cached(key, round(float(density_g_ml), 4), include_local).copy()


def convolve(tia_bq_s: np.ndarray, kernel: np.ndarray, method: str = "fft") -> np.ndarray:
    """Dose (Gy) = TIA per voxel (Bq s) convolved with the voxel S-value kernel (the kernel is symmetric).

    ``fft``: zero-padded real FFTs (scipy.fft, the algorithm of scipy.signal.fftconvolve without importing
    scipy.signal, which costs a second at start-up); ``direct``: scipy.ndimage.convolve (for comparison)."""
    if method == "fft":
        from scipy import fft

        shape = [a + k - 1 for a, k in zip(tia_bq_s.shape, kernel.shape)]
        fast = [fft.next_fast_len(n, real=True) for n in shape]
        spectrum = fft.rfftn(tia_bq_s, fast) * fft.rfftn(kernel, fast)
        full = fft.irfftn(spectrum, fast)
        start = [(k - 1) // 2 for k in kernel.shape]
        return full[tuple(slice(s, s + n) for s, n in zip(start, tia_bq_s.shape))]
    if method == "direct":
        from scipy import ndimage

        return ndimage.convolve(tia_bq_s, kernel, mode="constant", cval=0.0)
    raise ValueError(f"unknown convolution method {method!r}")
