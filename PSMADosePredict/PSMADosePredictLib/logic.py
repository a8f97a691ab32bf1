"""The scriptable API of the module: predict from nodes, write results back, export, load cases.

Everything a button of the module does is one call here, usable from the Python console, from
``Slicer --no-main-window --python-script`` and from tests on slicer-core. Messages go to ``logCallback``
(default: the module logger), never to ``print``. Long steps report to ``progressCallback(fraction, message)``
several times a second; returning False from it cancels (``psmadose.errors.CancelledError`` is raised at once).

The two long steps that touch no MRML node (loading the model, computing features and predicting) run in a worker
thread while the calling thread keeps reporting progress, so the GUI stays responsive and Cancel answers within
a tenth of a second. MRML nodes are only read and written in the calling thread. A cancelled worker cannot be
interrupted: it finishes in the background, its result is discarded and the next long call waits for it first.
"""

from __future__ import annotations

import json
import logging
import math
import tempfile
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from psmadose.errors import CancelledError, InputError
from psmadose.images import find_image
from psmadose.modelfile import LoadedModel, load_model
from psmadose.outputs import atomic_output_dir
from psmadose.predict import PredictionResult, check_activity, predict_case, write_prediction

from .convert import caseFromNodes, loadSegmentationNode, loadVolumeNode
from .results import applyDoseColors, showDoseLegend, updateDoseLimitsChart, updateResultsTable

log = logging.getLogger(__name__)

ProgressCallback = Callable[[float, str], "bool | None"]
POLL_SECONDS = 0.1


def runInWorker(function: Callable[[], object], progressCallback: ProgressCallback | None, start: float,
                end: float, message: str, expectedSeconds: float) -> tuple[object, threading.Thread | None]:
    """``function()`` in a worker thread, reporting progress from ``start`` towards ``end`` every POLL_SECONDS.

    The fraction approaches ``end`` as 1 - exp(-elapsed / expectedSeconds): it always moves and never claims to
    be done before the work is. Returns (result, None); on cancel raises CancelledError whose ``worker`` attribute
    is the still-running thread. Exceptions of ``function`` are raised here, in the calling thread.
    """
    outcome: dict[str, object] = {}

    def target():
        # Nothing may reach Qt from this thread (Slicer's console is a widget): Python warnings are recorded here
        # and re-issued by the calling thread; ``function`` must not log through a GUI callback either.
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("default")
            try:
                outcome["value"] = function()
            except BaseException as exc:  # re-raised in the calling thread
                outcome["error"] = exc
        outcome["warnings"] = caught

    worker = threading.Thread(target=target, name=f"PSMADosePredict: {message}", daemon=True)
    began = time.monotonic()
    worker.start()
    while True:
        worker.join(POLL_SECONDS)
        if not worker.is_alive():
            break
        if progressCallback is None:
            continue
        elapsed = time.monotonic() - began
        fraction = start + (end - start) * (1.0 - math.exp(-elapsed / max(expectedSeconds, 0.1)))
        if progressCallback(fraction, f"{message} ({elapsed:.0f} s)") is False:
            cancelled = CancelledError(f"cancelled ({message})")
            cancelled.worker = worker
            raise cancelled
    for caught in outcome.get("warnings", []):
        warnings.warn_explicit(caught.message, caught.category, caught.filename, caught.lineno)
    if "error" in outcome:
        raise outcome["error"]
    return outcome.get("value"), None


@dataclass
class PredictionOutputs:
    result: PredictionResult
    tableNode: object
    chartNode: object
    legendNode: object | None
    colors: dict[str, tuple[float, float, float]]


@dataclass
class LoadedCase:
    petNode: object
    ctNode: object | None
    segmentationNode: object
    clinical: dict
    directory: Path


