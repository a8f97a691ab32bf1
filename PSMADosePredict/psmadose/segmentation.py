"""Segmentations: Slicer ``.seg.nrrd`` (through slicerio) and ``labels.nii.gz`` + ``labels.json``.

Segments are returned as boolean masks on the segmentation's own grid; ``case.py`` brings them onto the
PET grid. Segment IDs are not names: segments are always identified by name here.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import slicerio

from .errors import InputError
from .images import geometry_from_ijk_to_lps, ijk_to_lps, image_from_array, mask_bounds, read_image

# Display colours (RGB 0-1) by structure type, close to Slicer's General Anatomy terminology colours.
STRUCTURE_COLORS = {
    "tumour": (0.85, 0.2, 0.2),
    "kidney": (0.72, 0.47, 0.36),
    "parotid": (0.75, 0.6, 0.25),
    "submandibular": (0.85, 0.7, 0.35),
    "lacrimal": (0.6, 0.8, 0.9),
    "liver": (0.86, 0.51, 0.4),
    "spleen": (0.62, 0.42, 0.62),
}
STRUCTURE_TYPE_TAG = "PSMADosePredict.StructureType"


@dataclass
class RawSegment:
    name: str
    mask: np.ndarray  # bool, (k, j, i) on the segmentation's grid
    color: tuple[float, float, float] | None
    tags: dict[str, str]


def read_segmentation(path: Path) -> tuple[sitk.Image, list[RawSegment]]:
    """Segments of a .seg.nrrd or labels.nii.gz(+labels.json), with the reference geometry as an empty image."""
    path = Path(path)
    if path.name.endswith(".seg.nrrd"):
        return _read_seg_nrrd(path)
    return _read_labels(path)


def _read_seg_nrrd(path: Path) -> tuple[sitk.Image, list[RawSegment]]:
    try:
        seg = slicerio.read_segmentation(str(path))
    except Exception as exc:  # slicerio/pynrrd raise many types for corrupt headers
        raise InputError(f"{path}: cannot read the segmentation ({type(exc).__name__}: {exc}); "
                         "re-save it from Slicer as .seg.nrrd") from None
    voxels = seg["voxels"]
    if voxels is None or voxels.ndim not in (3, 4):
        raise InputError(f"{path}: segmentation has no 3D voxel data; re-save it from Slicer as .seg.nrrd")
    spacing, origin, direction = geometry_from_ijk_to_lps(seg["ijkToLPS"])
    shape_ijk = voxels.shape[-3:]
    geometry = image_from_array(np.zeros(shape_ijk[::-1], dtype=np.uint8), spacing=spacing, origin=origin,
                                direction=direction)
    segments = []
    for segment in seg.get("segments", []):
        mask_ijk = slicerio.segment_mask(seg, segment)
        segments.append(RawSegment(
            name=str(segment.get("name", segment.get("id"))),
            mask=np.ascontiguousarray(mask_ijk.transpose(2, 1, 0)),
            color=tuple(float(c) for c in segment["color"]) if "color" in segment else None,
            tags=dict(segment.get("tags", {})),
        ))
    return geometry, segments


def _read_labels(path: Path) -> tuple[sitk.Image, list[RawSegment]]:
    labels_json = path.parent / "labels.json"
    if not labels_json.is_file():
        raise InputError(f"{path}: label image without labels.json beside it; add labels.json "
                         '{"1": "kidney_left", ...} naming each label')
    try:
        names = json.loads(labels_json.read_text(encoding="utf-8"))
        names = {int(k): str(v) for k, v in names.items()}
    except (ValueError, AttributeError) as exc:
        raise InputError(f"{labels_json}: expected a JSON object {{\"1\": \"kidney_left\", ...}} ({exc})") from None
    image = read_image(path, "label")
    labels = sitk.GetArrayFromImage(image)
    if not np.issubdtype(labels.dtype, np.integer):
        if not np.all(np.equal(np.mod(labels, 1), 0)):
            raise InputError(f"{path}: label image has non-integer values; save it as an integer label map")
        labels = labels.astype(np.int64)
    geometry = image_from_array(np.zeros(labels.shape, dtype=np.uint8), reference=image)
    segments = [RawSegment(name=name, mask=labels == value, color=None, tags={})
                for value, name in sorted(names.items())]
    unnamed = sorted(set(np.unique(labels).tolist()) - set(names) - {0})
    if unnamed:
        raise InputError(f"{path}: label value(s) {unnamed} have no name in labels.json; add them or "
                         "set those voxels to 0")
    return geometry, segments


@dataclass
class SegmentToWrite:
    name: str
    mask: np.ndarray  # bool (k, j, i) on the reference grid
    color: tuple[float, float, float]
    structure_type: str | None = None


def write_segmentation(path: Path, reference: sitk.Image, segments: list[SegmentToWrite]) -> None:
    """Write segments as a Slicer .seg.nrrd on the reference image's grid (overlaps go to extra layers).

    Segments are composed into label layers as Slicer stores them (first layer without overlap, a new layer
    otherwise), working inside each segment's bounding box: on a whole-body grid this is ~10x faster than
    adding full-volume masks one by one.
    """
    shape_kji = tuple(reference.GetSize()[::-1])
    layers: list[np.ndarray] = []
    next_label: list[int] = []
    fields_list = []
    for index, segment in enumerate(segments):
        if segment.mask.shape != shape_kji:
            raise ValueError(f"segment {segment.name!r}: mask shape {segment.mask.shape} is not the reference grid")
        fields = {"id": f"Segment_{index + 1}", "name": segment.name, "color": [float(c) for c in segment.color],
                  "nameAutoGenerated": False, "colorAutoGenerated": False}
        if segment.structure_type:
            fields["tags"] = {STRUCTURE_TYPE_TAG: segment.structure_type}
        bounds = mask_bounds(segment.mask)
        if bounds is None:
            box, inside = (slice(0, 0),) * 3, np.zeros((0, 0, 0), dtype=bool)
            fields["extent"] = [0, -1, 0, -1, 0, -1]
        else:
            box = tuple(slice(first, last + 1) for first, last in bounds)
            inside = segment.mask[box]
            fields["extent"] = [v for first_last in reversed(bounds) for v in first_last]  # i, j, k
        for layer_index, layer in enumerate(layers):
            if next_label[layer_index] <= 255 and not layer[box][inside].any():
                break
        else:
            layers.append(np.zeros(shape_kji, dtype=np.uint8))
            next_label.append(1)
            layer_index = len(layers) - 1
        label = next_label[layer_index]
        layers[layer_index][box][inside] = label
        next_label[layer_index] += 1
        fields.update(labelValue=label, layer=layer_index)
        fields_list.append(fields)
    if not layers:
        layers.append(np.zeros(shape_kji, dtype=np.uint8))
    voxels_ijk = [layer.transpose(2, 1, 0) for layer in layers]
    seg = {"voxels": voxels_ijk[0] if len(voxels_ijk) == 1 else np.stack(voxels_ijk),
           "ijkToLPS": ijk_to_lps(reference), "segments": fields_list,
           "containedRepresentationNames": ["Binary labelmap"], "masterRepresentation": "Binary labelmap"}
    slicerio.write_segmentation(str(path), seg)
