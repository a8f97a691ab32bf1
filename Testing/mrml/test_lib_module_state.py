"""State the module keeps outside its widgets, tested for real: clinical values, the model choice and its trust,
the segment-type table (real segmentation nodes and their events), progress and cancel of a real prediction."""

from __future__ import annotations

import json
import os
import shutil
import threading
import time

import pytest
import vtk
from psmadose.clinical import FIELDS
from psmadose.errors import CancelledError, InputError
from psmadose.segmentation import STRUCTURE_TYPE_TAG
from PSMADosePredictLib import DosePredictLogic
from PSMADosePredictLib.parameters import (
    CLINICAL_OPTIONAL_ABSENT,
    CLINICAL_PARAMETER_TYPES,
    CLINICAL_PARAMETERS,
    ModelChoice,
    clinicalFromParameterValues,
    clinicalParameterValues,
    modelPathKey,
    normalizeModelPath,
)
from PSMADosePredictLib.segmenttypes import STRUCTURE_TYPE_TAG as LIB_STRUCTURE_TYPE_TAG
from PSMADosePredictLib.segmenttypes import (
    STRUCTURE_TYPES,
    SegmentListObserver,
    segmentTypeRows,
    setStructureType,
)

pytestmark = pytest.mark.mrml

CLINICAL = {"age_years": 71, "weight_kg": 82, "height_cm": 176, "egfr_ml_min_1_73m2": 75, "psa_ng_ml": 120,
            "alp_u_l": 140, "ldh_u_l": 250, "hemoglobin_g_dl": 12.1, "prior_taxane_lines": 1, "prior_arpi": True,
            "pet_tracer": "18F-DCFPyL", "pet_uptake_time_min": 120, "planned_activity_gbq": 7.4,
            "planned_cycles": 4}


# ------------------------------------------------------------------------------------------ clinical values

def test_clinical_json_numbers_become_the_parameter_types():
    """Finding 7: "planned_cycles": 4.0 is accepted by the core, so the module takes it, as the integer 4."""
    values, warnings = clinicalParameterValues(dict(CLINICAL, planned_cycles=4.0, prior_taxane_lines=2.0,
                                                    age_years=71))
    assert values["plannedCycles"] == 4 and type(values["plannedCycles"]) is int
    assert values["priorTaxaneLines"] == 2 and type(values["priorTaxaneLines"]) is int
    assert values["ageYears"] == 71.0 and type(values["ageYears"]) is float
    assert values["petResolutionMm"] == CLINICAL_OPTIONAL_ABSENT["pet_resolution_mm"]  # absent key
    for parameter, value in values.items():
        assert type(value) is CLINICAL_PARAMETER_TYPES[parameter], parameter
    assert warnings == []
    assert clinicalFromParameterValues(values) == dict(CLINICAL, prior_taxane_lines=2)


@pytest.mark.parametrize("change, message", [
    ({"prior_arpi": 1}, "prior_arpi must be true or false"),  # the core rejects it too (psmadose predict)
    ({"planned_cycles": 4.5}, "planned_cycles must be a whole number"),
    ({"weight_kg": 180000}, "give it in kilograms"),
    ({"pet_tracer": "FDG"}, "pet_tracer 'FDG' is not supported"),
])
def test_clinical_json_rejected_with_the_core_message_before_anything_is_set(change, message):
    with pytest.raises(InputError, match=message):
        clinicalParameterValues(dict(CLINICAL, **change), "case/clinical.json")


def test_clinical_mapping_covers_the_core_contract():
    assert sorted(CLINICAL_PARAMETERS.values()) == sorted(f.key for f in FIELDS)
    assert set(CLINICAL_PARAMETER_TYPES) == set(CLINICAL_PARAMETERS)
    assert LIB_STRUCTURE_TYPE_TAG == STRUCTURE_TYPE_TAG


# ---------------------------------------------------------------------------------------------- model choice

def test_empty_path_parameter_means_the_bundled_model_not_the_working_directory(tmp_path, monkeypatch):
    """Finding 2: a pathlib.Path parameter stores "." when empty; that is not a foreign model to trust."""
    monkeypatch.chdir(tmp_path)
    choice = ModelChoice()
    for empty in ("", ".", "  ", None):
        assert normalizeModelPath(empty) == ""
        assert not choice.needsTrust(empty)
    assert choice.choose(".") == "" and choice.isBundled


