"""PSMADosePredict: 3D Slicer module predicting 177Lu-PSMA absorbed doses from pre-therapy PSMA PET/CT.

Thin by design: the Widget wires ``Resources/UI/PSMADosePredict.ui`` (widgets bound to the parameter node through
their ``SlicerParameterName`` property) to ``PSMADosePredictLogic``, which delegates to ``PSMADosePredictLib``
(MRML adapter and module state, tested on slicer-core) and ``psmadose`` (the pure-Python core).

First use in a stock Slicer: the core needs Python packages Slicer does not ship. This file imports nothing of
them at import time (only ``PSMADosePredictLib.dependencies`` and ``.parameters``, which need the standard library
and ``packaging``); the widget checks ``Resources/requirements.txt`` without importing, asks once, installs with
``slicer.util.pip_install`` and a progress dialog, or shows what is missing and an Install button.
"""

import logging
import os
import pathlib
import sys
from typing import Annotated

import qt
import slicer
import vtk
from slicer import vtkMRMLPlotChartNode, vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode, vtkMRMLTableNode
from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.parameterNodeWrapper import Choice, WithinRange, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin

# Slicer appends module folders to sys.path, behind site-packages: a pip-installed psmadose would shadow the
# bundled one (and its model). The module folder goes first, before anything of it is imported.
MODULE_DIR = os.path.dirname(os.path.abspath(__file__))
if not sys.path or os.path.normcase(os.path.abspath(sys.path[0])) != os.path.normcase(MODULE_DIR):
    sys.path.insert(0, MODULE_DIR)

from PSMADosePredictLib import dependencies  # noqa: E402  (standard library + packaging only)
from PSMADosePredictLib.parameters import (  # noqa: E402  (no psmadose import)
    CLINICAL_PARAMETERS,
    DOSE_FIT_CHOICES,
    DOSE_METHOD_CHOICES,
    DOSIMETRY_PARAMETERS,
    TRACER_CHOICES,
    ModelChoice,
    clinicalFromParameterValues,
    dosimetryReady,
)

dependencies.preferBundledPackages(MODULE_DIR)

VIRTUAL_PATIENT_SAMPLE = "PSMA virtual patient"
VIRTUAL_PATIENT_FILE_TYPE = "PSMADosePredictVirtualPatient"
VIRTUAL_PATIENT_RECIPE = os.path.join(MODULE_DIR, "Resources", "SampleData", "PSMAVirtualPatient.psmavp.json")


def missingDependencies() -> list:
    """Requirements of Resources/requirements.txt not met in this Python (read from metadata, nothing imported)."""
    return dependencies.checkRequirements()


def dependencyMessage(missing) -> str:
    return _("PSMADosePredict needs these Python packages, which this Slicer does not have yet:\n{packages}\n\n"
             "They are installed from the Python Package Index (PyPI) into Slicer's own Python; Slicer's numpy, "
             "scipy, SimpleITK, pydicom and pillow are left as they are.").format(
        packages=dependencies.missingReport(missing))


def _pipInstall(arguments: list) -> None:
    try:
        import slicer.packaging  # noqa: F401  (Slicer >= 5.11: uv, Slicer's own constraints, asks by default)
    except ImportError:
        slicer.util.pip_install(arguments)
    else:
        slicer.util.pip_install(arguments, interactive=False)  # the user has already confirmed


def _installRequirements(missing, beforeEach=None) -> bool:
    """``slicer.util.pip_install`` of each missing requirement, Slicer's own packages pinned (pip constraints).

    ``beforeEach(index, requirement)`` returning False stops before that package. True when nothing is missing
    afterwards. Raises ``subprocess.CalledProcessError`` when pip fails (its output is in the Python console).
    """
    import importlib
    import tempfile

    installed = dependencies.installedVersions()
    with tempfile.TemporaryDirectory(prefix="PSMADosePredict-") as folder:
        constraints = os.path.join(folder, "slicer-constraints.txt")
        with open(constraints, "w", encoding="utf-8") as handle:
            handle.write("\n".join(dependencies.constraintLines(installed)) + "\n")
        for index, requirement in enumerate(missing):
            if beforeEach is not None and beforeEach(index, requirement) is False:
                return False
            _pipInstall(dependencies.pipArguments(requirement, constraints))
    importlib.invalidate_caches()
    return not missingDependencies()


def installDependencies(missing, parent=None) -> bool:
    """Install ``missing`` one package at a time behind a modal progress dialog; Cancel stops before the next."""
    dialog = slicer.util.createProgressDialog(parent=parent, value=0, maximum=len(missing),
                                              windowTitle=_("Installing Python packages"), labelText="")
    dialog.setWindowModality(qt.Qt.ApplicationModal)

    def beforeEach(index, requirement):
        dialog.labelText = _("Installing {requirement} ({n} of {total})...").format(
            requirement=requirement.requirement, n=index + 1, total=len(missing))
        dialog.value = index
        slicer.app.processEvents()
        return not dialog.wasCanceled

    try:
        return _installRequirements(missing, beforeEach)
    finally:
        dialog.close()


