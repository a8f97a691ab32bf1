"""Per-segment uptake features (psmadose.features.uptake) and the feature table of a virtual patient
(psmadose.features.extract_features).

SUVpeak follows PERCIST 1.0 (Wahl et al., J Nucl Med 2009;50:122S): highest mean SUV in a 1 cm^3 sphere, here
with sphere centres on voxel centres inside the segment, voxels weighted by their fraction inside the sphere,
and nothing (zero) outside the image. Second implementations in this file are written independently: Monte-Carlo
volume, a per-voxel brute-force loop with its own, finer fractional-overlap weights.
"""

from __future__ import annotations

import functools
import itertools
import json
import math

import numpy as np
import pytest
from psmadose.case import read_case
from psmadose.features import extract_features
from psmadose.features.uptake import PEAK_RADIUS_MM, peak_kernel, segment_uptake, suv_peak
from scipy import ndimage

SPACINGS = [(4.0, 4.0, 4.0), (2.0, 2.0, 2.0), (5.0, 4.0, 3.0), (3.27, 2.73, 2.73)]  # (k, j, i) mm


def test_peak_radius_is_one_millilitre():
    # Analytic: 4/3 pi r^3 = 1000 mm^3 -> r = 6.2035 mm.
    assert 4.0 / 3.0 * math.pi * PEAK_RADIUS_MM**3 == pytest.approx(1000.0, rel=1e-12)
    assert PEAK_RADIUS_MM == pytest.approx(6.2035, abs=1e-4)


@functools.lru_cache(maxsize=None)
def _sphere_weights(spacing, supersample: int) -> dict[tuple[int, int, int], float]:
    """Fraction of each voxel (integer (k, j, i) offset from the centre voxel) inside the 1 mL sphere, by
    sampling supersample^3 points per voxel; written independently of psmadose (per-voxel loop)."""
    sub = (np.arange(supersample) + 0.5) / supersample - 0.5
    reach = [int(math.ceil(PEAK_RADIUS_MM / s + 0.5)) for s in spacing]
    weights = {}
    for offset in itertools.product(*(range(-r, r + 1) for r in reach)):
        z, y, x = np.meshgrid(*[(o + sub) * s for o, s in zip(offset, spacing)], indexing="ij")
        fraction = float(np.mean(x**2 + y**2 + z**2 <= PEAK_RADIUS_MM**2))
        if fraction > 0:
            weights[offset] = fraction
    return weights


@pytest.mark.parametrize("spacing", SPACINGS)
def test_peak_kernel_sums_to_one_and_is_one_millilitre(spacing):
    kernel = peak_kernel(spacing)
    assert kernel.sum() == pytest.approx(1.0, abs=1e-12)
    assert np.all(kernel >= 0)
    assert all(n % 2 == 1 for n in kernel.shape)  # centred on a voxel
    half = np.array(kernel.shape) // 2
    # The box reaches at least the sphere's radius in every direction (nothing of the sphere is cut off).
    assert np.all((half + 0.5) * np.array(spacing) >= PEAK_RADIUS_MM)
    # Symmetric under reflection of each axis (so a linear function's mean is its value at the centre).
    for axis in range(3):
        np.testing.assert_allclose(kernel, np.flip(kernel, axis), atol=1e-15)
    voxel_mm3 = float(np.prod(spacing))

    # Monte-Carlo volume of the sphere the kernel box holds: 2 million uniform points (s.e. ~0.3%).
    rng = np.random.default_rng(2026)
    extent = (half + 0.5) * np.array(spacing)
    points = rng.uniform(-extent, extent, size=(2_000_000, 3))
    inside = np.sum(points**2, axis=1) <= PEAK_RADIUS_MM**2
    assert inside.mean() * float(np.prod(2 * extent)) / 1000.0 == pytest.approx(1.0, rel=0.01)

    # Independent fine fractions (25^3 points per voxel): sum of fraction x voxel volume = 1.000 mL within 1%.
    fine = np.zeros(kernel.shape)
    for offset, fraction in _sphere_weights(tuple(spacing), 25).items():
        fine[tuple(np.array(offset) + half)] = fraction
    assert fine.sum() * voxel_mm3 / 1000.0 == pytest.approx(1.0, rel=0.01)
    # The kernel is that fraction divided by the sphere volume in voxels: kernel x (1000 mm^3 / voxel) is the
    # fraction inside. The core samples 21^3 points per voxel and the reference 25^3: boundary fractions agree
    # to about 0.01.
    np.testing.assert_allclose(kernel * 1000.0 / voxel_mm3, fine, atol=0.012)


def _interior_blob(shape, margin, rng) -> np.ndarray:
    field = ndimage.gaussian_filter(rng.standard_normal(shape), 2.0)
    mask = field > np.percentile(field, 85)
    interior = np.zeros(shape, dtype=bool)
    interior[tuple(slice(m, n - m) for m, n in zip(margin, shape))] = True
    return mask & interior