class DosePredictLogic:
    def __init__(self, logCallback: Callable[[str], None] | None = None):
        self.logCallback = logCallback
        self._model: LoadedModel | None = None
        self.lastCase = None
        self.lastResult: PredictionResult | None = None
        self.lastModel: LoadedModel | None = None
        self._abandonedWorker: threading.Thread | None = None

    def log(self, message: str) -> None:
        if self.logCallback:
            self.logCallback(message)
        else:
            log.info(message)

    @staticmethod
    def _progress(callback: ProgressCallback | None, fraction: float, message: str) -> None:
        if callback is not None and callback(fraction, message) is False:
            raise CancelledError(f"cancelled ({message})")

    def _inWorker(self, function, callback, start, end, message, expectedSeconds):
        """runInWorker, after any worker abandoned by an earlier cancel has finished."""
        if self._abandonedWorker is not None and self._abandonedWorker.is_alive():
            runInWorker(lambda: self._abandonedWorker.join(), callback, start, start,
                        "finishing the cancelled run", 2.0)
        self._abandonedWorker = None
        try:
            value, _ = runInWorker(function, callback, start, end, message, expectedSeconds)
        except CancelledError as exc:
            self._abandonedWorker = getattr(exc, "worker", None)
            raise
        return value

    @property
    def busy(self) -> bool:
        """True while a cancelled worker is still finishing in the background."""
        return self._abandonedWorker is not None and self._abandonedWorker.is_alive()

    # ------------------------------------------------------------------------------------------- model

    def loadModel(self, path: str | Path | None = None, trust: bool = False) -> LoadedModel:
        """The bundled model (path None or empty) or another model directory, which needs ``trust=True``."""
        loaded, fresh = self._loadModelQuietly(path, trust)
        if fresh:
            self._logModel(loaded)
        return loaded

    def _loadModelQuietly(self, path, trust: bool) -> tuple[LoadedModel, bool]:
        """(model, newly loaded); no logging, so that it can run in a worker thread."""
        path = Path(path) if path else None
        current = self._model
        wanted = None if path is None else (path.parent if path.is_file() else path).resolve()
        if current is None or (wanted is None) != current.bundled or (
                wanted is not None and current.path.resolve() != wanted):
            self._model = load_model(path, trust=trust)
            return self._model, True
        return current, False

    def _logModel(self, loaded: LoadedModel) -> None:
        self.log(f"Model {loaded.model_id} loaded ({'bundled' if loaded.bundled else 'trusted file'}, "
                 f"sha256 {loaded.sha256[:12]}...)")

    @staticmethod
    def modelSummary(loaded: LoadedModel) -> str:
        """Plain-text lines of the model card: id, intended use, training data, held-out metrics."""
        return DosePredictLogic.cardSummary(loaded.card, "bundled, hash verified" if loaded.bundled else
                                            "user-supplied")

    @staticmethod
    def modelCardSummary(path: str | Path | None = None) -> str:
        """The same summary read from ``model_card.json`` alone: quick (no model is loaded, nothing is verified or
        trusted; JSON runs no code), for showing the choice before the first prediction loads the model."""
        from psmadose.modelfile import CARD_FILE, bundled_model_dir

        folder = Path(path) if path else bundled_model_dir()
        if folder.is_file():
            folder = folder.parent
        try:
            card = json.loads((folder / CARD_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise InputError(f"{folder}: no readable {CARD_FILE} ({exc}); give a folder written by "
                             "'psmadose train'") from None
        if not isinstance(card, dict):
            raise InputError(f"{folder / CARD_FILE}: not a model card (expected a JSON object)")
        return DosePredictLogic.cardSummary(card, "bundled" if not path else "user-supplied, not loaded yet")

    @staticmethod
    def cardSummary(card: dict, origin: str) -> str:
        """Held-out and cross-validation accuracy, each with what it was measured on (psmadose.modelcard)."""
        from psmadose.modelcard import summary_text

        return summary_text(card, origin)

    # ----------------------------------------------------------------------------------------- predict

    def predict(self, petNode, segmentationNode, clinical: dict, ctNode=None, *, activityGbq: float | None = None,
                structureTypes: dict[str, str] | None = None, modelPath: str | Path | None = None,
                trustModel: bool = False, writeBack: bool = True, tableNode=None, chartNode=None,
                progressCallback: ProgressCallback | None = None) -> PredictionOutputs | PredictionResult:
        """Predict doses for the segments of ``segmentationNode``; by default colour them and fill table/plots.

        ``clinical`` holds the keys of clinical.json; ``activityGbq`` overrides its planned activity.
        Returns ``PredictionOutputs`` (or only the ``PredictionResult`` with ``writeBack=False``).
        """
        self._progress(progressCallback, 0.0, "loading the model")
        if activityGbq is not None:
            check_activity(activityGbq)
        loaded, fresh = self._inWorker(lambda: self._loadModelQuietly(modelPath, trustModel), progressCallback,
                                       0.0, 0.2, "loading the model", 2.5)
        if fresh:
            self._logModel(loaded)
        self._progress(progressCallback, 0.2, "reading PET, CT and segments")
        case = caseFromNodes(petNode, segmentationNode, clinical, ctNode, structureTypes=structureTypes)
        for message in case.warnings:
            self.log(f"Warning: {message}")
        self._progress(progressCallback, 0.3, "computing features and predicting doses")
        result = self._inWorker(lambda: predict_case(case, loaded, activityGbq), progressCallback, 0.3, 0.85,
                                "computing features and predicting doses", 0.5 + 0.1 * len(case.segments))
        result.provenance["mrml_inputs"] = {"pet": petNode.GetName(), "segmentation": segmentationNode.GetName(),
                                            "ct": ctNode.GetName() if ctNode is not None else None}
        self.lastCase, self.lastResult, self.lastModel = case, result, loaded
        self.log(f"Predicted {len(result.predictions)} segment doses at {result.activity_gbq:g} GBq x "
                 f"{result.cycles} cycles (model {loaded.model_id})")
        if not writeBack:
            self._progress(progressCallback, 1.0, "done")
            return result
        self._progress(progressCallback, 0.9, "writing results into the scene")
        outputs = self.writeResults(segmentationNode, result, tableNode=tableNode, chartNode=chartNode)
        self._progress(progressCallback, 1.0, "done")
        return outputs

    def writeResults(self, segmentationNode, result: PredictionResult, tableNode=None,
                     chartNode=None) -> PredictionOutputs:
        colors = applyDoseColors(segmentationNode, result)
        table = updateResultsTable(result, tableNode)
        chart = updateDoseLimitsChart(result, chartNode)
        legend = showDoseLegend(segmentationNode)
        return PredictionOutputs(result, table, chart, legend, colors)

    def exportResults(self, outDir: str | Path, overwrite: bool = False) -> Path:
        """doses.csv, doses.json, dose_segmentation.seg.nrrd and report.html of the last prediction (atomic)."""
        if self.lastResult is None or self.lastCase is None:
            raise InputError("nothing to export yet; run a prediction first")
        inputs = tuple(self.lastCase.input_files.values())  # files the case was read from: never inside the output
        with atomic_output_dir(Path(outDir), overwrite, inputs=inputs) as tmp:
            write_prediction(tmp, self.lastCase, self.lastResult, self.lastModel)
        self.log(f"Wrote report and CSV to {outDir}")
        return Path(outDir)

    # ------------------------------------------------------------------------------------------ cases

    def loadCase(self, directory: str | Path, scene=None) -> LoadedCase:
        """Load a case directory (pet, optional ct, segmentation, clinical.json) as MRML nodes."""
        directory = Path(directory)
        petPath = find_image(directory, "pet")
        if petPath is None:
            raise InputError(f"{directory}: no pet.nrrd / pet.nii.gz; put the PET in SUV there")
        segPath = next((directory / n for n in ("segmentation.seg.nrrd", "labels.nii.gz", "labels.nii", "labels.nrrd")
                        if (directory / n).is_file()), None)
        if segPath is None:
            raise InputError(f"{directory}: no segmentation.seg.nrrd (or labels.nii.gz + labels.json)")
        clinicalPath = directory / "clinical.json"
        try:
            clinical = json.loads(clinicalPath.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise InputError(f"{clinicalPath}: not found; write the clinical biomarkers there") from None
        except ValueError as exc:
            raise InputError(f"{clinicalPath}: not valid JSON ({exc})") from None
        caseId = directory.name
        pet = loadVolumeNode(petPath, f"{caseId} PET (SUV)", scene)
        ctPath = find_image(directory, "ct")
        ct = loadVolumeNode(ctPath, f"{caseId} CT", scene) if ctPath else None
        segmentation = loadSegmentationNode(segPath, f"{caseId} segmentation", scene)
        segmentation.SetReferenceImageGeometryParameterFromVolumeNode(pet)
        self.log(f"Loaded case {caseId}: PET, {'CT, ' if ct else ''}"
                 f"{segmentation.GetSegmentation().GetNumberOfSegments()} segments")
        return LoadedCase(pet, ct, segmentation, clinical, directory)

    def loadVirtualPatient(self, directory: str | Path | None = None, *, preset: str = "demo",
                           seed: int | None = None, scene=None,
                           progressCallback: ProgressCallback | None = None) -> LoadedCase:
        """Simulate one virtual patient locally (no download) and load it as nodes.

        The case is written to ``directory`` (default: a new temporary folder) so that it can be exported or
        reloaded; it is a virtual patient from the psmadose simulator, not clinical data.
        """
        from psmadose.simulate.cohort import simulate_cohort

        root = Path(directory) if directory else Path(tempfile.mkdtemp(prefix="psmadose-virtual-"))
        cohort = root / "cohort"
        self.log(f"Simulating a virtual patient (preset {preset}) in {cohort}")

        def progress(done: int, total: int):
            if progressCallback is not None:
                return progressCallback(0.8 * done / total, "simulating")
            return None

        self._progress(progressCallback, 0.0, "simulating")
        simulate_cohort(cohort, preset, n_patients=1 if preset != "southampton-poc" else None, seed=seed,
                        workers=1, overwrite=True, progress=progress)
        self._progress(progressCallback, 0.8, "loading nodes")
        caseDir = sorted(p for p in cohort.iterdir() if p.is_dir())[0]
        loadedCase = self.loadCase(caseDir, scene)
        self._progress(progressCallback, 1.0, "done")
        return loadedCase