#
# Module
#


class PSMADosePredict(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("PSMA Dose Predict")
        # Same translation context as Slicer's own categories, so the category is translated (and merged) alike.
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Nuclear Medicine")]
        self.parent.dependencies = []
        self.parent.contributors = ["PSMADosePredict team (github.com/psmadosepredict)"]
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
<p>On first use the module offers to install the Python packages it needs (listed in
Resources/requirements.txt).</p>
See <a href="https://github.com/psmadosepredict/SlicerPSMADosePredict">the project page</a>.
""")
        self.parent.acknowledgementText = _("""
Built on 3D Slicer, SimpleITK, scikit-learn, skops and pyradiomics. The scientific question follows the
Southampton proof of concept (SNMMI 2026). Lu-177 decay data from ICRP Publication 107.
""")
        slicer.app.connect("startupCompleted()", registerSampleData)


def registerSampleData():
    """A virtual patient in Sample Data, generated locally by the simulator (nothing is downloaded).

    SampleData ignores a custom downloader's return value and ``SampleData.downloadSample`` never calls it
    (SampleDataLogic.downloadSamples -> downloadFromSource, which only walks ``uris``; with no uri it returns [] and
    downloadSample's ``[0]`` raises IndexError). So the source is an ordinary one: its "uri" is a small recipe file
    of this module (file://, copied into the cache without network) loaded with this module's file reader
    (``PSMADosePredictFileReader``), which simulates the patient, loads PET, CT and segments, applies the clinical
    values to the module and returns the nodes to SampleData like any loaded file.
    """
    try:
        import SampleData
    except ImportError:
        return
    iconsPath = os.path.join(MODULE_DIR, "Resources", "Icons")
    SampleData.SampleDataLogic.registerCustomSampleDataSource(
        category="PSMADosePredict", sampleName=VIRTUAL_PATIENT_SAMPLE,
        uris=[qt.QUrl.fromLocalFile(VIRTUAL_PATIENT_RECIPE).toString()],
        fileNames=[os.path.basename(VIRTUAL_PATIENT_RECIPE)], nodeNames=[VIRTUAL_PATIENT_SAMPLE],
        loadFileType=VIRTUAL_PATIENT_FILE_TYPE, thumbnailFileName=os.path.join(iconsPath, "PSMADosePredict.png"))


class PSMADosePredictFileReader:
    """Reads a virtual-patient recipe (``*.psmavp.json``: simulator preset and seed) into PET, CT and segments.

    Registered by Slicer because of its name (<module name>FileReader, qSlicerScriptedFileReader).
    """

    def __init__(self, parent):
        self.parent = parent

    def description(self):
        return _("PSMA virtual patient (PSMADosePredict simulator)")

    def fileType(self):
        return VIRTUAL_PATIENT_FILE_TYPE

    def extensions(self):
        return [_("PSMA virtual patient recipe") + " (*.psmavp.json)"]

    def canLoadFile(self, filePath):
        return str(filePath).lower().endswith(".psmavp.json")

    def canLoadFileConfidence(self, filePath):
        # Above the generic readers' default (0.5 + 0.01 * extension length) for our recipes only.
        return 0.9 if self.canLoadFile(filePath) else 0.0

    def _error(self, message: str) -> bool:
        logging.error(message)
        if hasattr(self.parent, "userMessages"):  # shown by Slicer's IO manager after loading
            self.parent.userMessages().AddMessage(vtk.vtkCommand.ErrorEvent, message)
        return False

    def load(self, properties):
        missing = missingDependencies()
        if missing and not askAndInstall(missing):
            return self._error(_("PSMA virtual patient not loaded: the Python packages it needs are not installed "
                                 "(open the PSMA Dose Predict module to install them)."))
        try:
            logic = PSMADosePredictLogic()
            case = logic.loadVirtualPatientFromRecipe(properties["fileName"])
        except Exception as exc:  # one line is enough for a generated case; the traceback goes to the log
            logging.debug("PSMA virtual patient", exc_info=True)
            return self._error(_("PSMA virtual patient not loaded: {error}").format(error=exc))
        self.parent.loadedNodes = [node.GetID() for node in (case.petNode, case.ctNode, case.segmentationNode)
                                   if node is not None]
        return True


def askAndInstall(missing, parent=None) -> bool:
    """The one confirmation dialog, then the installation. False if declined, cancelled or failed (said why)."""
    import subprocess

    if slicer.app.testingEnabled():
        return False  # tests install explicitly (PSMADosePredictTest); never behind a dialog
    if not slicer.util.confirmOkCancelDisplay(dependencyMessage(missing) + "\n\n" + _("Install them now?"),
                                              windowTitle=_("PSMA Dose Predict: install Python packages")):
        return False
    try:
        return installDependencies(missing, parent)
    except subprocess.CalledProcessError as exc:
        slicer.util.errorDisplay(_("Installing the Python packages failed (pip exit code {code}); pip's messages "
                                   "are in the Python console. Check the network connection and try again.").format(
            code=exc.returncode))
        return False


#
# Parameter node
#


@parameterNodeWrapper
class PSMADosePredictParameterNode:
    petVolume: vtkMRMLScalarVolumeNode
    ctVolume: vtkMRMLScalarVolumeNode
    segmentation: vtkMRMLSegmentationNode
    # Clinical values (units in the names, as in clinical.json; types in PSMADosePredictLib.parameters)
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
    # Model folder ("" = bundled). Not bound to a widget: set only by PSMADosePredictLogic.chooseModel after the
    # user trusted the folder; trust is per session, so a model path saved in a scene must be chosen again.
    modelPath: str = ""
    # Lesion helper
    lesionThresholdMode: Annotated[str, Choice(["SUV", "% of SUVmax"])] = "SUV"
    lesionThresholdSuv: Annotated[float, WithinRange(0.1, 100)] = 3.0
    lesionPercentOfMax: Annotated[float, WithinRange(1, 100)] = 41.0
    lesionMinVolumeMl: Annotated[float, WithinRange(0, 100)] = 0.5
    lesionOrganMarginMm: Annotated[float, WithinRange(0, 30)] = 0.0
    # Results
    resultsTable: vtkMRMLTableNode
    resultsChart: vtkMRMLPlotChartNode
    # Post-therapy dosimetry (psmadose.dosimetry). Empty folders read back as "." (PSMADosePredictLib.parameters.
    # optionalPath); method and fit lists are the core's, imported when the parameter node is first used.
    dosimetryStudyDir: pathlib.Path
    dosimetryOutDir: pathlib.Path
    dosimetryMethod: Annotated[str, Choice(DOSE_METHOD_CHOICES)] = "vsv"
    dosimetryFit: Annotated[str, Choice(DOSE_FIT_CHOICES)] = "auto"
    dosimetryRegister: bool = False
    dosimetryIntoCase: pathlib.Path
    dosimetryOverwrite: bool = False
    dosimetryDoseVolume: vtkMRMLScalarVolumeNode
    dosimetryTable: vtkMRMLTableNode
    dosimetryChart: vtkMRMLPlotChartNode


#
# Widget
#


class PSMADosePredictWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self.ui = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._segmentObserver = None
        self._dependencyPanel = None
        self._running = False
        self._segmentTypesUpdatePending = False

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        missing = missingDependencies()
        if missing and not askAndInstall(missing, slicer.util.mainWindow()):
            self._showDependencyPanel(missing)
            return
        self._setupMain()

    # First run: what is missing, and an Install button (no dead panel)

    def _showDependencyPanel(self, missing) -> None:
        panel = qt.QWidget()
        layout = qt.QVBoxLayout(panel)
        label = qt.QLabel(dependencyMessage(missing) + "\n\n" + _(
            "The module cannot predict until they are installed. Install them with the button below (a network "
            "connection is needed), or from the Python console:\n"
            "slicer.util.pip_install(['-r', '{path}'])").format(path=dependencies.REQUIREMENTS_FILE))
        label.wordWrap = True
        label.setTextInteractionFlags(qt.Qt.TextSelectableByMouse)
        layout.addWidget(label)
        problem = dependencies.foreignCoreProblem(MODULE_DIR)
        if problem:
            layout.addWidget(qt.QLabel(problem))
        button = qt.QPushButton(_("Install Python packages"))
        button.connect("clicked(bool)", lambda _checked=False: self._onInstallDependencies())
        layout.addWidget(button)
        layout.addStretch(1)  # inside the panel: the main panel replaces it whole after installation
        panel.setSizePolicy(qt.QSizePolicy.Preferred, qt.QSizePolicy.Expanding)
        self.layout.addWidget(panel)
        self._dependencyPanel = panel

    def _onInstallDependencies(self) -> None:
        missing = missingDependencies()
        if missing and not askAndInstall(missing, slicer.util.mainWindow()):
            return
        self._dependencyPanel.hide()
        self.layout.removeWidget(self._dependencyPanel)
        self._dependencyPanel.setParent(None)
        self._dependencyPanel = None
        self._setupMain()
        self.enter()

    # Main panel

    def _setupMain(self) -> None:
        from PSMADosePredictLib.segmenttypes import SegmentListObserver

        problem = dependencies.foreignCoreProblem(MODULE_DIR)
        if problem:  # another copy of psmadose is already in use: predictions would not be this module's
            slicer.util.warningDisplay(problem, windowTitle=_("PSMA Dose Predict"))
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/PSMADosePredict.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = PSMADosePredictLogic(logCallback=self.log)
        self._segmentObserver = SegmentListObserver(self._onSegmentsChanged)
        self.ui.segmentTypesTable.setHorizontalHeaderLabels([_("Segment"), _("Structure type")])
        self.ui.segmentTypesTable.horizontalHeader().setStretchLastSection(True)
        self.ui.regionSegmentSelector.noneEnabled = True
        self.ui.regionSegmentSelector.segmentationNodeSelectorVisible = False
        for pathEdit in (self.ui.dosimetryStudyPathLineEdit, self.ui.dosimetryOutPathLineEdit,
                         self.ui.dosimetryIntoPathLineEdit):
            pathEdit.filters = pathEdit.Dirs | pathEdit.Drives | pathEdit.NoDot | pathEdit.NoDotDot
            pathEdit.options = pathEdit.ShowDirsOnly

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)

        # (handler, shows a wait cursor): handlers that open a file dialog manage the cursor themselves.
        buttons = {
            self.ui.segmentEditorButton: (self.onSegmentEditor, False),
            self.ui.loadVirtualPatientButton: (self.onLoadVirtualPatient, False),
            self.ui.loadCaseButton: (self.onLoadCase, False),
            self.ui.loadClinicalButton: (self.onLoadClinical, False),
            self.ui.findLesionsButton: (self.onFindLesions, True),
            self.ui.chooseModelButton: (self.onChooseModel, False),
            self.ui.useBundledModelButton: (self.onUseBundledModel, False),
            self.ui.predictButton: (self.onPredict, False),
            self.ui.showChartButton: (self.onShowChart, False),
            self.ui.exportButton: (self.onExport, False),
            self.ui.restoreColorsButton: (self.onRestoreColors, False),
            self.ui.runDosimetryButton: (self.onRunDosimetry, False),
            self.ui.showDosimetryButton: (self.onShowDosimetry, True),
        }
        for button, (handler, waitCursor) in buttons.items():
            button.connect("clicked(bool)",
                           lambda _checked=False, handler=handler, waitCursor=waitCursor: self._run(handler,
                                                                                                      waitCursor))
        self.ui.petVolumeSelector.connect("currentNodeChanged(vtkMRMLNode*)", self.updatePetCheck)
        self.ui.segmentationSelector.connect("currentNodeChanged(vtkMRMLNode*)", self._segmentObserver.setNode)
        self.ui.resultsTableSelector.connect("currentNodeChanged(vtkMRMLNode*)",
                                             self.ui.resultsTableView.setMRMLTableNode)
        self.initializeParameterNode()
        self.updateModelSummary()

    def _run(self, handler, waitCursor: bool = False) -> None:
        """Run a button's handler: bad input -> one line; Cancel -> a log line; a bug -> Slicer's error display."""
        from psmadose.errors import CancelledError, InputError

        try:
            if waitCursor:
                with slicer.util.WaitCursor():
                    handler()
            else:
                handler()
        except CancelledError:
            self.log(_("Cancelled."))
        except ValueError as exc:  # InputError, and the Lib's ValueErrors: the user's problem, said in one line
            if not isinstance(exc, InputError):
                logging.warning("PSMADosePredict: %s", exc, exc_info=True)  # the traceback stays in the log
            slicer.util.errorDisplay(str(exc), windowTitle=_("PSMA Dose Predict"))
        except Exception as exc:
            logging.exception("PSMADosePredict failed")
            slicer.util.errorDisplay(_("PSMADosePredict failed: {error}").format(error=exc),
                                     detailedText=_("Details are in the Python console and the application log."))

    def log(self, message: str) -> None:
        if self.ui is not None:
            self.ui.logTextEdit.appendPlainText(message)
        logging.info(message)

    def onReload(self) -> None:
        """Reload also re-reads PSMADosePredictLib and psmadose (Slicer's reload re-executes this file only)."""
        dependencies.forgetModules(("PSMADosePredictLib", "psmadose"))
        ScriptedLoadableModuleWidget.onReload(self)

    # Parameter node, as in Slicer's scripted module template

    def cleanup(self) -> None:
        self.removeObservers()
        if self._segmentObserver is not None:
            self._segmentObserver.disconnect()

    def enter(self) -> None:
        if self.logic is None:  # packages not installed: the panel says what is missing
            return
        self.initializeParameterNode()

    def exit(self) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._checkCanPredict)

    def onSceneStartClose(self, caller, event) -> None:
        self.setParameterNode(None)
        if self._segmentObserver is not None:
            self._segmentObserver.disconnect()

    def onSceneEndClose(self, caller, event) -> None:
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self) -> None:
        self.setParameterNode(self.logic.getParameterNode())
        if not self._parameterNode.petVolume:
            volume = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLScalarVolumeNode")
            if volume:
                self._parameterNode.petVolume = volume

    def setParameterNode(self, inputParameterNode) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._checkCanPredict)
        self._parameterNode = inputParameterNode
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._checkCanPredict)
            self._segmentObserver.setNode(self._parameterNode.segmentation)
            self._checkCanPredict()

    def _checkCanPredict(self, caller=None, event=None) -> None:
        p = self._parameterNode
        ready = bool(p and p.petVolume and p.segmentation) and not self._running
        self.ui.predictButton.enabled = ready
        self.ui.findLesionsButton.enabled = ready
        self.ui.predictButton.toolTip = _("Predict doses") if ready else _("Select a PET and a segmentation")
        useSuv = p is not None and p.lesionThresholdMode == "SUV"
        self.ui.lesionThresholdSuvSpinBox.enabled = useSuv
        self.ui.lesionPercentSpinBox.enabled = not useSuv
        self.ui.modelPathLineEdit.text = p.modelPath if p is not None else ""
        # Enabled from the parameter node (observed), not from the path fields' signals: PythonQt calls slots in
        # connection order, so a slot on currentPathChanged could run before the parameter node has the new path.
        canRunDosimetry = p is not None and not self._running and dosimetryReady(
            {name: getattr(p, name) for name in DOSIMETRY_PARAMETERS})
        self.ui.runDosimetryButton.enabled = canRunDosimetry
        self.ui.runDosimetryButton.toolTip = (
            _("Compute post-therapy absorbed doses from the study's time points") if canRunDosimetry
            else _("Choose a study folder and an output folder"))
        self.ui.showDosimetryButton.enabled = p is not None and bool(p.dosimetryDoseVolume or p.dosimetryTable
                                                                     or p.dosimetryChart)

    # Inputs

    def updatePetCheck(self, node=None) -> None:
        problem = self.logic.checkPet(node) if node else None
        self.ui.petCheckLabel.text = "" if node is None else (_("Looks like SUV.") if problem is None else problem)

    def _onSegmentsChanged(self) -> None:
        """Segments added, removed, renamed or retyped, or another segmentation: rebuild the table once, later.

        Deferred: the change may come from a combo box of the table itself (its signal is still being delivered,
        so it must not be deleted now), and a prediction recolours every segment (one rebuild, not one per segment).
        """
        if not self._segmentTypesUpdatePending:
            self._segmentTypesUpdatePending = True
            qt.QTimer.singleShot(0, self.updateSegmentTypes)

    def updateSegmentTypes(self) -> None:
        """Rebuild the segment -> type table from the observed segmentation (rows by segment ID)."""
        from PSMADosePredictLib.segmenttypes import STRUCTURE_TYPES, segmentTypeRows

        self._segmentTypesUpdatePending = False
        if self.ui is None or self._segmentObserver is None:
            return
        node = self._segmentObserver.node
        table = self.ui.segmentTypesTable
        table.setRowCount(0)
        if self.ui.regionSegmentSelector.currentNode() is not node:
            self.ui.regionSegmentSelector.setCurrentNode(node)
        rows = segmentTypeRows(node)
        table.setRowCount(len(rows))
        for index, row in enumerate(rows):
            table.setItem(index, 0, qt.QTableWidgetItem(row.name))
            combo = qt.QComboBox()
            combo.addItems([row.fromNameLabel()] + STRUCTURE_TYPES)
            combo.setCurrentIndex(STRUCTURE_TYPES.index(row.explicitType) + 1 if row.explicitType else 0)
            combo.connect("currentIndexChanged(int)",
                          lambda choice, segmentId=row.segmentId: self._run(
                              lambda: self.logic.setStructureType(node, segmentId,
                                                                  STRUCTURE_TYPES[choice - 1] if choice else None)))
            table.setCellWidget(index, 1, combo)

    def onSegmentEditor(self) -> None:
        p = self._parameterNode
        if not p.segmentation:
            p.segmentation = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode", "Segmentation")
        slicer.util.selectModule("SegmentEditor")
        editor = slicer.modules.SegmentEditorWidget.editor
        editor.setSegmentationNode(p.segmentation)
        if p.petVolume:
            editor.setSourceVolumeNode(p.petVolume)

    def _withProgress(self, title: str, work):
        """``work(progressCallback)`` behind a modal progress dialog with Cancel; Predict disabled meanwhile."""
        dialog = slicer.util.createProgressDialog(parent=slicer.util.mainWindow(), value=0, maximum=100,
                                                  windowTitle=title, labelText=_("Starting..."))
        dialog.setWindowModality(qt.Qt.ApplicationModal)  # no second Predict (or scene change) mid-run

        def progress(fraction: float, message: str) -> bool:
            dialog.setValue(int(100 * fraction))
            dialog.setLabelText(message)
            slicer.app.processEvents()
            return not dialog.wasCanceled

        self._running = True
        self._checkCanPredict()
        try:
            return work(progress)
        finally:
            dialog.close()
            self._running = False
            self._checkCanPredict()

    def onLoadVirtualPatient(self) -> None:
        self._withProgress(_("Simulating a virtual patient"),
                           lambda progress: self.logic.loadVirtualPatientIntoScene(progressCallback=progress))
        self._segmentObserver.setNode(self._parameterNode.segmentation)

    def onLoadCase(self) -> None:
        directory = qt.QFileDialog.getExistingDirectory(slicer.util.mainWindow(), _("Case folder"))
        if directory:
            with slicer.util.WaitCursor():
                self.logic.useLoadedCase(self.logic.loadCase(directory))

    def onLoadClinical(self) -> None:
        path = qt.QFileDialog.getOpenFileName(slicer.util.mainWindow(), _("clinical.json"), "", "JSON (*.json)")
        if path:
            for warning in self.logic.loadClinical(path):
                self.log(_("Warning: {w}").format(w=warning))

    # Lesion helper, model, prediction, results

    def onFindLesions(self) -> None:
        p = self._parameterNode
        region = self.ui.regionSegmentSelector.currentSegmentID()
        regionName = p.segmentation.GetSegmentation().GetSegment(region).GetName() if region else None
        added = self.logic.findLesions(p, regionName)
        self.log(_("Added {n} lesion segment(s): {names}").format(n=len(added), names=", ".join(added) or "-"))

    def onChooseModel(self) -> None:
        directory = qt.QFileDialog.getExistingDirectory(slicer.util.mainWindow(),
                                                        _("Model folder (written by 'psmadose train')"))
        if not directory:
            return
        summary = self.logic.lib.modelCardSummary(directory)  # a folder without a model card: one-line error
        if self.logic.modelChoice.needsTrust(directory):
            trusted = slicer.util.confirmYesNoDisplay(
                _("This model is not the bundled one. Its predictions are only as good as its training data, and "
                  "a model file from an unknown source should not be loaded. Only trust models that you or your "
                  "site trained with 'psmadose train'.\n\n{summary}\n\nTrust and use {path}?").format(
                    summary=summary, path=directory))
            if not trusted:
                self.log(_("Model not changed: {path} was not trusted.").format(path=directory))
                return
            self.logic.modelChoice.trust(directory)
        self.logic.chooseModel(self._parameterNode, directory)
        self.updateModelSummary()

    def onUseBundledModel(self) -> None:
        self.logic.chooseModel(self._parameterNode, "")
        self.updateModelSummary()

    def updateModelSummary(self) -> None:
        """The model card of the chosen model, read without loading the model (that happens on Predict)."""
        path = self._parameterNode.modelPath if self._parameterNode else ""
        try:
            self.ui.modelSummaryLabel.text = self.logic.lib.modelCardSummary(path or None)
        except ValueError as exc:
            self.ui.modelSummaryLabel.text = str(exc)

    def onPredict(self) -> None:
        outputs = self._withProgress(_("Predicting doses"),
                                     lambda progress: self.logic.predict(self._parameterNode,
                                                                         progressCallback=progress))
        self.ui.resultsTableView.setMRMLTableNode(outputs.tableNode)
        for warning in outputs.result.warnings:
            self.log(_("Warning: {w}").format(w=warning))

    def onShowChart(self) -> None:
        if self._parameterNode.resultsChart:
            slicer.modules.plots.logic().ShowChartInLayout(self._parameterNode.resultsChart)

    def onExport(self) -> None:
        import pathlib

        directory = qt.QFileDialog.getExistingDirectory(slicer.util.mainWindow(), _("Export into (new) folder"))
        if not directory:
            return
        name = qt.QInputDialog.getText(slicer.util.mainWindow(), _("Export"), _("Name of the new output folder:"),
                                       qt.QLineEdit.Normal, "psmadose-prediction")
        if name:
            with slicer.util.WaitCursor():
                out = self.logic.lib.exportResults(pathlib.Path(directory) / name)
            qt.QDesktopServices.openUrl(qt.QUrl.fromLocalFile(str(out / "report.html")))

    def onRestoreColors(self) -> None:
        if self._parameterNode.segmentation:
            from PSMADosePredictLib.results import restoreOriginalColors

            restoreOriginalColors(self._parameterNode.segmentation)

    # Post-therapy dosimetry

    def onRunDosimetry(self) -> None:
        outputs = self._withProgress(_("Post-therapy dosimetry"),
                                     lambda progress: self.logic.runDosimetry(self._parameterNode,
                                                                              progressCallback=progress))
        self.log(_("Dosimetry written to {path}").format(path=outputs.outDir))
        self.onShowDosimetry()

    def onShowDosimetry(self) -> None:
        self.logic.showDosimetryResults(self._parameterNode)
        slicer.util.resetSliceViews()  # fit the slice views to the dose map


