"""Tissue concentration (psmadose.features.concentration) on analytic spheres built here, not by the simulator.

Expected values are analytic: a sphere of concentration C in a background B, its activity from the exact fraction
of each voxel inside the sphere (supersampled), blurred with a Gaussian. Blurring conserves activity, so the
activity method must return C x V_true / V_drawn and the extent method C itself, whatever the blur.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from psmadose.features.concentration import tissue_concentration
from scipy import ndimage

VOXEL = 4.0
SHAPE = (48, 48, 48)


def _sphere(radius_mm: float, centre_mm=(96.0, 96.0, 96.0), offset_mm=(0.0, 0.0, 0.0), supersample: int = 4):
    """(fraction of each voxel inside, voxel-centre mask): the activity uses the fraction, the drawing the mask."""
    axis = (np.arange(SHAPE[0]) + 0.5) * VOXEL
    sub = ((np.arange(supersample) + 0.5) / supersample - 0.5) * VOXEL
    fraction = np.zeros(SHAPE)
    for dz in sub:
        for dy in sub:
            for dx in sub:
                z = axis[:, None, None] + dz - centre_mm[0] - offset_mm[0]
                y = axis[None, :, None] + dy - centre_mm[1] - offset_mm[1]
                x = axis[None, None, :] + dx - centre_mm[2] - offset_mm[2]
                fraction += (z**2 + y**2 + x**2) <= radius_mm**2
    fraction /= supersample**3
    z, y, x = np.meshgrid(axis - centre_mm[0], axis - centre_mm[1], axis - centre_mm[2], indexing="ij")
    return fraction, (z**2 + y**2 + x**2) <= radius_mm**2


def _image(fraction, concentration, background, fwhm_mm, noise_sd=0.0, seed=0):
    activity = background * (1 - fraction) + concentration * fraction
    sigma = fwhm_mm / 2.3548 / VOXEL
    image = ndimage.gaussian_filter(activity, sigma, mode="nearest") if fwhm_mm > 0 else activity
    if noise_sd:
        image = image + noise_sd * np.random.default_rng(seed).standard_normal(SHAPE)
    return image.astype(np.float32)


@pytest.mark.parametrize("fwhm_mm", [0.0, 5.0, 9.0])
def test_large_sphere_gives_its_concentration_whatever_the_blur(fwhm_mm):
    # 150 mL sphere (kidney-sized), C = 20, B = 1: the extent method recovers C (the exact total activity over
    # the image-derived volume). 3.5 % allows the voxelised half-level surface and its inward shift on a curved
    # surface (~sigma^2 / r = 0.45 mm at 9 mm FWHM, -4 % of the volume).
    radius = (150_000 * 3 / (4 * math.pi)) ** (1 / 3)
    fraction, mask = _sphere(radius)
    result = tissue_concentration(_image(fraction, 20.0, 1.0, fwhm_mm), mask, (VOXEL,) * 3, 6.5)
    assert result.method == "extent"
    assert result.suv == pytest.approx(20.0, rel=0.035)


@pytest.mark.parametrize("offset_voxels", [-1, 1])
def test_large_sphere_drawn_one_voxel_tight_or_loose_keeps_its_concentration(offset_voxels):
    # What a drawing habit must not change (issue 11): the mean inside a loose contour drops ~30 %; this must not.
    radius = (150_000 * 3 / (4 * math.pi)) ** (1 / 3)
    fraction, mask = _sphere(radius)
    drawn = ndimage.binary_dilation(mask) if offset_voxels > 0 else ndimage.binary_erosion(mask)
    image = _image(fraction, 20.0, 1.0, 6.5)
    naive_ratio = image[drawn].mean() / image[mask].mean()
    result = tissue_concentration(image, drawn, (VOXEL,) * 3, 6.5)
    assert abs(naive_ratio - 1) > 0.05  # the naive mean does move
    assert result.suv == pytest.approx(20.0, rel=0.02)


@pytest.mark.parametrize("fwhm_mm", [0.0, 5.0, 9.0])
def test_small_sphere_activity_method_conserves_activity(fwhm_mm):
    # 1 mL sphere: too small to resolve, so activity / drawn volume. Expected: (C - B) x V_true / V_drawn + B
    # (analytic; the drawn voxel-centre mask differs from the true volume; B = 0.5 fills the drawn volume).
    # Centred on a voxel centre (19 voxels drawn, 1.22 mL). The region grown by one FWHM holds 95-100 % of what
    # blurs out of a sphere this small (3D Gaussian tail; least at 9 mm), hence 6 %.
    fraction, mask = _sphere(6.2, centre_mm=(98.0, 98.0, 98.0))
    expected = (12.0 - 0.5) * fraction.sum() / mask.sum() + 0.5
    result = tissue_concentration(_image(fraction, 12.0, 0.5, fwhm_mm), mask, (VOXEL,) * 3, max(fwhm_mm, 5.0))
    assert result.method == "activity"
    assert result.suv == pytest.approx(expected, rel=0.06)


def test_noise_averages_out():
    radius = (150_000 * 3 / (4 * math.pi)) ** (1 / 3)
    fraction, mask = _sphere(radius)
    values = [tissue_concentration(_image(fraction, 20.0, 1.0, 6.5, noise_sd=3.0, seed=s), mask, (VOXEL,) * 3,
                                   6.5).suv for s in range(3)]
    assert np.allclose(values, 20.0, rtol=0.03)


def test_a_hot_neighbour_is_not_counted():
    # Two touching spheres: the second (C = 40) is another segment and must not add to the first's activity.
    radius = (30_000 * 3 / (4 * math.pi)) ** (1 / 3)
    first, mask = _sphere(radius, centre_mm=(96.0, 96.0, 70.0))
    second, other = _sphere(radius, centre_mm=(96.0, 96.0, 70.0 + 2 * radius + VOXEL))
    image = _image(np.clip(first, 0, 1), 10.0, 1.0, 6.5) + _image(second, 40.0, 0.0, 6.5)
    alone = tissue_concentration(_image(first, 10.0, 1.0, 6.5), mask, (VOXEL,) * 3, 6.5).suv
    with_neighbour = tissue_concentration(image, mask, (VOXEL,) * 3, 6.5, others=other).suv
    assert with_neighbour == pytest.approx(alone, rel=0.12)
