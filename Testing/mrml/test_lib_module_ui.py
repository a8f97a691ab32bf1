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
