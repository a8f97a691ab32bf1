"""PSMADosePredict: 3D Slicer module predicting 177Lu-PSMA absorbed doses from pre-therapy PSMA PET/CT.

Thin by design: the Widget wires ``Resources/UI/PSMADosePredict.ui`` (widgets bound to the parameter node through
their ``SlicerParameterName`` property) to ``PSMADosePredictLogic``, which delegates to ``PSMADosePredictLib``
(MRML adapter, tested on slicer-core) and ``psmadose`` (the pure-Python core). Heavy imports are lazy so the
module loads even before the core's Python dependencies are installed.
"""

import logging
import os
import pathlib
from typing import Annotated

import qt
import slicer
import vtk
from slicer import vtkMRMLPlotChartNode, vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode, vtkMRMLTableNode
from slicer.i18n import tr as _
from slicer.parameterNodeWrapper import Choice, WithinRange, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin

# Parameter field -> clinical.json key (units are in both names).
CLINICAL_PARAMETERS = {
    "ageYears": "age_years", "weightKg": "weight_kg", "heightCm": "height_cm",
    "egfrMlMin173m2": "egfr_ml_min_1_73m2", "psaNgMl": "psa_ng_ml", "alpUL": "alp_u_l", "ldhUL": "ldh_u_l",
    "hemoglobinGDl": "hemoglobin_g_dl", "priorTaxaneLines": "prior_taxane_lines", "priorArpi": "prior_arpi",
    "petTracer": "pet_tracer", "petUptakeTimeMin": "pet_uptake_time_min",
    "plannedActivityGbq": "planned_activity_gbq", "plannedCycles": "planned_cycles",
    "petResolutionMm": "pet_resolution_mm",
}
# Optional clinical.json keys: the parameter's value when the key is absent, which also means "leave it out".
CLINICAL_OPTIONAL_ABSENT = {"pet_resolution_mm": 0.0}
TRACER_CHOICES = ["18F-DCFPyL", "18F-PSMA-1007", "68Ga-PSMA-11"]  # psmadose.clinical.TRACERS (checked by a test)
STRUCTURE_TYPE_CHOICES = ["(from name)", "tumour", "kidney", "parotid", "submandibular", "lacrimal", "liver",
                          "spleen"]
VIRTUAL_PATIENT_SAMPLE = "PSMA virtual patient"


#
# Module
#