@pytest.mark.parametrize("spacing", [(4.0, 4.0, 4.0), (5.0, 4.0, 3.0)])
def test_suv_peak_uniform_image(spacing):
    shape = (24, 26, 28)
    pet = np.full(shape, 7.25, dtype=np.float32)
    margin = np.array(peak_kernel(spacing).shape) // 2
    mask = _interior_blob(shape, margin, np.random.default_rng(0))
    assert mask.any()
    # Analytic: the mean of a constant over any sphere is the constant.
    assert suv_peak(pet, mask, spacing) == pytest.approx(7.25, rel=1e-9)


@pytest.mark.parametrize("spacing", [(4.0, 4.0, 4.0), (5.0, 4.0, 3.0)])
def test_suv_peak_linear_gradient(spacing):
    shape = (24, 26, 28)
    k, j, i = np.meshgrid(*(np.arange(n) for n in shape), indexing="ij")
    z, y, x = k * spacing[0], j * spacing[1], i * spacing[2]
    pet = (5.0 + 0.03 * z + 0.02 * y - 0.025 * x).astype(np.float64)
    assert pet.min() > 0
    margin = np.array(peak_kernel(spacing).shape) // 2
    mask = _interior_blob(shape, margin, np.random.default_rng(1))
    # Analytic: the mean of a linear function over a centrally symmetric sphere is its value at the centre, so
    # SUVpeak is the largest value at a voxel centre inside the mask (the sphere never leaves the image here).
    expected = pet[mask].max()
    assert suv_peak(pet, mask, spacing) == pytest.approx(expected, rel=1e-9)
    # Centres are restricted to the mask: the image maximum, outside it, is not reached.
    assert expected < pet.max() - 0.1


def _suv_peak_brute_force(pet, mask, spacing, supersample: int) -> float:
    """Loop over candidate centres (voxels in the mask); weighted mean of the voxels around each; zero outside
    the image; the highest mean."""
    weights = _sphere_weights(tuple(spacing), supersample)
    total_weight = sum(weights.values())
    best = -math.inf
    for centre in zip(*np.nonzero(mask)):
        acc = 0.0
        for offset, weight in weights.items():
            index = tuple(c + o for c, o in zip(centre, offset))
            if all(0 <= n < size for n, size in zip(index, pet.shape)):
                acc += weight * float(pet[index])  # outside the image the sphere sees zero
        best = max(best, acc / total_weight)
    return best


def _smooth_image_and_mask(seed: int):
    rng = np.random.default_rng(seed)
    shape = (14, 16, 18)
    field = ndimage.gaussian_filter(rng.standard_normal(shape), 2.0)
    pet = (5.0 + 1.5 * field / field.std()).clip(0.1).astype(np.float32)
    mask = ndimage.gaussian_filter(rng.standard_normal(shape), 2.0) > 0.08
    mask[0:2, :, 0:3] = True  # touches the image border: the zero padding matters
    return pet, mask


@pytest.mark.parametrize("seed", [0, 2])
@pytest.mark.parametrize("spacing", [(4.0, 4.0, 4.0), (5.0, 4.0, 3.0)])
def test_suv_peak_matches_brute_force_same_sampling(spacing, seed):
    # Same 21^3 sub-voxel sampling as the core: only the search (centres in the mask, zero outside the image,
    # kernel orientation) is compared, so agreement is to rounding.
    pet, mask = _smooth_image_and_mask(seed)
    assert 100 < mask.sum() < 2000
    got = suv_peak(pet, mask, spacing)
    assert got == pytest.approx(_suv_peak_brute_force(pet, mask, spacing, 21), rel=1e-9)
    assert got < float(pet[mask].max())  # a mean, not the maximum voxel


@pytest.mark.parametrize("spacing", [(2.0, 2.0, 2.0), (4.0, 4.0, 4.0), (5.0, 4.0, 3.0)])
def test_suv_peak_matches_brute_force_fine_sphere(spacing):
    # Against a 41^3-sampled sphere (converged): the core's 21^3 sampling agrees to better than 1e-3. A wrong
    # radius (6.0 mm instead of 6.2) or mirror padding would be off by more than 1%.
    pet, mask = _smooth_image_and_mask(0)
    assert suv_peak(pet, mask, spacing) == pytest.approx(_suv_peak_brute_force(pet, mask, spacing, 41), rel=1e-3)