def test_foreign_model_needs_trust_and_is_compared_as_a_resolved_path(tmp_path):
    """Finding 3: trusted paths are compared by resolved folder, whatever string the widget gave."""
    folder = tmp_path / "My Model"
    folder.mkdir()
    (folder / "model.skops").write_bytes(b"")
    choice = ModelChoice()
    assert choice.needsTrust(folder)
    with pytest.raises(ValueError, match="not trusted"):
        choice.choose(str(folder))
    assert choice.isBundled  # a refused choice leaves the previous model in place
    choice.trust(str(folder) + os.sep)
    for spelling in (folder, str(folder / "model.skops"), str(tmp_path / "My Model" / ".." / "My Model")):
        assert choice.isTrusted(spelling), spelling
    assert choice.choose(folder / "model.skops") == str(folder.resolve())
    assert modelPathKey(folder) == os.path.normcase(str(folder.resolve()))


def test_card_summary_without_loading_the_model(tmp_path):
    summary = DosePredictLogic.modelCardSummary()
    assert "psmadose-virtual" in summary and "bundled" in summary and "not clinically validated" in summary
    with pytest.raises(InputError, match="model_card.json"):
        DosePredictLogic.modelCardSummary(tmp_path)
    (tmp_path / "model_card.json").write_text(json.dumps({"model_id": "site-model", "intended_use": "research"}))
    assert "site-model (user-supplied, not loaded yet)" in DosePredictLogic.modelCardSummary(tmp_path)


# --------------------------------------------------------------------------------------------- segment types

def segment_names(node):
    segmentation = node.GetSegmentation()
    return [segmentation.GetNthSegment(i).GetName() for i in range(segmentation.GetNumberOfSegments())]


def test_segment_type_rows_follow_added_removed_and_renamed_segments(mrml_scene):
    """Finding 5: rows by segment ID, refreshed by segmentation events (what the module's table observes)."""
    node = mrml_scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "segments")
    node.CreateDefaultDisplayNodes()
    refreshes = []
    observer = SegmentListObserver(lambda: refreshes.append(segmentTypeRows(observer.node)))
    observer.setNode(node)
    assert refreshes == [[]]

    segmentation = node.GetSegmentation()
    kidneyId = segmentation.AddEmptySegment("", "kidney_left", [1, 0, 0])
    segmentation.AddEmptySegment("", "blob", [0, 1, 0])
    rows = refreshes[-1]
    assert [(r.name, r.explicitType, r.typeFromName) for r in rows] == [("kidney_left", None, "kidney"),
                                                                         ("blob", None, None)]
    assert rows[1].fromNameLabel() == "(from name: not recognised, skipped)"

    # Renamed after the table was built: the row keeps its ID, and setting its type still works.
    count = len(refreshes)
    segmentation.GetSegment(kidneyId).SetName("lesion_1")
    assert len(refreshes) > count
    assert refreshes[-1][0].segmentId == kidneyId and refreshes[-1][0].typeFromName == "tumour"
    setStructureType(node, kidneyId, "kidney")
    assert segmentTypeRows(node)[0].explicitType == "kidney"
    setStructureType(node, kidneyId, "(from name: tumour)")
    value = vtk.reference("")
    assert not segmentation.GetSegment(kidneyId).GetTag(STRUCTURE_TYPE_TAG, value)

    segmentation.RemoveSegment(kidneyId)
    assert [r.name for r in refreshes[-1]] == ["blob"]
    with pytest.raises(ValueError, match="no longer in the segmentation"):
        setStructureType(node, kidneyId, "kidney")
    with pytest.raises(ValueError, match="unknown structure type"):
        setStructureType(node, segmentation.GetNthSegmentID(0), "brain")

    # Switching nodes stops observing the old one.
    other = mrml_scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "other")
    observer.setNode(other)
    count = len(refreshes)
    segmentation.AddEmptySegment("", "parotid_left", [0, 0, 1])
    assert len(refreshes) == count
    observer.disconnect()
    assert set(STRUCTURE_TYPES) >= {"tumour", "kidney", "parotid", "submandibular", "lacrimal"}