class PSMADosePredict(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("PSMA Dose Predict")
        self.parent.categories = [_("Nuclear Medicine")]
        self.parent.dependencies = []
        self.parent.contributors = ["PSMADosePredict team"]
        self.parent.helpText = _("""
Predicts, before the first cycle, the absorbed dose (Gy/GBq, Gy per cycle and cumulative Gy) that each tumour
and organ at risk (kidneys, parotid, submandibular and lacrimal glands) will receive in 177Lu-PSMA radioligand
therapy, from the pre-therapy PSMA PET (in SUV), an optional CT, lesion/organ segments and clinical biomarkers.
Segments are coloured by predicted dose (turbo colormap, log scale 0.1-30 Gy/GBq) and results are shown as a
table, a chart against reference organ limits and an exportable report.
<p>Scientific anchor: the Southampton proof of concept (Nautiyal et al., SNMMI 2026: 9 patients, 57 tumours,
36 salivary glands, 18 kidneys; uptake metrics, radiomics and clinical biomarkers in a mixed-effects
machine-learning model, reference = post-cycle-1 dosimetry).</p>
<p><b>Research and teaching software.</b> The bundled model is trained on <i>virtual patients</i> from the
project's simulator; every accuracy figure is measured on virtual patients. It is not clinically validated
and must not be used for treatment decisions.</p>
See <a href="https://github.com/psmadosepredict/SlicerPSMADosePredict">the project page</a>.
""")
        self.parent.acknowledgementText = _("""
Built on 3D Slicer, SimpleITK, scikit-learn, skops and pyradiomics. The scientific question follows the
Southampton proof of concept (SNMMI 2026). Lu-177 decay data from ICRP Publication 107.
""")
        slicer.app.connect("startupCompleted()", registerSampleData)


def registerSampleData():
    """A virtual patient in the Sample Data module, generated locally by the simulator (nothing is downloaded)."""
    try:
        import SampleData
    except ImportError:
        return

    def generate(source=None):
        return PSMADosePredictLogic().loadVirtualPatient()

    iconsPath = os.path.join(os.path.dirname(__file__), "Resources", "Icons")
    SampleData.SampleDataLogic.registerCustomSampleDataSource(
        category="PSMADosePredict", sampleName=VIRTUAL_PATIENT_SAMPLE, uris=[], fileNames=[], nodeNames=[],
        customDownloader=generate, thumbnailFileName=os.path.join(iconsPath, "PSMADosePredict.png"))


#
# Parameter node
#


@parameterNodeWrapper
class PSMADosePredictParameterNode:
    petVolume: vtkMRMLScalarVolumeNode
    ctVolume: vtkMRMLScalarVolumeNode
    segmentation: vtkMRMLSegmentationNode
    # Clinical values (units in the names, as in clinical.json)
    ageYears: Annotated[float, WithinRange(18, 110)] = 70.0
    weightKg: Annotated[float, WithinRange(30, 250)] = 80.0
    heightCm: Annotated[float, WithinRange(120, 230)] = 175.0
    egfrMlMin173m2: Annotated[float, WithinRange(5, 200)] = 75.0
    psaNgMl: Annotated[float, WithinRange(0, 100000)] = 50.0
    alpUL: Annotated[float, WithinRange(10, 10000)] = 120.0
    ldhUL: Annotated[float, WithinRange(50, 20000)] = 250.0
    hemoglobinGDl: Annotated[float, WithinRange(3, 20)] = 12.5
    priorTaxaneLines: Annotated[int, WithinRange(0, 5)] = 0
    priorArpi: bool = True
    petTracer: Annotated[str, Choice(TRACER_CHOICES)] = "18F-DCFPyL"
    petUptakeTimeMin: Annotated[float, WithinRange(30, 240)] = 120.0
    plannedActivityGbq: Annotated[float, WithinRange(1.0, 12.0)] = 7.4
    plannedCycles: Annotated[int, WithinRange(1, 10)] = 4
    # Reconstructed PET resolution (FWHM); 0 = not stated, the tracer default is used (psmadose.features.concentration)
    petResolutionMm: Annotated[float, WithinRange(0, 15)] = 0.0
    # Model (empty path: the bundled model)
    modelPath: pathlib.Path
    # Lesion helper
    lesionThresholdMode: Annotated[str, Choice(["SUV", "% of SUVmax"])] = "SUV"
    lesionThresholdSuv: Annotated[float, WithinRange(0.1, 100)] = 3.0
    lesionPercentOfMax: Annotated[float, WithinRange(1, 100)] = 41.0
    lesionMinVolumeMl: Annotated[float, WithinRange(0, 100)] = 0.5
    lesionOrganMarginMm: Annotated[float, WithinRange(0, 30)] = 0.0
    # Results
    resultsTable: vtkMRMLTableNode
    resultsChart: vtkMRMLPlotChartNode


#
# Widget
#


class PSMADosePredictWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._trustedModelPaths = set()

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/PSMADosePredict.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = PSMADosePredictLogic(logCallback=self.log)
        self.ui.modelPathLineEdit.filters = self.ui.modelPathLineEdit.Dirs
        self.ui.segmentTypesTable.setHorizontalHeaderLabels([_("Segment"), _("Structure type")])
        self.ui.segmentTypesTable.horizontalHeader().setStretchLastSection(True)
        self.ui.regionSegmentSelector.noneEnabled = True
        self.ui.regionSegmentSelector.segmentationNodeSelectorVisible = False

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)

        buttons = {
            self.ui.segmentEditorButton: self.onSegmentEditor,
            self.ui.loadVirtualPatientButton: self.onLoadVirtualPatient,
            self.ui.loadCaseButton: self.onLoadCase,
            self.ui.loadClinicalButton: self.onLoadClinical,
            self.ui.findLesionsButton: self.onFindLesions,
            self.ui.useBundledModelButton: self.onUseBundledModel,
            self.ui.predictButton: self.onPredict,
            self.ui.showChartButton: self.onShowChart,
            self.ui.exportButton: self.onExport,
            self.ui.restoreColorsButton: self.onRestoreColors,
        }
        for button, handler in buttons.items():
            button.connect("clicked(bool)", lambda _checked=False, handler=handler: self._run(handler))
        self.ui.petVolumeSelector.connect("currentNodeChanged(vtkMRMLNode*)", self.updatePetCheck)
        self.ui.segmentationSelector.connect("currentNodeChanged(vtkMRMLNode*)", self.updateSegmentTypes)
        self.ui.resultsTableSelector.connect("currentNodeChanged(vtkMRMLNode*)",
                                             self.ui.resultsTableView.setMRMLTableNode)
        self.ui.modelPathLineEdit.connect("currentPathChanged(QString)", self.onModelPathChanged)
        self.initializeParameterNode()
        self.updateModelSummary()

    def _run(self, handler) -> None:
        with slicer.util.tryWithErrorDisplay(_("PSMADosePredict failed."), waitCursor=True):
            handler()

    def log(self, message: str) -> None:
        self.ui.logTextEdit.appendPlainText(message)
        logging.info(message)
        slicer.app.processEvents(qt.QEventLoop.ExcludeUserInputEvents)

    # Parameter node, as in Slicer's scripted module template

    def cleanup(self) -> None:
        self.removeObservers()

    def enter(self) -> None:
        self.initializeParameterNode()

    def exit(self) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._checkCanPredict)

    def onSceneStartClose(self, caller, event) -> None:
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event) -> None:
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self) -> None:
        self.setParameterNode(self.logic.getParameterNode())
        if not self._parameterNode.petVolume:
            volume = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLScalarVolumeNode")
            if volume:
                self._parameterNode.petVolume = volume

    def setParameterNode(self, inputParameterNode: PSMADosePredictParameterNode | None) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._checkCanPredict)
        self._parameterNode = inputParameterNode
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._checkCanPredict)
            self._checkCanPredict()

    def _checkCanPredict(self, caller=None, event=None) -> None:
        p = self._parameterNode
        ready = bool(p and p.petVolume and p.segmentation)
        self.ui.predictButton.enabled = ready
        self.ui.findLesionsButton.enabled = ready
        self.ui.predictButton.toolTip = _("Predict doses") if ready else _("Select a PET and a segmentation")
        useSuv = p is not None and p.lesionThresholdMode == "SUV"
        self.ui.lesionThresholdSuvSpinBox.enabled = useSuv
        self.ui.lesionPercentSpinBox.enabled = not useSuv

    # Inputs

    def updatePetCheck(self, node=None) -> None:
        problem = self.logic.checkPet(node) if node else None
        self.ui.petCheckLabel.text = "" if node is None else (_("Looks like SUV.") if problem is None else problem)

    def updateSegmentTypes(self, node=None) -> None:
        table = self.ui.segmentTypesTable
        table.setRowCount(0)
        self.ui.regionSegmentSelector.setCurrentNode(node)
        if node is None:
            return
        from PSMADosePredictLib.convert import segmentNames, segmentTag

        names = segmentNames(node)
        table.setRowCount(len(names))
        for row, name in enumerate(names):
            table.setItem(row, 0, qt.QTableWidgetItem(name))
            combo = qt.QComboBox()
            combo.addItems(STRUCTURE_TYPE_CHOICES)
            segment = node.GetSegmentation().GetSegment(node.GetSegmentation().GetSegmentIdBySegmentName(name))
            tag = segmentTag(segment, "PSMADosePredict.StructureType")
            combo.setCurrentText(tag if tag in STRUCTURE_TYPE_CHOICES else STRUCTURE_TYPE_CHOICES[0])
            combo.connect("currentTextChanged(QString)",
                          lambda text, name=name: self.logic.setStructureType(node, name, text))
            table.setCellWidget(row, 1, combo)

    def onSegmentEditor(self) -> None:
        p = self._parameterNode
        if not p.segmentation:
            p.segmentation = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode", "Segmentation")
        slicer.util.selectModule("SegmentEditor")
        editor = slicer.modules.SegmentEditorWidget.editor
        editor.setSegmentationNode(p.segmentation)
        if p.petVolume and hasattr(editor, "setSourceVolumeNode"):  # Slicer >= 5.2
            editor.setSourceVolumeNode(p.petVolume)
        elif p.petVolume:
            editor.setMasterVolumeNode(p.petVolume)

    def _useLoadedCase(self, case) -> None:
        p = self._parameterNode
        p.petVolume, p.ctVolume, p.segmentation = case.petNode, case.ctNode, case.segmentationNode
        self.setClinical(case.clinical)
        slicer.util.setSliceViewerLayers(background=case.ctNode or case.petNode,
                                         foreground=case.petNode if case.ctNode else None, foregroundOpacity=0.5)
        self.updateSegmentTypes(case.segmentationNode)

    def onLoadVirtualPatient(self) -> None:
        self._useLoadedCase(self.logic.loadVirtualPatient())

    def onLoadCase(self) -> None:
        directory = qt.QFileDialog.getExistingDirectory(slicer.util.mainWindow(), _("Case folder"))
        if directory:
            self._useLoadedCase(self.logic.loadCase(directory))

    def onLoadClinical(self) -> None:
        import json

        path = qt.QFileDialog.getOpenFileName(slicer.util.mainWindow(), _("clinical.json"), "", "JSON (*.json)")
        if path:
            self.setClinical(json.loads(pathlib.Path(path).read_text(encoding="utf-8")))

    def setClinical(self, clinical: dict) -> None:
        for parameter, key in CLINICAL_PARAMETERS.items():
            if key in clinical:
                setattr(self._parameterNode, parameter, clinical[key])
            elif key in CLINICAL_OPTIONAL_ABSENT:
                setattr(self._parameterNode, parameter, CLINICAL_OPTIONAL_ABSENT[key])

    # Lesion helper, model, prediction, results

    def onFindLesions(self) -> None:
        p = self._parameterNode
        region = self.ui.regionSegmentSelector.currentSegmentID()
        regionName = p.segmentation.GetSegmentation().GetSegment(region).GetName() if region else None
        added = self.logic.findLesions(p, regionName)
        self.log(_("Added {n} lesion segment(s): {names}").format(n=len(added), names=", ".join(added) or "-"))
        self.updateSegmentTypes(p.segmentation)

    def onModelPathChanged(self, path: str) -> None:
        if path and path not in self._trustedModelPaths:
            trusted = slicer.util.confirmYesNoDisplay(
                _("This model is not the bundled one. Loading a model file can be unsafe and its predictions are "
                  "only as good as its training data. Only trust models that you or your site trained with "
                  "'psmadose train'.\n\nTrust and load {path}?").format(path=path))
            if not trusted:
                self._parameterNode.modelPath = pathlib.Path()
                return
            self._trustedModelPaths.add(path)
        with slicer.util.tryWithErrorDisplay(_("Cannot load the model."), waitCursor=True):
            self.updateModelSummary()

    def onUseBundledModel(self) -> None:
        self._parameterNode.modelPath = pathlib.Path()
        self.updateModelSummary()

    def _modelPath(self) -> str | None:
        path = str(self._parameterNode.modelPath or "")
        return path if path not in ("", ".") else None

    def updateModelSummary(self) -> None:
        path = self._modelPath()
        loaded = self.logic.loadModel(path, trust=path in self._trustedModelPaths)
        self.ui.modelSummaryLabel.text = self.logic.modelSummary(loaded)

    def onPredict(self) -> None:
        p = self._parameterNode
        dialog = slicer.util.createProgressDialog(parent=slicer.util.mainWindow(), value=0, maximum=100,
                                                  windowTitle=_("Predicting doses"), labelText=_("Starting..."))

        def progress(fraction: float, message: str) -> bool:
            dialog.setValue(int(100 * fraction))
            dialog.setLabelText(message)
            slicer.app.processEvents()
            return not dialog.wasCanceled

        try:
            path = self._modelPath()
            outputs = self.logic.predict(p, modelPath=path, trustModel=path in self._trustedModelPaths,
                                         progressCallback=progress)
        finally:
            dialog.close()
        p.resultsTable, p.resultsChart = outputs.tableNode, outputs.chartNode
        self.ui.resultsTableView.setMRMLTableNode(outputs.tableNode)
        for warning in outputs.result.warnings:
            self.log(_("Warning: {w}").format(w=warning))

    def onShowChart(self) -> None:
        if self._parameterNode.resultsChart:
            slicer.modules.plots.logic().ShowChartInLayout(self._parameterNode.resultsChart)

    def onExport(self) -> None:
        directory = qt.QFileDialog.getExistingDirectory(slicer.util.mainWindow(), _("Export into (new) folder"))
        if directory:
            name = qt.QInputDialog.getText(slicer.util.mainWindow(), _("Export"), _("Name of the new output folder:"),
                                           qt.QLineEdit.Normal, "psmadose-prediction")
            if name:
                out = self.logic.lib.exportResults(pathlib.Path(directory) / name)
                qt.QDesktopServices.openUrl(qt.QUrl.fromLocalFile(str(out / "report.html")))

    def onRestoreColors(self) -> None:
        if self._parameterNode.segmentation:
            from PSMADosePredictLib.results import restoreOriginalColors

            restoreOriginalColors(self._parameterNode.segmentation)


