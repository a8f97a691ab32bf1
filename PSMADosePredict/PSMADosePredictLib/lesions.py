"""Lesion helper for the Slicer module: runs psmadose.lesions.find_lesions (connected components above an SUV
threshold, organs excluded; see there) on MRML volumes and segmentations and adds each lesion as a segment."""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk
from psmadose.errors import InputError
from psmadose.images import resample_to, same_grid
from psmadose.lesions import ORGAN_TYPES, LesionCandidate, LesionSettings, find_lesions
from psmadose.segmentation import STRUCTURE_COLORS

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
    lesions = find_lesions(array, spacing_kji, settings, region, exclude)
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


findLesions = find_lesions  # the Lib's camelCase name, kept for callers of the Slicer module
__all__ = ["LesionCandidate", "LesionSettings", "addLesionSegments", "findLesions", "find_lesions"]
