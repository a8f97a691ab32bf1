"""The module file and its .ui without Qt: every SlicerParameterName is a parameter-node field and every field
is bound to a widget. PSMADosePredict.py imports qt, so its parameter node class is read with ``ast``."""

from __future__ import annotations

import ast
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from psmadose.clinical import FIELDS, TRACERS
from PSMADosePredictLib.parameters import CLINICAL_PARAMETER_TYPES, CLINICAL_PARAMETERS, TRACER_CHOICES

pytestmark = pytest.mark.mrml

MODULE_DIR = Path(__file__).resolve().parents[2] / "PSMADosePredict"
MODULE_FILE = MODULE_DIR / "PSMADosePredict.py"
UI_FILE = MODULE_DIR / "Resources" / "UI" / "PSMADosePredict.ui"


def module_tree() -> ast.Module:
    return ast.parse(MODULE_FILE.read_text(encoding="utf-8"))


def parameter_fields() -> dict[str, str]:
    for node in module_tree().body:
        if isinstance(node, ast.ClassDef) and any(
                isinstance(d, ast.Name) and d.id == "parameterNodeWrapper" for d in node.decorator_list):
            return {s.target.id: ast.unparse(s.annotation) for s in node.body if isinstance(s, ast.AnnAssign)}
    raise AssertionError("no @parameterNodeWrapper class in PSMADosePredict.py")


def ui_bindings() -> dict[str, str]:
    """SlicerParameterName -> widget class, from the Qt Designer XML."""
    bindings = {}
    for widget in ET.parse(UI_FILE).getroot().iter("widget"):
        for prop in widget.findall("property"):
            if prop.get("name") == "SlicerParameterName":
                name = prop.findtext("string")
                assert name not in bindings, f"{name} bound twice"
                bindings[name] = widget.get("class")
    return bindings


# Parameters deliberately not bound to a widget: the model folder is set only after the user trusted it
# (PSMADosePredictLogic.chooseModel), never by typing into a path field (issue 14, findings 2 and 3).
UNBOUND_PARAMETERS = {"modelPath"}


def test_every_parameter_is_bound_and_every_binding_is_a_parameter():
    fields, bindings = parameter_fields(), ui_bindings()
    assert set(bindings) - set(fields) == set(), "widgets bound to unknown parameters"
    assert set(fields) - set(bindings) == UNBOUND_PARAMETERS, "parameters without a widget"
    assert fields["modelPath"] == "str"  # not pathlib.Path: an empty Path parameter reads back as "."
    widget_for = {"vtkMRMLScalarVolumeNode": "qMRMLNodeComboBox", "vtkMRMLSegmentationNode": "qMRMLNodeComboBox",
                  "vtkMRMLTableNode": "qMRMLNodeComboBox", "vtkMRMLPlotChartNode": "qMRMLNodeComboBox",
                  "bool": "QCheckBox", "pathlib.Path": "ctkPathLineEdit"}
    for name, annotation in fields.items():
        if name in UNBOUND_PARAMETERS:
            continue
        if annotation in widget_for:
            assert bindings[name] == widget_for[annotation], name
        elif "float" in annotation:
            assert bindings[name] in ("ctkDoubleSpinBox", "QDoubleSpinBox", "ctkSliderWidget"), name
        elif "int" in annotation:
            assert bindings[name] == "QSpinBox", name
        elif "Choice" in annotation:
            assert bindings[name] == "QComboBox", name


def test_clinical_parameters_cover_clinical_json():
    assert sorted(CLINICAL_PARAMETERS.values()) == sorted(f.key for f in FIELDS)
    fields = parameter_fields()
    assert set(CLINICAL_PARAMETERS) <= set(fields)
    for parameter, kind in CLINICAL_PARAMETER_TYPES.items():  # the types clinical values are converted to
        assert fields[parameter] == kind.__name__ or fields[parameter].startswith(f"Annotated[{kind.__name__},"), \
            parameter
    assert TRACER_CHOICES == list(TRACERS)


def test_ui_widgets_exist_for_the_widget_code():
    names = {w.get("name") for w in ET.parse(UI_FILE).getroot().iter("widget")}
    used = {node.attr for node in ast.walk(module_tree()) if isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Attribute) and node.value.attr == "ui"}
    assert used - names == set(), "self.ui.<name> without a widget in the .ui"


def test_module_metadata():
    source = MODULE_FILE.read_text(encoding="utf-8")
    # Category translated in the context of Slicer's own categories (as its built-in modules do).
    assert 'translate("qSlicerAbstractCoreModule", "Nuclear Medicine")' in source
    assert "SNMMI 2026" in source and "not clinically validated" in source
    assert "ScriptedLoadableModuleTest" in source
    compile(source, str(MODULE_FILE), "exec")