#
# Logic
#


class PSMADosePredictLogic(ScriptedLoadableModuleLogic):
    """Thin Slicer logic: parameter node in, PSMADosePredictLib calls out. Raises ValueError; never opens dialogs."""

    def __init__(self, logCallback=None) -> None:
        ScriptedLoadableModuleLogic.__init__(self)
        from PSMADosePredictLib.logic import DosePredictLogic

        self.lib = DosePredictLogic(logCallback=logCallback)

    def getParameterNode(self):
        return PSMADosePredictParameterNode(super().getParameterNode())

    @staticmethod
    def clinicalFromParameters(p: PSMADosePredictParameterNode) -> dict:
        values = {key: getattr(p, parameter) for parameter, key in CLINICAL_PARAMETERS.items()}
        return {key: value for key, value in values.items()
                if not (key in CLINICAL_OPTIONAL_ABSENT and value == CLINICAL_OPTIONAL_ABSENT[key])}

    def checkPet(self, petNode) -> str | None:
        from PSMADosePredictLib.convert import checkPetLooksLikeSuv

        return checkPetLooksLikeSuv(petNode)

    def setStructureType(self, segmentationNode, segmentName: str, structureType: str) -> None:
        segmentation = segmentationNode.GetSegmentation()
        segment = segmentation.GetSegment(segmentation.GetSegmentIdBySegmentName(segmentName))
        if structureType in STRUCTURE_TYPE_CHOICES[1:]:
            segment.SetTag("PSMADosePredict.StructureType", structureType)
        else:
            segment.RemoveTag("PSMADosePredict.StructureType")

    def loadModel(self, path=None, trust=False):
        return self.lib.loadModel(path, trust=trust)

    def modelSummary(self, loaded) -> str:
        return self.lib.modelSummary(loaded)

    def predict(self, p: PSMADosePredictParameterNode, modelPath=None, trustModel=False, progressCallback=None):
        return self.lib.predict(p.petVolume, p.segmentation, self.clinicalFromParameters(p), p.ctVolume,
                                modelPath=modelPath, trustModel=trustModel, tableNode=p.resultsTable,
                                chartNode=p.resultsChart, progressCallback=progressCallback)

    def findLesions(self, p: PSMADosePredictParameterNode, regionSegmentName: str | None = None) -> list[str]:
        from PSMADosePredictLib.lesions import LesionSettings, addLesionSegments

        bySuv = p.lesionThresholdMode == "SUV"
        settings = LesionSettings(threshold_suv=p.lesionThresholdSuv if bySuv else None,
                                  percent_of_max=None if bySuv else p.lesionPercentOfMax,
                                  min_volume_ml=p.lesionMinVolumeMl, organ_margin_mm=p.lesionOrganMarginMm)
        return addLesionSegments(p.petVolume, p.segmentation, settings, regionSegmentName)

    def loadVirtualPatient(self, directory=None):
        return self.lib.loadVirtualPatient(directory)

    def loadCase(self, directory):
        return self.lib.loadCase(directory)


