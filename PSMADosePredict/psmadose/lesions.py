"""Lesion helper: PSMA-avid lesions as connected components above an SUV threshold.

Inside a region (a segment such as the body or a hand-drawn ROI, or the whole PET), minus the organ segments
(kidneys, salivary and lacrimal glands, liver, spleen: physiological PSMA uptake), voxels at or above either an
absolute SUV or a percentage of the region's SUVmax are split into connected components (26-connectivity by
default); components smaller than a minimum volume are dropped (noise, partial-volume specks). Each remaining
component becomes a ``lesion_NN`` segment, numbered by decreasing SUVmax. A starting point for review in the
Segment Editor, not an automatic segmentation.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from .errors import InputError
from .structures import StructureType

# Physiological PSMA uptake: excluded from the lesion search (every structure type but tumour).
ORGAN_TYPES = tuple(t.value for t in StructureType if t is not StructureType.TUMOUR)


@dataclass(frozen=True)
class LesionSettings:
    threshold_suv: float | None = None  # absolute SUV threshold, or
    percent_of_max: float | None = None  # percentage (0-100] of the SUVmax inside the region
    min_volume_ml: float = 0.5
    organ_margin_mm: float = 0.0  # organs are dilated by this margin before exclusion
    connectivity: int = 3  # 1: faces (6), 2: faces+edges (18), 3: 26-connectivity

    def validated(self) -> LesionSettings:
        if (self.threshold_suv is None) == (self.percent_of_max is None):
            raise InputError("give either an SUV threshold or a percentage of SUVmax, not both or neither")
        if self.threshold_suv is not None and not self.threshold_suv > 0:
            raise InputError(f"SUV threshold {self.threshold_suv} must be > 0 (e.g. 3 for PSMA PET)")
        if self.percent_of_max is not None and not 0 < self.percent_of_max <= 100:
            raise InputError(f"percentage of SUVmax {self.percent_of_max} must be in (0, 100] (e.g. 41)")
        if self.min_volume_ml < 0 or self.organ_margin_mm < 0:
            raise InputError("minimum volume and organ margin must be >= 0")
        if self.connectivity not in (1, 2, 3):
            raise InputError("connectivity must be 1 (6-), 2 (18-) or 3 (26-neighbourhood)")
        return self


@dataclass
class LesionCandidate:
    mask: np.ndarray  # bool (k, j, i) on the PET grid
    volume_ml: float
    suv_max: float
    suv_mean: float


def _dilate_mm(mask: np.ndarray, spacing_kji, margin_mm: float) -> np.ndarray:
    if margin_mm <= 0 or not mask.any():
        return mask
    radius = [int(np.ceil(margin_mm / s)) for s in spacing_kji]
    grids = np.ogrid[tuple(slice(-r, r + 1) for r in radius)]
    ball = sum((g * s / margin_mm) ** 2 for g, s in zip(grids, spacing_kji)) <= 1.0
    return ndimage.binary_dilation(mask, structure=ball)


def find_lesions(pet: np.ndarray, spacing_kji, settings: LesionSettings, region: np.ndarray | None = None,
                 exclude: np.ndarray | None = None) -> list[LesionCandidate]:
    """Connected components above the threshold inside ``region`` minus ``exclude`` (arrays (k, j, i))."""
    settings = settings.validated()
    inside = np.ones(pet.shape, dtype=bool) if region is None else region.astype(bool, copy=True)
    if exclude is not None:
        inside &= ~_dilate_mm(exclude.astype(bool), spacing_kji, settings.organ_margin_mm)
    if not inside.any():
        raise InputError("the search region is empty after removing the organ segments; choose another region")
    if settings.threshold_suv is not None:
        threshold = settings.threshold_suv
    else:
        threshold = settings.percent_of_max / 100.0 * float(pet[inside].max())
    candidates = inside & (pet >= threshold)
    structure = ndimage.generate_binary_structure(3, settings.connectivity)
    labels, count = ndimage.label(candidates, structure=structure)
    if count == 0:
        return []
    voxel_ml = float(np.prod(spacing_kji)) / 1000.0
    index = np.arange(1, count + 1)
    sizes = ndimage.sum_labels(np.ones_like(pet, dtype=np.float64), labels, index)
    maxima = ndimage.maximum(pet, labels, index)
    means = ndimage.mean(pet, labels, index)
    slices = ndimage.find_objects(labels)
    lesions = []
    for label, size, suv_max, suv_mean, box in zip(index, sizes, maxima, means, slices):
        volume = float(size) * voxel_ml
        if volume < settings.min_volume_ml:
            continue
        mask = np.zeros(pet.shape, dtype=bool)
        mask[box] = labels[box] == label
        lesions.append(LesionCandidate(mask, volume, float(suv_max), float(suv_mean)))
    lesions.sort(key=lambda c: -c.suv_max)
    return lesions
