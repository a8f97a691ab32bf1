"""Read/write ``.seg.nrrd`` files with Slicer's own storage node (slicer-core) to cross-check psmadose.

Every ``ReadData``/``WriteData`` return value is checked: VTK logs errors instead of raising. Segments are
reported by NAME (segment IDs are not names).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import vtk
from psmadose.segmentation import STRUCTURE_TYPE_TAG
from PSMADosePredictLib.convert import _scene, _storageMessages
from vtk.util import numpy_support

BINARY_LABELMAP = "Binary labelmap"
# vtkSegment cannot list its tags from Python (only GetTag(key)), so these keys are looked up.
DEFAULT_TAG_KEYS = (STRUCTURE_TYPE_TAG, "TerminologyEntry", "Segmentation.Status")
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def read_segmentation_node(path, scene=None):
    """A vtkMRMLSegmentationNode read from ``path`` by vtkMRMLSegmentationStorageNode (raises on failure)."""
    scene = _scene(scene)
    path = Path(path)
    node = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", path.name.split(".")[0])
    storage = scene.AddNewNodeByClass("vtkMRMLSegmentationStorageNode")
    storage.SetFileName(str(path))
    node.SetAndObserveStorageNodeID(storage.GetID())
    if not storage.ReadData(node):
        raise RuntimeError(f"Slicer could not read segmentation {path}: "
                           f"{_storageMessages(storage)}")
    return node


def write_segmentation_with_slicer(segmentation_node, path, scene=None) -> Path:
    """Write ``segmentation_node`` to a .seg.nrrd with vtkMRMLSegmentationStorageNode; raises on failure."""
    scene = _scene(scene)
    path = Path(path)
    storage = scene.AddNewNodeByClass("vtkMRMLSegmentationStorageNode")
    storage.SetFileName(str(path))
    if not storage.WriteData(segmentation_node):
        raise RuntimeError(f"Slicer could not write segmentation {path}: "
                           f"{_storageMessages(storage)}")
    if not path.is_file():
        raise RuntimeError(f"Slicer reported success but did not write {path}")
    return path


def segment_tag(segment, key: str) -> str | None:
    value = vtk.reference("")
    return str(value) if segment.GetTag(key, value) else None


def segment_voxels_ijk(segmentation_node, segment_id: str) -> tuple[np.ndarray, np.ndarray]:
    """(ijk indices (n, 3) of the segment's voxels, 4x4 image-to-world (RAS) matrix) of its binary labelmap.

    Shared labelmaps (several segments per layer) are handled with the segment's label value; the
    labelmap extent need not start at 0, so indices are offset by the extent's minimum.
    """
    segment = segmentation_node.GetSegmentation().GetSegment(segment_id)
    image = segment.GetRepresentation(BINARY_LABELMAP)
    if image is None:
        raise RuntimeError(f"segment {segment.GetName()!r} has no binary labelmap representation")
    matrix = vtk.vtkMatrix4x4()
    image.GetImageToWorldMatrix(matrix)
    image_to_world = np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)])
    extent = image.GetExtent()
    if extent[1] < extent[0] or image.GetPointData().GetScalars() is None:
        return np.zeros((0, 3), dtype=int), image_to_world
    dims = image.GetDimensions()
    array_kji = numpy_support.vtk_to_numpy(image.GetPointData().GetScalars()).reshape(dims[::-1])
    kji = np.argwhere(array_kji == segment.GetLabelValue())
    ijk = kji[:, ::-1] + np.array([extent[0], extent[2], extent[4]])
    return ijk, image_to_world


def segments_by_name(segmentation_node, tag_keys=DEFAULT_TAG_KEYS) -> dict[str, dict]:
    """Per segment name: color, n_voxels, tags (only ``tag_keys``), id, centroid_ras (None if empty)."""
    segmentation = segmentation_node.GetSegmentation()
    result: dict[str, dict] = {}
    for index in range(segmentation.GetNumberOfSegments()):
        segment_id = segmentation.GetNthSegmentID(index)
        segment = segmentation.GetSegment(segment_id)
        name = segment.GetName()
        if name in result:
            raise AssertionError(f"two segments are named {name!r}")
        ijk, image_to_world = segment_voxels_ijk(segmentation_node, segment_id)
        centroid = None
        if len(ijk):
            centroid = (image_to_world @ np.append(ijk.mean(axis=0), 1.0))[:3]
        tags = {key: value for key in tag_keys if (value := segment_tag(segment, key)) is not None}
        result[name] = {
            "color": tuple(float(c) for c in segment.GetColor()),
            "n_voxels": len(ijk),
            "tags": tags,
            "id": segment_id,
            "centroid_ras": centroid,
        }
    return result


def load_segmentation_with_slicer(path, scene=None, tag_keys=DEFAULT_TAG_KEYS) -> dict[str, dict]:
    """Read a .seg.nrrd with Slicer's storage node; per segment NAME: {"color", "n_voxels", "tags", ...}."""
    return segments_by_name(read_segmentation_node(path, scene), tag_keys)