#
# Test
#


class PSMADosePredictTest(ScriptedLoadableModuleTest):
    """Runs the real prediction on a virtual patient generated locally (no download)."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_PredictVirtualPatient()

    def test_PredictVirtualPatient(self):
        import tempfile

        from psmadose.dose_colors import dose_to_rgb

        self.delayDisplay("Generating a virtual patient")
        logic = PSMADosePredictLogic()
        case = logic.loadVirtualPatient(tempfile.mkdtemp(prefix="PSMADosePredictTest-"))
        p = logic.getParameterNode()
        p.petVolume, p.ctVolume, p.segmentation = case.petNode, case.ctNode, case.segmentationNode
        for parameter, key in CLINICAL_PARAMETERS.items():
            setattr(p, parameter, case.clinical.get(key, CLINICAL_OPTIONAL_ABSENT.get(key)))
        self.assertIsNone(logic.checkPet(case.petNode))

        self.delayDisplay("Predicting")
        fractions = []
        outputs = logic.predict(p, progressCallback=lambda f, m: fractions.append(f))
        self.assertEqual(fractions[-1], 1.0)
        result = outputs.result
        self.assertGreater(len(result.predictions), 5)
        self.assertEqual(outputs.tableNode.GetNumberOfRows(), len(result.predictions))
        segmentation = case.segmentationNode.GetSegmentation()
        for prediction in result.predictions:
            segment = segmentation.GetSegment(segmentation.GetSegmentIdBySegmentName(prediction.segment))
            for got, expected in zip(segment.GetColor(), dose_to_rgb(prediction.predicted_gy_per_gbq)):
                self.assertAlmostEqual(got, expected, places=5)
        out = logic.lib.exportResults(pathlib.Path(tempfile.mkdtemp()) / "export")
        self.assertTrue((out / "report.html").is_file())
        self.delayDisplay("Test passed")