def test_prediction_keeps_types_from_names(demo_case, mrml_scene):
    """Finding 5: after a prediction the "(from name)" rows are still from the name (no type tag written)."""
    logic = DosePredictLogic(logCallback=lambda m: None)
    nodes = logic.loadCase(demo_case, mrml_scene)
    segmentation = nodes.segmentationNode.GetSegmentation()
    for i in range(segmentation.GetNumberOfSegments()):
        segmentation.GetNthSegment(i).RemoveTag(STRUCTURE_TYPE_TAG)
    logic.predict(nodes.petNode, nodes.segmentationNode, nodes.clinical, nodes.ctNode)
    rows = segmentTypeRows(nodes.segmentationNode)
    assert rows and all(r.explicitType is None for r in rows)
    kidney = next(r for r in rows if r.name == "kidney_left")
    segmentation.GetSegment(kidney.segmentId).SetName("lesion_renamed")
    assert next(r for r in segmentTypeRows(nodes.segmentationNode)
                if r.segmentId == kidney.segmentId).effectiveType == "tumour"


# ------------------------------------------------------------------------------------- progress and cancel

def test_prediction_reports_progress_often_and_cancels_promptly(demo_case, mrml_scene):
    """Finding 8: progress several times a second through the long steps; Cancel answers at once, writes
    nothing into the scene, and the next prediction still works. Callbacks (GUI code in Slicer) are only ever
    called from the calling thread, although the long steps run in a worker."""
    threads, messages = [], []
    logic = DosePredictLogic(logCallback=lambda m: (threads.append(threading.current_thread()), messages.append(m)))
    nodes = logic.loadCase(demo_case, mrml_scene)
    calls = []
    started = time.monotonic()

    def progress(fraction, message):
        threads.append(threading.current_thread())
        calls.append((time.monotonic() - started, fraction, message))

    logic.predict(nodes.petNode, nodes.segmentationNode, nodes.clinical, nodes.ctNode, writeBack=False,
                  progressCallback=progress)
    assert any(m.startswith("Model ") for m in messages)  # loaded in the worker, logged by the calling thread
    assert set(threads) == {threading.main_thread()}
    duration = time.monotonic() - started
    fractions = [f for _, f, _ in calls]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    times = [t for t, _, _ in calls]
    # Workers report every 0.1 s; the longest silence is a main-thread MRML step (~0.45 s measured on the demo
    # patient). Before issue 14 loading the model alone was 2.3 s without a word.
    assert max(b - a for a, b in zip(times, times[1:])) < 1.0, "a gap of more than 1 s without progress"
    assert len(calls) >= duration / 1.0
    assert any("computing features and predicting doses (" in m for _, _, m in calls)

    tables = mrml_scene.GetNumberOfNodesByClass("vtkMRMLTableNode")
    before = nodes.segmentationNode.GetSegmentation().GetNthSegment(0).GetColor()
    asked = []

    def cancelWhilePredicting(fraction, message):
        asked.append(time.monotonic())
        return not message.startswith("computing features")

    with pytest.raises(CancelledError):
        logic.predict(nodes.petNode, nodes.segmentationNode, nodes.clinical, nodes.ctNode,
                      progressCallback=cancelWhilePredicting)
    assert time.monotonic() - asked[-1] < 0.1  # raised as soon as the callback said no
    assert mrml_scene.GetNumberOfNodesByClass("vtkMRMLTableNode") == tables
    assert nodes.segmentationNode.GetSegmentation().GetNthSegment(0).GetColor() == before
    outputs = logic.predict(nodes.petNode, nodes.segmentationNode, nodes.clinical, nodes.ctNode)
    assert not logic.busy and outputs.tableNode.GetNumberOfRows() > 0


def test_worker_errors_reach_the_caller(demo_case, mrml_scene, tmp_path):
    logic = DosePredictLogic(logCallback=lambda m: None)
    nodes = logic.loadCase(demo_case, mrml_scene)
    shutil.copytree(logic.loadModel().path, tmp_path / "model")
    with pytest.raises(InputError, match="explicit trust"):
        logic.predict(nodes.petNode, nodes.segmentationNode, nodes.clinical, modelPath=tmp_path / "model",
                      progressCallback=lambda f, m: True)
