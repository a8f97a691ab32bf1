"""MRML adapter of PSMADosePredict: MRML nodes <-> psmadose core objects.

Imports Slicer's VTK/MRML classes (``slicer``, ``vtk``), numpy, scipy and psmadose; never Qt, so that it runs
in Slicer, in ``Slicer --no-main-window`` and on the PyPI package ``slicer-core``. Slicer-facing names are
camelCase; arrays are copied at the boundary; RAS (Slicer) is converted to LPS (core) here and only here.

Importing this package imports nothing heavy: the names below are resolved on first use (PEP 562), so
``PSMADosePredictLib.dependencies`` and ``PSMADosePredictLib.parameters`` work in a Slicer where the core's
Python dependencies are not installed yet (the module uses them to report what is missing).
"""

import importlib

_EXPORTS = {
    "caseFromNodes": "convert", "checkPetLooksLikeSuv": "convert", "imageFromVolumeNode": "convert",
    "loadSegmentationNode": "convert", "loadVolumeNode": "convert", "segmentStructureTypes": "convert",
    "LesionSettings": "lesions", "addLesionSegments": "lesions", "findLesions": "lesions",
    "DosePredictLogic": "logic",
    "RESULT_COLUMNS": "results", "applyDoseColors": "results", "createDoseColorTableNode": "results",
    "createDoseLegendColorNode": "results", "showDoseLegend": "results", "updateDoseLimitsChart": "results",
    "updateResultsTable": "results",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS))
