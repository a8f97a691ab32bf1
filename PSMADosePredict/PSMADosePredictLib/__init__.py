"""MRML adapter of PSMADosePredict: MRML nodes <-> psmadose core objects.

Imports Slicer's VTK/MRML classes (``slicer``, ``vtk``), numpy, scipy and psmadose; never Qt, so that it runs
in Slicer, in ``Slicer --no-main-window`` and on the PyPI package ``slicer-core``. Slicer-facing names are
camelCase; arrays are copied at the boundary; RAS (Slicer) is converted to LPS (core) here and only here.
"""

from .convert import (
    caseFromNodes,
    checkPetLooksLikeSuv,
    imageFromVolumeNode,
    loadSegmentationNode,
    loadVolumeNode,
    segmentStructureTypes,
)
from .lesions import LesionSettings, addLesionSegments, findLesions
from .logic import DosePredictLogic
from .results import (
    RESULT_COLUMNS,
    applyDoseColors,
    createDoseColorTableNode,
    showDoseLegend,
    updateDoseLimitsChart,
    updateResultsTable,
)

__all__ = [
    "RESULT_COLUMNS", "DosePredictLogic", "LesionSettings", "addLesionSegments", "applyDoseColors",
    "caseFromNodes", "checkPetLooksLikeSuv", "createDoseColorTableNode", "findLesions", "imageFromVolumeNode",
    "loadSegmentationNode", "loadVolumeNode", "segmentStructureTypes", "showDoseLegend", "updateDoseLimitsChart",
    "updateResultsTable",
]
