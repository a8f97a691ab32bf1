"""Tissue activity concentration of a segment that does not depend on how the PET image was formed.

The mean SUV inside a drawn contour depends on things that say nothing about the tissue: the scanner's
resolution (spill-out across the edge), noise, voxel size, texture, and how tightly the contour was drawn
(one 4 mm voxel on the surface of a 150 mL kidney is ~40 % of its volume). The dose baseline
(``psmadose.physics``) needs the concentration of the tissue itself. Blurring conserves activity, so the
concentration is always *activity / volume*, with the activity summed over a region grown by one FWHM
beyond the structure (which holds what blurred out of it) above the local background, plus the background the
tissue displaces within its own volume. What differs is the volume:

- **extent** (resolved structures: kidneys, parotids, most submandibular glands, large lesions): the tissue's own
  extent from the image, the voxels within 1.5 voxels of the drawn contour that reach half-way between the local
  background and the segment's upper quartile (the half-level iso-surface of a blurred object lies on its true
  surface; enclosed holes filled). A contour drawn one voxel loose or tight, a cortex/medulla pattern, noise
  and blur leave it where it is.
- **activity** (small structures: lacrimal glands, small lesions, whose half-level surface shrinks inside the
  true one): the drawn volume. This does not depend on the resolution or texture (a necrotic core counts at its
  true weight) but does depend on the drawing, which the output says (``uptake_method``).
- **blend**: near the limit (extent radius 1.15-1.35 FWHM, volume 3.5-4.5 mL) a linear blend of the two, so a structure
  does not jump between methods when noise or blur change a little.

The local background is the median PET in a shell beyond the grown region; voxels of other segments are
excluded from the grown region, the extent and the shell (a neighbouring organ is not background). Related
methods: the iso-contour (fixed-threshold) volumes of Boellaard et al. (EANM guideline 2015) and the
activity-conserving partial-volume correction of Rousset et al. (J Nucl Med 1998).

The PET resolution is ``pet_resolution_mm`` of ``clinical.json`` when given, else a default per tracer
(``DEFAULT_RESOLUTION_MM``); the output records which. It sets the grown region and the size a structure needs
to count as resolved.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from ..images import padded_bounds

# Typical reconstructed whole-body PET resolution (FWHM, mm) of current scanners with clinical
# reconstructions: ~5-7 mm for 18F, ~1-2 mm worse for 68Ga (positron range). Assumption for the default only;
# give ``pet_resolution_mm`` in clinical.json when the site knows its value.
DEFAULT_RESOLUTION_MM = {"18F-DCFPyL": 6.5, "18F-PSMA-1007": 6.5, "68Ga-PSMA-11": 7.5}
FALLBACK_RESOLUTION_MM = 7.0

# The grown region reaches this many FWHM beyond the surface: ~99 % of what blurs across a surface (2.35 sigma),
# while a larger region adds background error (measured on virtual lesions: 1.25 FWHM + 1 voxel doubled the
# spread of small-lesion uptake for a 2 % gain in recovered activity).
GROW_FWHM = 1.0
SHELL_FWHM = 0.75  # background shell thickness beyond the grown region (at least two voxels)
EXTENT_LEVEL = 0.5  # iso-level (between background and the segment's upper quartile) that marks the surface
# Resolved: the extent's inscribed radius at least 1.35 FWHM and its volume at least 4.5 mL (below, the half-level
# surface of a blurred object shrinks inside the true one and moves with the PSF); unresolved below 1.15 FWHM or
# 3.5 mL; linear in between. A wider ramp (from 2.5 mL) doubled the tumours' change under a 5/8 mm PSF.
RESOLVED_DEPTH_FWHM = (1.15, 1.35)
RESOLVED_ML = (3.5, 4.5)
DRAWN_DEPTH_FWHM = 0.75  # and the drawn contour's, so a leak from a tiny gland into a neighbour does not count
# The extent is searched up to this many voxels beyond the drawn contour: far enough to recover a contour drawn
# one voxel tight, close enough not to swallow a concavity (the renal hilum) or a neighbour.
SEARCH_VOXELS = 1.5
EXTENT_AGREEMENT = (0.4, 3.5)  # extent/drawn volume accepted (an 8 mL gland drawn 1 voxel tight: ~3)


@dataclass(frozen=True)
class Concentration:
    suv: float  # tissue activity concentration as SUV (g/mL)
    method: str  # "extent", "activity" (drawn volume) or "blend" of the two for structures near the limit
    background_suv: float
    volume_ml: float  # volume the activity was divided by


def resolution_mm(tracer: str, given: float | None) -> tuple[float, str]:
    """(FWHM in mm, source) for the recovery model."""
    if given is not None:
        return float(given), "clinical.json pet_resolution_mm"
    return DEFAULT_RESOLUTION_MM.get(tracer, FALLBACK_RESOLUTION_MM), f"default for {tracer}"


def _connected_to(region: np.ndarray, seed: np.ndarray) -> np.ndarray:
    labels, n = ndimage.label(region)
    if n == 0:
        return region
    keep = np.unique(labels[seed & region])
    return np.isin(labels, keep[keep > 0])


def tissue_concentration(pet: np.ndarray, mask: np.ndarray, spacing_kji: tuple[float, float, float],
                         fwhm_mm: float, others: np.ndarray | None = None) -> Concentration:
    """Robust activity concentration (SUV) of the tissue a segment outlines; see the module docstring.

    ``others`` marks voxels of other segments (excluded from grown region, extent and background shell).
    """
    spacing = np.asarray(spacing_kji, dtype=float)
    fwhm = max(float(fwhm_mm), float(spacing.min()))
    grow_mm = GROW_FWHM * fwhm
    shell_mm = max(SHELL_FWHM * fwhm, 2.0 * float(spacing.max()))
    search_mm = SEARCH_VOXELS * float(spacing.max())
    pad = tuple(int(math.ceil((search_mm + grow_mm + shell_mm) / s)) + 1 for s in spacing)
    box = padded_bounds(mask, pad)
    m = mask[box]
    image = pet[box].astype(np.float64)
    other = others[box] & ~m if others is not None else np.zeros_like(m)
    voxel_ml = float(np.prod(spacing)) / 1000.0
    outside_mm = ndimage.distance_transform_edt(~m, sampling=spacing)
    shell = (outside_mm > grow_mm + search_mm) & (outside_mm <= grow_mm + search_mm + shell_mm) & ~other
    background = float(np.median(image[shell])) if shell.any() else 0.0

    # The tissue's own extent, from the image: the half-level iso-surface of a blurred object lies on its true
    # surface, so a contour drawn a voxel loose or tight does not move it. The level is the upper quartile of the
    # segment after light smoothing (a noise-biased maximum would move the surface with the noise level).
    level = float(np.percentile(ndimage.gaussian_filter(image, 1.0)[m], 75))
    search = (outside_mm <= search_mm) & ~other
    extent = _connected_to(search & (image >= background + EXTENT_LEVEL * (level - background)), m)
    extent = ndimage.binary_fill_holes(extent)
    depth_mm = float(ndimage.distance_transform_edt(extent, sampling=spacing).max()) if extent.any() else 0.0
    drawn_ml = float(m.sum()) * voxel_ml
    extent_ml = float(extent.sum()) * voxel_ml
    # A leak into a hot neighbour or a spurious blob: the image-derived extent must agree with the drawing.
    agrees = EXTENT_AGREEMENT[0] <= extent_ml / drawn_ml <= EXTENT_AGREEMENT[1]
    drawn_depth_mm = float(ndimage.distance_transform_edt(m, sampling=spacing).max())
    guards = drawn_depth_mm >= DRAWN_DEPTH_FWHM * fwhm and level > background and agrees
    # How resolved the structure is, from 0 (use the drawn volume) to 1 (use the extent), ramped so that a
    # structure near the limit does not jump between methods when noise or blur change a little.
    weight = _ramp(depth_mm / fwhm, *RESOLVED_DEPTH_FWHM) * _ramp(extent_ml, *RESOLVED_ML) if guards else 0.0

    def concentration(region: np.ndarray) -> tuple[float, float]:
        region_outside = ndimage.distance_transform_edt(~region, sampling=spacing)
        grown = (region | (region_outside <= grow_mm)) & ~other
        volume_ml = float(region.sum()) * voxel_ml
        # Activity above background, plus the background the tissue displaces within its own volume.
        activity = float((image[grown] - background).sum()) * voxel_ml + background * volume_ml
        return activity / volume_ml, volume_ml

    suv, volume_ml = concentration(m) if weight < 1.0 else (0.0, 0.0)
    if weight > 0.0:
        suv_extent, volume_extent = concentration(extent)
        suv = weight * suv_extent + (1.0 - weight) * suv
        volume_ml = weight * volume_extent + (1.0 - weight) * volume_ml
    method = "extent" if weight >= 1.0 else "activity" if weight <= 0.0 else "blend"
    return Concentration(suv, method, background, volume_ml)


def _ramp(value: float, start: float, stop: float) -> float:
    return float(np.clip((value - start) / (stop - start), 0.0, 1.0))
