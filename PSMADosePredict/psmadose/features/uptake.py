"""Per-segment PET/CT metrics: volume, SUVmax/mean/std/peak, total uptake, CT HU.

SUVpeak follows PERCIST 1.0 (Wahl et al., J Nucl Med 2009): the highest mean SUV in a 1 cm^3 sphere
(radius 6.2 mm), here over sphere centres at voxel centres inside the segment; the sphere itself may reach
outside the segment. Voxels are weighted by the fraction of their volume inside the sphere (supersampled),
so the sphere is exactly 1 mL whatever the voxel size.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
from scipy import ndimage

from ..images import padded_bounds

PEAK_SPHERE_ML = 1.0
PEAK_RADIUS_MM = (3.0 * PEAK_SPHERE_ML * 1000.0 / (4.0 * math.pi)) ** (1.0 / 3.0)  # 6.20 mm


@lru_cache(maxsize=16)
def peak_kernel(spacing_kji: tuple[float, float, float], supersample: int = 21) -> np.ndarray:
    """Weights of a 1 mL sphere on a voxel grid (sum 1), from the sub-voxel fraction inside the sphere.

    Computed one kernel slab at a time so that fine supersampling stays small in memory at any voxel size.
    """
    half = [int(math.ceil(PEAK_RADIUS_MM / s + 0.5)) for s in spacing_kji]
    offsets = (np.arange(supersample) + 0.5) / supersample - 0.5
    axes = []
    for n, s in zip(half, spacing_kji):
        centres = np.arange(-n, n + 1) * s
        axes.append(centres[:, None] + offsets[None, :] * s)  # (voxels, samples) positions along the axis
    shape = [2 * n + 1 for n in half]
    fraction = np.empty(shape)
    y2 = axes[1][:, :, None, None] ** 2
    x2 = axes[2][None, None, :, :] ** 2
    for k in range(shape[0]):
        z2 = axes[0][k][:, None, None, None, None] ** 2
        inside = (z2 + y2[None] + x2[None]) <= PEAK_RADIUS_MM**2  # (sz, ny, sy, nx, sx)
        fraction[k] = inside.mean(axis=(0, 2, 4))
    return fraction / fraction.sum()


def suv_peak(pet: np.ndarray, mask: np.ndarray, spacing_kji: tuple[float, float, float]) -> float:
    kernel = peak_kernel(tuple(float(s) for s in spacing_kji))
    box = padded_bounds(mask, [k // 2 for k in kernel.shape])
    # Outside the image the sphere sees nothing: pad with zeros ('constant') rather than mirror.
    local_mean = ndimage.correlate(pet[box].astype(np.float64), kernel, mode="constant", cval=0.0)
    return float(local_mean[mask[box]].max())


def segment_uptake(pet: np.ndarray, mask: np.ndarray, spacing_kji: tuple[float, float, float],
                   ct: np.ndarray | None = None) -> dict[str, float]:
    values = pet[mask]
    voxel_ml = float(np.prod(spacing_kji)) / 1000.0
    volume_ml = values.size * voxel_ml
    suv_mean = float(values.mean())
    features = {
        "volume_ml": volume_ml,
        "suv_max": float(values.max()),
        "suv_mean": suv_mean,
        "suv_std": float(values.std()),
        "suv_peak": suv_peak(pet, mask, spacing_kji),
        "total_uptake_suv_ml": suv_mean * volume_ml,
    }
    features["ct_hu_mean"] = float(ct[mask].mean()) if ct is not None else math.nan
    return features
