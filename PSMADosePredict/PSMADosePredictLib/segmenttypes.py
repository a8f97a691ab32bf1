"""The segment -> structure type table of the module: rows from the segmentation, edits, and change observation.

Segments are addressed by ID (stable across renames), never by name. A type set by the user is the segment tag
``PSMADosePredict.StructureType`` (the core's contract); without it the type comes from the name, and the row says
which type the name gives. Prediction does not write that tag (``results.PREDICTED_TYPE_TAG`` records what was
predicted), so a segment renamed after a prediction is typed by its new name.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import slicer
import vtk

STRUCTURE_TYPE_TAG = "PSMADosePredict.StructureType"  # == psmadose.segmentation.STRUCTURE_TYPE_TAG (tested)
STRUCTURE_TYPES = ["tumour", "kidney", "parotid", "submandibular", "lacrimal", "liver", "spleen"]
FROM_NAME = "(from name)"


@dataclass(frozen=True)
class SegmentTypeRow:
    segmentId: str
    name: str
    explicitType: str | None  # set by the user (segment tag), else None
    typeFromName: str | None  # what the name alone gives (None: not recognised)

    @property
    def effectiveType(self) -> str | None:
        return self.explicitType or self.typeFromName

    def fromNameLabel(self) -> str:
        """Text of the "(from name)" choice of this row, e.g. "(from name: kidney)"."""
        return f"{FROM_NAME[:-1]}: {self.typeFromName or 'not recognised, skipped'})"


def _tag(segment, key: str) -> str | None:
    value = vtk.reference("")
    return str(value) if segment.GetTag(key, value) else None


def segmentTypeRows(segmentationNode) -> list[SegmentTypeRow]:
    """One row per segment, in segmentation order."""
    from psmadose.structures import structure_type_from_name

    if segmentationNode is None:
        return []
    segmentation = segmentationNode.GetSegmentation()
    rows = []
    for index in range(segmentation.GetNumberOfSegments()):
        segmentId = segmentation.GetNthSegmentID(index)
        segment = segmentation.GetSegment(segmentId)
        explicit = _tag(segment, STRUCTURE_TYPE_TAG)
        fromName = structure_type_from_name(segment.GetName())
        rows.append(SegmentTypeRow(segmentId, segment.GetName(), explicit if explicit in STRUCTURE_TYPES else None,
                                   fromName.value if fromName else None))
    return rows


def setStructureType(segmentationNode, segmentId: str, structureType: str | None) -> None:
    """Set (a type of STRUCTURE_TYPES) or clear (None or FROM_NAME: type from the name) a segment's type."""
    segment = segmentationNode.GetSegmentation().GetSegment(segmentId) if segmentationNode else None
    if segment is None:
        raise ValueError(f"segment {segmentId!r} is no longer in the segmentation; pick it again in the table")
    if structureType in (None, "") or structureType.startswith(FROM_NAME[:-1]):
        segment.RemoveTag(STRUCTURE_TYPE_TAG)
    elif structureType in STRUCTURE_TYPES:
        segment.SetTag(STRUCTURE_TYPE_TAG, structureType)
    else:
        raise ValueError(f"unknown structure type {structureType!r}; use one of {', '.join(STRUCTURE_TYPES)}")


class SegmentListObserver:
    """Calls ``callback()`` when segments of the observed segmentation are added, removed or modified (renamed,
    retyped, recoloured), and when the observed node changes. The module refreshes its table from it.
    """

    EVENTS = ("SegmentAdded", "SegmentRemoved", "SegmentModified", "SegmentsOrderModified")

    def __init__(self, callback: Callable[[], None]):
        self.callback = callback
        self.node = None
        self._tags: list[int] = []

    def setNode(self, segmentationNode) -> None:
        if segmentationNode is self.node:
            return
        self.disconnect()
        self.node = segmentationNode
        if segmentationNode is not None:
            for name in self.EVENTS:
                event = getattr(slicer.vtkSegmentation, name, None)
                if event is not None:
                    self._tags.append(segmentationNode.AddObserver(event, self._onEvent))
        self.callback()

    def _onEvent(self, caller=None, event=None) -> None:
        self.callback()

    def disconnect(self) -> None:
        if self.node is not None:
            for tag in self._tags:
                self.node.RemoveObserver(tag)
        self._tags = []
        self.node = None
