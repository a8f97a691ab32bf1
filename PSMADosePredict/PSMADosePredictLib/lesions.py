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
import SimpleITK as sitk
from psmadose.errors import InputError
from psmadose.images import resample_to, same_grid
from psmadose.segmentation import STRUCTURE_COLORS
from scipy import ndimage

from .convert import (
    _toWorldMatrix,
    addSegmentFromMask,
    imageFromVolumeNode,
    segmentIdByName,
    segmentMaskImage,
    segmentNames,
    segmentStructureTypes,
    volumeIjkToRas,
)

ORGAN_TYPES = ("kidney", "parotid", "submandibular", "lacrimal", "liver", "spleen")


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


def findLesions(pet: np.ndarray, spacing_kji, settings: LesionSettings, region: np.ndarray | None = None,
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


def _maskOnGrid(segmentationNode, name: str, pet: sitk.Image) -> np.ndarray:
    image = segmentMaskImage(segmentationNode, segmentIdByName(segmentationNode, name))
    if image is None:
        return np.zeros(pet.GetSize()[::-1], dtype=bool)
    if not same_grid(image, pet):
        image = resample_to(image, pet, nearest=True)
    return sitk.GetArrayFromImage(image).astype(bool)


def addLesionSegments(petNode, segmentationNode, settings: LesionSettings, regionSegmentName: str | None = None,
                      prefix: str = "lesion") -> list[str]:
    """Add one ``<prefix>_NN`` segment per lesion found; returns the new segment names.

    Numbering continues after existing ``<prefix>_NN`` names; organ segments (by structure type) are excluded
    from the search, and so are existing tumour segments (a lesion is not found twice).
    """
    pet = imageFromVolumeNode(petNode, "PET")
    array = sitk.GetArrayFromImage(pet).astype(np.float32)
    spacing_kji = tuple(pet.GetSpacing()[::-1])
    names = segmentNames(segmentationNode)
    region = None
    if regionSegmentName:
        if regionSegmentName not in names:
            raise InputError(f"region segment {regionSegmentName!r} is not in {segmentationNode.GetName()}")
        region = _maskOnGrid(segmentationNode, regionSegmentName, pet)
    types = segmentStructureTypes(segmentationNode)
    exclude = np.zeros(array.shape, dtype=bool)
    for name, kind in types.items():
        if name != regionSegmentName and kind in ORGAN_TYPES + ("tumour",):
            exclude |= _maskOnGrid(segmentationNode, name, pet)
    lesions = findLesions(array, spacing_kji, settings, region, exclude)
    used = {n for n in names if n.startswith(f"{prefix}_")}
    # The labelmap goes into the segmentation's own coordinates (it may sit under another transform).
    ijkToLocal = np.linalg.inv(_toWorldMatrix(segmentationNode)) @ volumeIjkToRas(petNode)
    added, number = [], 1
    for lesion in lesions:
        while f"{prefix}_{number:02d}" in used:
            number += 1
        name = f"{prefix}_{number:02d}"
        used.add(name)
        addSegmentFromMask(segmentationNode, name, lesion.mask, ijkToLocal, STRUCTURE_COLORS["tumour"], "tumour")
        added.append(name)
    return added
