"""Segmentations: Slicer ``.seg.nrrd`` (through slicerio) and ``labels.nii.gz`` + ``labels.json``.

Segments are returned as boolean masks on the segmentation's own grid; ``case.py`` brings them onto the
PET grid. Segment IDs are not names: segments are always identified by name here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import slicerio

from .errors import InputError
from .files import read_json
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


_FORBIDDEN_IN_NAMES = "|"  # separates Slicer's segment tags in the .seg.nrrd header
_NAME_PLACEHOLDER = "psmadose-segment-name-{}"
MAX_NAME_LENGTH = 200


def check_segment_name(name: str, where) -> str:
    """A segment name every format can hold: any Unicode letters, but no control characters (newline, tab), no
    line/paragraph separators and no '|'. Refused with a one-line error, never rewritten."""
    import unicodedata

    if not name.strip():
        raise InputError(f"{where}: a segment has an empty name; name every segment")
    bad = [c for c in name if c in _FORBIDDEN_IN_NAMES or unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp")]
    if bad:
        raise InputError(f"{where}: segment name {name!r} contains {bad[0]!r}, which the segmentation, CSV and "
                         "report formats cannot hold; rename the segment (letters, digits, spaces, _ - . are fine)")
    if len(name) > MAX_NAME_LENGTH:
        raise InputError(f"{where}: segment name {name[:40]!r}... is too long ({len(name)} characters, limit "
                         f"{MAX_NAME_LENGTH}); give it a shorter name")
    return name


def _nrrd_unescape(value: str) -> str:
    # teem writes key/value pairs with '\\' for a backslash and '\n' for a newline
    out, index = [], 0
    while index < len(value):
        char = value[index]
        if char == "\\" and index + 1 < len(value) and value[index + 1] in "\\n":
            out.append("\n" if value[index + 1] == "n" else "\\")
            index += 2
            continue
        out.append(char)
        index += 1
    return "".join(out)


def _header_bytes(path: Path) -> bytes:
    with open(path, "rb") as handle:
        head = handle.read(1 << 20)
    end = head.find(b"\n\n")
    return head if end < 0 else head[:end]


def _utf8_segment_names(path: Path) -> list[str]:
    """Segment names in header order, decoded as UTF-8 (as Slicer writes them; pynrrd drops non-ASCII bytes)."""
    import re

    names: dict[int, str] = {}
    for line in _header_bytes(path).split(b"\n"):
        match = re.match(rb"Segment(\d+)_Name:=(.*)$", line.rstrip(b"\r"))
        if match:
            try:
                names[int(match.group(1))] = _nrrd_unescape(match.group(2).decode("utf-8"))
            except UnicodeDecodeError:
                raise InputError(f"{path}: segment {int(match.group(1)) + 1} has a name that is not UTF-8; rename "
                                 "it in Slicer and save again") from None
    return [names[index] for index in sorted(names)]


def _write_utf8_names(path: Path, names: list[str]) -> None:
    """Replace the ASCII placeholders slicerio wrote by the real (UTF-8, teem-escaped) names."""
    data = Path(path).read_bytes()
    end = data.find(b"\n\n")
    header, rest = data[:end].split(b"\n"), data[end:]
    for n, line in enumerate(header):
        key, sep, value = line.partition(b":=")
        if sep and value.startswith(b"psmadose-segment-name-"):
            index = int(value.rsplit(b"-", 1)[1])
            header[n] = key + b":=" + names[index].replace("\\", "\\\\").encode("utf-8")
    Path(path).write_bytes(b"\n".join(header) + rest)


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
    utf8_names = _utf8_segment_names(path)
    listed = seg.get("segments", [])
    for index, segment in enumerate(listed):
        mask_ijk = slicerio.segment_mask(seg, segment)
        name = utf8_names[index] if len(utf8_names) == len(listed) else str(segment.get("name", segment.get("id")))
        segments.append(RawSegment(
            name=check_segment_name(name, path),
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
        names = read_json(labels_json, "label list", max_bytes=1_000_000)
        names = {int(k): check_segment_name(str(v), labels_json) for k, v in names.items()}
    except (ValueError, AttributeError) as exc:
        if isinstance(exc, InputError):
            raise
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
        check_segment_name(segment.name, path)
        fields = {"id": f"Segment_{index + 1}", "name": _NAME_PLACEHOLDER.format(index),
                  "color": [float(c) for c in segment.color],
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
    _write_utf8_names(path, [segment.name for segment in segments])