# ------------------------------------------------------------------------------- post-therapy dosimetry

DOSIMETRY_WIDGETS = {  # parameter -> (widget class, widget name)
    "dosimetryStudyDir": ("ctkPathLineEdit", "dosimetryStudyPathLineEdit"),
    "dosimetryOutDir": ("ctkPathLineEdit", "dosimetryOutPathLineEdit"),
    "dosimetryMethod": ("QComboBox", "dosimetryMethodComboBox"),
    "dosimetryFit": ("QComboBox", "dosimetryFitComboBox"),
    "dosimetryRegister": ("QCheckBox", "dosimetryRegisterCheckBox"),
    "dosimetryIntoCase": ("ctkPathLineEdit", "dosimetryIntoPathLineEdit"),
    "dosimetryOverwrite": ("QCheckBox", "dosimetryOverwriteCheckBox"),
    "dosimetryDoseVolume": ("qMRMLNodeComboBox", "dosimetryDoseVolumeSelector"),
    "dosimetryTable": ("qMRMLNodeComboBox", "dosimetryTableSelector"),
    "dosimetryChart": ("qMRMLNodeComboBox", "dosimetryChartSelector"),
}


def dosimetry_section() -> ET.Element:
    for widget in ET.parse(UI_FILE).getroot().iter("widget"):
        if widget.get("name") == "dosimetryCollapsibleButton":
            return widget
    raise AssertionError("no dosimetryCollapsibleButton in the .ui")


def test_dosimetry_section_binds_its_widgets_to_the_parameter_node():
    from PSMADosePredictLib.parameters import DOSIMETRY_PARAMETERS

    section = dosimetry_section()
    assert section.get("class") == "ctkCollapsibleButton"
    properties = {p.get("name"): p for p in section.findall("property")}
    assert properties["text"].findtext("string") == "Post-therapy dosimetry"
    inside = {}
    for widget in section.iter("widget"):
        for prop in widget.findall("property"):
            if prop.get("name") == "SlicerParameterName":
                inside[prop.findtext("string")] = (widget.get("class"), widget.get("name"))
    assert inside == DOSIMETRY_WIDGETS
    assert set(DOSIMETRY_PARAMETERS) <= set(inside)
    names = {w.get("name"): w for w in section.iter("widget")}
    assert {"runDosimetryButton", "showDosimetryButton"} <= set(names)
    for combo in ("dosimetryMethodComboBox", "dosimetryFitComboBox"):
        assert names[combo].findall("item") == [], f"{combo}: items come from the core's lists, not the .ui"
    node_types = {w.get("name"): w.find("property[@name='nodeTypes']/stringlist/string").text
                  for w in section.iter("widget") if w.get("class") == "qMRMLNodeComboBox"}
    assert node_types == {"dosimetryDoseVolumeSelector": "vtkMRMLScalarVolumeNode",
                          "dosimetryTableSelector": "vtkMRMLTableNode",
                          "dosimetryChartSelector": "vtkMRMLPlotChartNode"}
    receivers = {c.findtext("receiver") for c in ET.parse(UI_FILE).getroot().iter("connection")
                 if c.findtext("slot") == "setMRMLScene(vtkMRMLScene*)"}
    assert set(node_types) <= receivers, "node combo boxes without the scene"


def module_class_defaults(class_name: str = "PSMADosePredictParameterNode") -> dict:
    for node in module_tree().body:
        if isinstance(node, ast.ClassDef) and node.name == class_name:
            return {s.target.id: ast.literal_eval(s.value) for s in node.body
                    if isinstance(s, ast.AnnAssign) and s.value is not None}
    raise AssertionError(class_name)


def test_dosimetry_parameters_types_and_defaults_are_the_cores():
    from psmadose.dosimetry import DOSE_METHODS, Settings
    from psmadose.dosimetry.kinetics import METHODS

    fields, defaults = parameter_fields(), module_class_defaults()
    for name in ("dosimetryStudyDir", "dosimetryOutDir", "dosimetryIntoCase"):
        assert fields[name] == "pathlib.Path", name  # ctkPathLineEdit's connector needs a Path
    assert fields["dosimetryMethod"] == "Annotated[str, Choice(DOSE_METHOD_CHOICES)]"
    assert fields["dosimetryFit"] == "Annotated[str, Choice(DOSE_FIT_CHOICES)]"
    assert fields["dosimetryRegister"] == fields["dosimetryOverwrite"] == "bool"
    settings = Settings()
    assert (defaults["dosimetryMethod"], defaults["dosimetryFit"], defaults["dosimetryRegister"]) == \
        (settings.method, settings.fit, settings.register)
    assert defaults["dosimetryMethod"] in DOSE_METHODS and defaults["dosimetryFit"] in METHODS
    assert defaults["dosimetryOverwrite"] is False