#
# Logic
#


class PSMADosePredictLogic(ScriptedLoadableModuleLogic):
    """Thin Slicer logic: parameter node in, PSMADosePredictLib calls out. Raises ValueError; never opens dialogs.

    The module's state that is not widgets (model choice and trust, clinical values, segment types) lives in
    PSMADosePredictLib, where the slicer-core tests reach it.
    """

    def __init__(self, logCallback=None) -> None:
        ScriptedLoadableModuleLogic.__init__(self)
        from PSMADosePredictLib.logic import DosePredictLogic

        self.lib = DosePredictLogic(logCallback=logCallback)
        self.modelChoice = ModelChoice()

    def getParameterNode(self):
        return PSMADosePredictParameterNode(super().getParameterNode())

    @staticmethod
    def clinicalFromParameters(p: PSMADosePredictParameterNode) -> dict:
        return clinicalFromParameterValues({parameter: getattr(p, parameter) for parameter in CLINICAL_PARAMETERS})

    def applyClinical(self, p: PSMADosePredictParameterNode, clinical: dict, source: str = "clinical.json") -> list:
        """Validate (as ``psmadose predict`` does) and set all clinical values at once; returns the warnings.

        A rejected file raises ``InputError`` before any value is set.
        """
        from PSMADosePredictLib.parameters import clinicalParameterValues

        values, warnings = clinicalParameterValues(clinical, source)
        with slicer.util.NodeModify(p.parameterNode):
            for parameter, value in values.items():
                setattr(p, parameter, value)
        return warnings

    def loadClinical(self, path, p=None) -> list:
        import json
        import pathlib

        from psmadose.errors import InputError

        try:
            data = json.loads(pathlib.Path(path).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise InputError(f"{path}: cannot read it as JSON ({exc}); fix the file") from None
        return self.applyClinical(p or self.getParameterNode(), data, str(path))

    def checkPet(self, petNode) -> str | None:
        from PSMADosePredictLib.convert import checkPetLooksLikeSuv

        return checkPetLooksLikeSuv(petNode)

    def setStructureType(self, segmentationNode, segmentId: str, structureType: str | None) -> None:
        from PSMADosePredictLib.segmenttypes import setStructureType

        setStructureType(segmentationNode, segmentId, structureType)

    def chooseModel(self, p: PSMADosePredictParameterNode, path) -> str:
        """Make ``path`` ("" = bundled) the model of ``p``; a folder must have been trusted (modelChoice.trust)."""
        chosen = self.modelChoice.choose(path)
        p.modelPath = chosen
        return chosen

    def predict(self, p: PSMADosePredictParameterNode, progressCallback=None):
        # The scene may hold a model path from an earlier session: it must be trusted again in this one.
        path = self.modelChoice.choose(p.modelPath)
        outputs = self.lib.predict(p.petVolume, p.segmentation, self.clinicalFromParameters(p), p.ctVolume,
                                   modelPath=path or None, trustModel=bool(path), tableNode=p.resultsTable,
                                   chartNode=p.resultsChart, progressCallback=progressCallback)
        p.resultsTable, p.resultsChart = outputs.tableNode, outputs.chartNode
        return outputs

    def runDosimetry(self, p: PSMADosePredictParameterNode, progressCallback=None):
        """Post-therapy dosimetry of the study folder of ``p`` (PSMADosePredictLib.dosimetry.runDosimetry); the
        dose map, doses table and TAC chart are stored in ``p``. Raises InputError for bad input, CancelledError."""
        from PSMADosePredictLib.dosimetry import runDosimetry
        from PSMADosePredictLib.parameters import dosimetryArguments

        arguments = dosimetryArguments({name: getattr(p, name) for name in DOSIMETRY_PARAMETERS})
        outputs = runDosimetry(**arguments, progressCallback=progressCallback, logCallback=self.lib.log)
        with slicer.util.NodeModify(p.parameterNode):
            p.dosimetryDoseVolume = outputs.doseVolumeNode
            p.dosimetryTable = outputs.tableNode
            p.dosimetryChart = outputs.tacChartNode
        return outputs

    def showDosimetryResults(self, p: PSMADosePredictParameterNode) -> None:
        """Dose map in the slice views, doses table and TAC chart in a layout with table and plot views."""
        from PSMADosePredictLib.dosimetry import showDosimetryResults

        showDosimetryResults(p.dosimetryDoseVolume, p.dosimetryTable, p.dosimetryChart,
                             appLogic=slicer.app.applicationLogic())

    def findLesions(self, p: PSMADosePredictParameterNode, regionSegmentName: str | None = None) -> list[str]:
        from PSMADosePredictLib.lesions import LesionSettings, addLesionSegments

        bySuv = p.lesionThresholdMode == "SUV"
        settings = LesionSettings(threshold_suv=p.lesionThresholdSuv if bySuv else None,
                                  percent_of_max=None if bySuv else p.lesionPercentOfMax,
                                  min_volume_ml=p.lesionMinVolumeMl, organ_margin_mm=p.lesionOrganMarginMm)
        return addLesionSegments(p.petVolume, p.segmentation, settings, regionSegmentName)

    def useLoadedCase(self, case, p=None) -> None:
        """Select a loaded case in the module (PET, CT, segments, clinical values) and show it, fitted."""
        p = p or self.getParameterNode()
        with slicer.util.NodeModify(p.parameterNode):
            p.petVolume, p.ctVolume, p.segmentation = case.petNode, case.ctNode, case.segmentationNode
        self.applyClinical(p, case.clinical, str(case.directory / "clinical.json"))
        slicer.util.setSliceViewerLayers(background=case.ctNode or case.petNode,
                                         foreground=case.petNode if case.ctNode else None,
                                         foregroundOpacity=0.5, fit=True)

    def loadVirtualPatientIntoScene(self, directory=None, *, preset: str = "demo", seed=None, progressCallback=None):
        case = self.lib.loadVirtualPatient(directory, preset=preset, seed=seed, progressCallback=progressCallback)
        self.useLoadedCase(case)
        return case

    def loadVirtualPatientFromRecipe(self, recipePath):
        """The Sample Data entry: a ``*.psmavp.json`` recipe {"preset": ..., "seed": ...} -> loaded, selected case."""
        import json
        import pathlib

        recipe = json.loads(pathlib.Path(recipePath).read_text(encoding="utf-8"))
        return self.loadVirtualPatientIntoScene(preset=str(recipe.get("preset", "demo")), seed=recipe.get("seed"))

    def loadVirtualPatient(self, directory=None):
        return self.lib.loadVirtualPatient(directory)

    def loadCase(self, directory):
        return self.lib.loadCase(directory)

    @staticmethod
    def ensureDependencies() -> None:
        """Install missing requirements without asking (scripts, self-test); raises when some are still missing."""
        missing = missingDependencies()
        if missing and not _installRequirements(missing):
            still = ", ".join(m.describe() for m in missingDependencies())
            raise RuntimeError(f"Python packages still missing after installation: {still}")


#
# Test
#


class PSMADosePredictTest(ScriptedLoadableModuleTest):
    """Runs the real prediction on a virtual patient generated locally (no download of data).

    On a Slicer without the Python packages, the test installs them first (network needed).
    """

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        PSMADosePredictLogic.ensureDependencies()  # static: a Logic instance would import the core first
        self.test_PredictVirtualPatient()
        self.setUp()
        self.test_SampleDataEntry()
        self.setUp()
        self.test_Dosimetry()

    def test_PredictVirtualPatient(self):
        import pathlib
        import tempfile

        from psmadose.dose_colors import dose_to_rgb

        self.delayDisplay("Generating a virtual patient")
        logic = PSMADosePredictLogic()
        p = logic.getParameterNode()
        case = logic.loadVirtualPatientIntoScene(tempfile.mkdtemp(prefix="PSMADosePredictTest-"))
        self.assertEqual(p.petVolume, case.petNode)
        self.assertEqual(logic.clinicalFromParameters(p)["pet_tracer"], case.clinical["pet_tracer"])
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
        self.assertIsNotNone(case.segmentationNode.GetDisplayNode().GetColorNode())  # colour legend shows
        out = logic.lib.exportResults(pathlib.Path(tempfile.mkdtemp()) / "export")
        self.assertTrue((out / "report.html").is_file())
        self.delayDisplay("Test passed")

    def test_SampleDataEntry(self):
        import SampleData

        registerSampleData()
        self.delayDisplay("Loading the virtual patient from Sample Data")
        pet = SampleData.downloadSample(VIRTUAL_PATIENT_SAMPLE)
        self.assertIsNotNone(pet)
        p = PSMADosePredictLogic().getParameterNode()
        self.assertEqual(p.petVolume, pet)
        self.assertIsNotNone(p.segmentation)
        self.delayDisplay("Test passed")

    def test_Dosimetry(self):
        """The dosimetry section's Logic on a virtual patient's SPECT time points (a simulator case is a study)."""
        import pathlib
        import tempfile

        self.delayDisplay("Post-therapy dosimetry of a virtual patient")
        logic = PSMADosePredictLogic()
        p = logic.getParameterNode()
        case = logic.loadVirtualPatientIntoScene(tempfile.mkdtemp(prefix="PSMADosePredictTest-"))
        p.dosimetryStudyDir = case.directory
        p.dosimetryOutDir = pathlib.Path(tempfile.mkdtemp(prefix="PSMADosePredictTest-")) / "dosimetry"
        p.dosimetryMethod = "lde"
        outputs = logic.runDosimetry(p, progressCallback=lambda fraction, message: True)
        self.assertEqual(p.dosimetryDoseVolume, outputs.doseVolumeNode)
        self.assertEqual(p.dosimetryChart.GetNumberOfPlotSeriesNodes(), len(outputs.result.segments))
        logic.showDosimetryResults(p)
        self.assertEqual(slicer.app.layoutManager().layout, slicer.vtkMRMLLayoutNode.SlicerLayoutFourUpPlotTableView)
        self.delayDisplay("Test passed")