def test_segment_uptake_matches_numpy():
    rng = np.random.default_rng(11)
    shape = (20, 22, 24)
    spacing = (5.0, 3.9, 3.9)
    pet = rng.gamma(3.0, 2.0, shape).astype(np.float32)
    ct = rng.normal(40, 20, shape).astype(np.float32)
    mask = np.zeros(shape, dtype=bool)
    mask[5:12, 6:15, 4:18] = True
    mask[8, 10, 10] = False
    values = pet[mask].astype(np.float64)
    voxel_ml = 5.0 * 3.9 * 3.9 / 1000.0

    features = segment_uptake(pet, mask, spacing)
    assert features["volume_ml"] == pytest.approx(mask.sum() * voxel_ml, rel=1e-12)
    assert features["suv_mean"] == pytest.approx(values.mean(), rel=1e-6)
    assert features["suv_max"] == pytest.approx(values.max(), rel=1e-7)
    assert features["suv_std"] == pytest.approx(values.std(), rel=1e-5)  # population SD (ddof 0), as numpy
    assert features["total_uptake_suv_ml"] == pytest.approx(values.mean() * mask.sum() * voxel_ml, rel=1e-6)
    assert features["suv_mean"] <= features["suv_peak"] <= features["suv_max"]
    assert math.isnan(features["ct_hu_mean"])  # no CT

    with_ct = segment_uptake(pet, mask, spacing, ct)
    assert with_ct["ct_hu_mean"] == pytest.approx(float(ct[mask].astype(np.float64).mean()), rel=1e-5)
    assert {k: v for k, v in with_ct.items() if k != "ct_hu_mean"} == \
        {k: v for k, v in features.items() if k != "ct_hu_mean"}


UPTAKE_COLUMNS = ["volume_ml", "suv_max", "suv_mean", "suv_std", "suv_peak", "total_uptake_suv_ml", "ct_hu_mean"]


def test_extract_features_on_virtual_patient(demo_case):
    case = read_case(demo_case)
    table = extract_features(case)
    truth = json.loads((demo_case / "simulation.json").read_text(encoding="utf-8"))
    truth_by_name = {s["name"]: s for s in truth["structures"]}
    clinical = json.loads((demo_case / "clinical.json").read_text(encoding="utf-8"))

    # One row per recognised segment, in order; simulation.json lists which structures were segmented.
    segmented = [s["name"] for s in truth["structures"] if s["segmented"]]
    assert list(table["segment"]) == [s.name for s in case.segments]
    assert sorted(table["segment"]) == sorted(segmented)
    assert (table["case_id"] == demo_case.name).all()
    assert table[UPTAKE_COLUMNS].notna().all().all()

    n_tumours = sum(1 for s in truth["structures"] if s["kind"] == "tumour" and s["segmented"])
    assert n_tumours > 0
    assert (table["n_lesions"] == n_tumours).all()

    # Patient kidney SUVmean = mean over the union of both kidney masks (equal voxel volumes, no overlap).
    kidney_union = np.zeros_like(case.pet_array, dtype=bool)
    for segment in case.segments:
        if segment.structure_type.value == "kidney":
            kidney_union |= segment.mask
    kidney_mean = float(case.pet_array[kidney_union].astype(np.float64).mean())
    np.testing.assert_allclose(table["kidney_suv_mean_patient"], kidney_mean, rtol=1e-6)
    np.testing.assert_allclose(table["suv_mean_to_kidney"], table["suv_mean"] / table["kidney_suv_mean_patient"],
                               rtol=1e-12)

    # Clinical columns are the clinical.json values (log10 PSA with a 0.01 ng/mL floor, tracer one-hot).
    for key in ("age_years", "weight_kg", "height_cm", "egfr_ml_min_1_73m2", "alp_u_l", "ldh_u_l",
                "hemoglobin_g_dl", "prior_taxane_lines", "pet_uptake_time_min"):
        assert (table[key] == float(clinical[key])).all(), key
    assert (table["prior_arpi"] == float(clinical["prior_arpi"])).all()
    np.testing.assert_allclose(table["log_psa_ng_ml"], math.log10(clinical["psa_ng_ml"] + 0.01))
    assert (table[f"tracer_{clinical['pet_tracer']}"] == 1.0).all()

    # Close to the simulator's truth where they should be.
    for _, row in table[table["structure_type"] == "kidney"].iterrows():
        s = truth_by_name[row["segment"]]
        # Rasterised ellipsoid on 4 mm voxel centres vs its analytic volume: within 5% for ~150 mL kidneys.
        assert row["volume_ml"] == pytest.approx(s["volume_ml"], rel=0.05)
        # PET SUVmean vs the true activity before PSF and noise: partial volume (6.5 mm FWHM spill-out at the
        # kidney surface) and noise lower it; within 35%.
        assert row["suv_mean"] == pytest.approx(s["pet_suv_true"], rel=0.35), row["segment"]
        # CT of a non-contrast kidney: 35 HU in the simulator (parameters.py), blurred with neighbours.
        assert -20 < row["ct_hu_mean"] < 80
