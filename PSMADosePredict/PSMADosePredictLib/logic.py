"""The scriptable API of the module: predict from nodes, write results back, export, load cases.

Everything a button of the module does is one call here, usable from the Python console, from
``Slicer --no-main-window --python-script`` and from tests on slicer-core. Messages go to ``logCallback``
(default: the module logger), never to ``print``. Long steps report to ``progressCallback(fraction, message)``;
returning False from it cancels (``psmadose.errors.CancelledError`` is raised between steps).
"""

from __future__ import annotations

import json
import logging
import tempfile
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

    def log(self, message: str) -> None:
        if self.logCallback:
            self.logCallback(message)
        else:
            log.info(message)

    @staticmethod
    def _progress(callback: ProgressCallback | None, fraction: float, message: str) -> None:
        if callback is not None and callback(fraction, message) is False:
            raise CancelledError(f"cancelled ({message})")

    # ------------------------------------------------------------------------------------------- model

    def loadModel(self, path: str | Path | None = None, trust: bool = False) -> LoadedModel:
        """The bundled model (path None or empty) or another model directory, which needs ``trust=True``."""
        path = Path(path) if path else None
        current = self._model
        wanted = None if path is None else (path.parent if path.is_file() else path).resolve()
        if current is None or (wanted is None) != current.bundled or (
                wanted is not None and current.path.resolve() != wanted):
            self._model = load_model(path, trust=trust)
            self.log(f"Model {self._model.model_id} loaded ({'bundled' if self._model.bundled else 'trusted file'}, "
                     f"sha256 {self._model.sha256[:12]}...)")
        return self._model

    @staticmethod
    def modelSummary(loaded: LoadedModel) -> str:
        """Plain-text lines of the model card: id, intended use, training data, held-out metrics."""
        card = loaded.card
        lines = [f"Model: {loaded.model_id} ({'bundled, hash verified' if loaded.bundled else 'user-supplied'})",
                 f"Intended use: {card.get('intended_use', 'not stated')}"]
        trained = card.get("trained_on") or {}
        if isinstance(trained, dict) and trained:
            lines.append(f"Trained on: {trained.get('n_patients', '?')} {trained.get('data', '')}")
        selected = card.get("selected") or {}
        validation = card.get("validation") or {}
        metrics = validation.get("metrics") if isinstance(validation, dict) else None
        if isinstance(metrics, dict):
            lines.append(f"Accuracy measured on: {validation.get('measured_on', 'held-out data')}")
            for group, values in metrics.items():
                if isinstance(values, dict) and "mape" in values:
                    lines.append(f"  {group} ({selected.get(group, '?')}): MAPE {100 * float(values['mape']):.0f}% "
                                 f"vs population-mean {100 * float(values.get('baseline_mape', float('nan'))):.0f}%, "
                                 f"80% interval coverage {values.get('coverage_80', '?')}")
        return "\n".join(lines)

    # ----------------------------------------------------------------------------------------- predict

    def predict(self, petNode, segmentationNode, clinical: dict, ctNode=None, *, activityGbq: float | None = None,
                structureTypes: dict[str, str] | None = None, modelPath: str | Path | None = None,
                trustModel: bool = False, writeBack: bool = True, tableNode=None, chartNode=None,
                progressCallback: ProgressCallback | None = None) -> PredictionOutputs | PredictionResult:
        """Predict doses for the segments of ``segmentationNode``; by default colour them and fill table/plots.

        ``clinical`` holds the keys of clinical.json; ``activityGbq`` overrides its planned activity.
        Returns ``PredictionOutputs`` (or only the ``PredictionResult`` with ``writeBack=False``).
        """
        self._progress(progressCallback, 0.0, "loading model")
        loaded = self.loadModel(modelPath, trust=trustModel)
        if activityGbq is not None:
            check_activity(activityGbq)
        self._progress(progressCallback, 0.1, "reading PET, CT and segments")
        case = caseFromNodes(petNode, segmentationNode, clinical, ctNode, structureTypes=structureTypes)
        for message in case.warnings:
            self.log(f"Warning: {message}")
        self._progress(progressCallback, 0.4, "computing features and predicting doses")
        result = predict_case(case, loaded, activityGbq)
        result.provenance["mrml_inputs"] = {"pet": petNode.GetName(), "segmentation": segmentationNode.GetName(),
                                            "ct": ctNode.GetName() if ctNode is not None else None}
        self.lastCase, self.lastResult, self.lastModel = case, result, loaded
        self.log(f"Predicted {len(result.predictions)} segment doses at {result.activity_gbq:g} GBq x "
                 f"{result.cycles} cycles (model {loaded.model_id})")
        if not writeBack:
            self._progress(progressCallback, 1.0, "done")
            return result
        self._progress(progressCallback, 0.8, "writing results into the scene")
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
        with atomic_output_dir(Path(outDir), overwrite) as tmp:
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
