"""Prediction through the MRML adapter: same doses as the core path, results written back into the scene."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest
from psmadose.case import read_case
from psmadose.dose_colors import dose_to_rgb
from psmadose.dose_references import dose_limit_for
from psmadose.errors import CancelledError, InputError
from psmadose.modelfile import load_model
from psmadose.predict import REFERENCE_ORGAN_COLOR, predict_case
from PSMADosePredictLib import RESULT_COLUMNS, DosePredictLogic, caseFromNodes
from PSMADosePredictLib.convert import segmentIdByName
from PSMADosePredictLib.results import LEGEND_DOSES_GY_PER_GBQ, PREDICTED_TYPE_TAG

from .mrml_helpers import DEFAULT_TAG_KEYS, load_segmentation_with_slicer, segment_tag, write_segmentation_with_slicer

pytestmark = pytest.mark.mrml


@pytest.fixture(scope="module")
def core_result(demo_case):
    """The core CLI path: read_case from the files, predict with the bundled model."""
    return predict_case(read_case(demo_case), load_model())


@pytest.fixture
def loaded(demo_case, mrml_scene):
    messages = []
    logic = DosePredictLogic(logCallback=messages.append)
    return logic, logic.loadCase(demo_case, mrml_scene), messages


def test_demo_case_as_nodes_gives_the_core_case_and_doses(loaded, demo_case, core_result):
    logic, case_nodes, messages = loaded
    from_nodes = caseFromNodes(case_nodes.petNode, case_nodes.segmentationNode, case_nodes.clinical,
                               case_nodes.ctNode)
    from_disk = read_case(demo_case)
    assert np.array_equal(from_nodes.pet_array, from_disk.pet_array)
    assert [s.name for s in from_nodes.segments] == [s.name for s in from_disk.segments]
    for a, b in zip(from_nodes.segments, from_disk.segments):
        assert np.array_equal(a.mask, b.mask), a.name
    # The demo CT (int16) is on its own grid and resampled linearly onto the PET grid, keeping int16. Slicer's
    # NRRD reader gives spacing 3.0000000000000004 where SimpleITK gives 3.0, which flips the integer rounding
    # of exact .5 interpolations: at most 1 HU, on a small share of voxels.
    difference = np.abs(from_nodes.ct_on_pet_grid() - from_disk.ct_on_pet_grid())
    assert difference.max() <= 1.0 and (difference > 0).mean() < 0.02

    outputs = logic.predict(case_nodes.petNode, case_nodes.segmentationNode, case_nodes.clinical,
                            case_nodes.ctNode)
    by_name = {p.segment: p for p in outputs.result.predictions}
    assert set(by_name) == {p.segment for p in core_result.predictions}
    for expected in core_result.predictions:
        got = by_name[expected.segment]
        assert got.structure_type == expected.structure_type
        assert math.isclose(got.predicted_gy_per_gbq, expected.predicted_gy_per_gbq, rel_tol=1e-6), expected.segment
        assert math.isclose(got.interval_80_high_gy_per_gbq, expected.interval_80_high_gy_per_gbq, rel_tol=1e-6)
    assert any("Predicted" in m for m in messages)  # logCallback, not print


def test_results_written_back_to_colours_table_plots_legend(loaded, core_result):
    logic, nodes, _ = loaded
    outputs = logic.predict(nodes.petNode, nodes.segmentationNode, nodes.clinical, nodes.ctNode)
    result = outputs.result
    segmentation = nodes.segmentationNode.GetSegmentation()
    predicted = {p.segment: p for p in result.predictions}
    for i in range(segmentation.GetNumberOfSegments()):
        segment = segmentation.GetNthSegment(i)
        expected = (dose_to_rgb(predicted[segment.GetName()].predicted_gy_per_gbq)
                    if segment.GetName() in predicted else REFERENCE_ORGAN_COLOR)
        assert np.allclose(segment.GetColor(), expected, atol=1e-6), segment.GetName()
    assert len(predicted) < segmentation.GetNumberOfSegments()  # liver/spleen: reference organs, grey

    table = outputs.tableNode
    assert table.GetNumberOfRows() == len(result.predictions)
    assert [table.GetColumnName(c) for c in range(table.GetNumberOfColumns())] == [c[0] for c in RESULT_COLUMNS]
    assert table.GetColumnUnitLabel("Gy/GBq") == "Gy/GBq"
    for row, prediction in enumerate(result.predictions):
        assert table.GetCellText(row, 0) == prediction.segment
        column = {c[0]: i for i, c in enumerate(RESULT_COLUMNS)}
        assert math.isclose(float(table.GetCellText(row, column["Gy/GBq"])), prediction.predicted_gy_per_gbq,
                            rel_tol=1e-5)
        assert math.isclose(float(table.GetCellText(row, column["Cumulative Gy"])),
                            prediction.predicted_gy_cumulative, rel_tol=1e-5)
        # Issue 11: the physics baseline and the population mean beside the prediction.
        assert math.isclose(float(table.GetCellText(row, column["Physics Gy/GBq"])), prediction.physics_gy_per_gbq,
                            rel_tol=1e-5)
        assert math.isclose(float(table.GetCellText(row, column["Population Gy/GBq"])),
                            prediction.population_mean_gy_per_gbq, rel_tol=1e-5)

    chart = outputs.chartNode
    assert chart.GetNumberOfPlotSeriesNodes() == 2
    bars, limits = chart.GetNthPlotSeriesNode(0), chart.GetNthPlotSeriesNode(1)
    assert bars.GetPlotType() == bars.PlotTypeBar and bars.GetYColumnName() == "Cumulative Gy"
    plot_table = bars.GetTableNode()
    organs = [p for p in result.predictions if p.structure_type in ("kidney", "parotid", "submandibular",
                                                                     "lacrimal")]
    assert plot_table.GetNumberOfRows() == len(organs) > 0
    for row, organ in enumerate(organs):
        assert plot_table.GetCellText(row, 1) == organ.segment
        limit = dose_limit_for(organ.structure_type)
        value = float(plot_table.GetTable().GetValueByName(row, "Limit Gy").ToDouble())
        assert (math.isnan(value) if limit is None else value == limit.value), organ.segment
    assert limits.GetYColumnName() == "Limit Gy"
    assert {float(plot_table.GetTable().GetValueByName(r, "Limit Gy").ToDouble())
            for r in range(len(organs)) if organs[r].structure_type == "kidney"} == {23.0}

    legend = outputs.legendNode
    colors = legend.GetColorNode()
    # The legend's colours come from the primary display node (Slicer's colour legend displayable manager).
    assert legend.GetPrimaryDisplayNode() is nodes.segmentationNode.GetDisplayNode()
    assert nodes.segmentationNode.GetDisplayNode().GetColorNode() is colors
    assert colors.GetNumberOfColors() == len(LEGEND_DOSES_GY_PER_GBQ)
    rgba = [0.0] * 4
    colors.GetColor(colors.GetNumberOfColors() - 1, rgba)
    assert colors.GetColorName(colors.GetNumberOfColors() - 1) == "30 Gy/GBq"
    assert np.allclose(rgba[:3], dose_to_rgb(30.0), atol=1.5 / 255)  # the table stores 8-bit colours

    # Predicting again reuses the given table/chart nodes instead of piling up new ones.
    again = logic.predict(nodes.petNode, nodes.segmentationNode, nodes.clinical, nodes.ctNode,
                          tableNode=table, chartNode=chart)
    assert again.tableNode is table and again.chartNode is chart and chart.GetNumberOfPlotSeriesNodes() == 2


def test_dose_coloured_segmentation_round_trips_through_seg_nrrd(loaded, tmp_path, mrml_scene):
    logic, nodes, _ = loaded
    segmentation = nodes.segmentationNode.GetSegmentation()
    before = {segmentation.GetNthSegment(i).GetName(): segment_tag(segmentation.GetNthSegment(i),
                                                                    "PSMADosePredict.StructureType")
              for i in range(segmentation.GetNumberOfSegments())}
    outputs = logic.predict(nodes.petNode, nodes.segmentationNode, nodes.clinical, nodes.ctNode)
    path = write_segmentation_with_slicer(nodes.segmentationNode, tmp_path / "dose.seg.nrrd", mrml_scene)
    reread = load_segmentation_with_slicer(path, mrml_scene, DEFAULT_TAG_KEYS + (PREDICTED_TYPE_TAG,))
    for prediction in outputs.result.predictions:
        assert np.allclose(reread[prediction.segment]["color"], dose_to_rgb(prediction.predicted_gy_per_gbq),
                           atol=1e-5)
        tags = reread[prediction.segment]["tags"]
        assert tags[PREDICTED_TYPE_TAG] == prediction.structure_type
        assert tags.get("PSMADosePredict.StructureType") == before[prediction.segment]  # not written by predict
        assert reread[prediction.segment]["n_voxels"] == logic.lastCase.segment(prediction.segment).n_voxels


def test_export_writes_core_outputs(loaded, tmp_path, core_result):
    logic, nodes, _ = loaded
    with pytest.raises(InputError, match="run a prediction first"):
        logic.exportResults(tmp_path / "too-early")
    logic.predict(nodes.petNode, nodes.segmentationNode, nodes.clinical, nodes.ctNode)
    out = logic.exportResults(tmp_path / "export")
    for name in ("doses.csv", "doses.json", "dose_segmentation.seg.nrrd", "report.html"):
        assert (out / name).is_file(), name
    with open(out / "doses.csv", newline="") as handle:
        rows = {r["segment"]: float(r["predicted_gy_per_gbq"]) for r in csv.DictReader(handle)}
    for p in core_result.predictions:
        assert math.isclose(rows[p.segment], p.predicted_gy_per_gbq, rel_tol=1e-5)


def test_progress_and_cancel(loaded):
    logic, nodes, _ = loaded
    seen = []
    logic.predict(nodes.petNode, nodes.segmentationNode, nodes.clinical, nodes.ctNode, writeBack=False,
                  progressCallback=lambda f, m: seen.append(f))
    assert seen[0] == 0.0 and seen[-1] == 1.0 and seen == sorted(seen)
    before = nodes.segmentationNode.GetSegmentation().GetNthSegment(0).GetColor()
    with pytest.raises(CancelledError):
        logic.predict(nodes.petNode, nodes.segmentationNode, nodes.clinical, nodes.ctNode,
                      progressCallback=lambda f, m: f < 0.4)
    assert nodes.segmentationNode.GetSegmentation().GetNthSegment(0).GetColor() == before


def test_untrusted_model_refused(loaded, tmp_path):
    import shutil

    from psmadose.modelfile import bundled_model_dir

    logic, nodes, _ = loaded
    copy = tmp_path / "model"
    shutil.copytree(bundled_model_dir(), copy)
    with pytest.raises(InputError, match="explicit trust"):
        logic.predict(nodes.petNode, nodes.segmentationNode, nodes.clinical, modelPath=copy)
    result = logic.predict(nodes.petNode, nodes.segmentationNode, nodes.clinical, modelPath=copy,
                           trustModel=True, writeBack=False)
    assert result.provenance["model_bundled"] is False


def test_load_virtual_patient(tmp_path, mrml_scene):
    logic = DosePredictLogic(logCallback=lambda m: None)
    case = logic.loadVirtualPatient(tmp_path)
    assert case.petNode.GetImageData().GetDimensions() == (100, 72, 205)
    assert case.ctNode is not None
    names = [case.segmentationNode.GetSegmentation().GetNthSegment(i).GetName()
             for i in range(case.segmentationNode.GetSegmentation().GetNumberOfSegments())]
    assert "kidney_left" in names and any(n.startswith("lesion") for n in names)
    segmentIdByName(case.segmentationNode, "kidney_left")
    assert case.clinical["pet_tracer"] == "18F-DCFPyL"
    summary = logic.modelSummary(logic.loadModel())
    assert "not clinically validated" in summary and "virtual" in summary


def test_out_of_domain_reason_reaches_the_slicer_table(loaded):
    logic, nodes, _ = loaded
    clinical = dict(nodes.clinical, weight_kg=170.0)  # plausible, but above the bundled model's 53-134 kg
    outputs = logic.predict(nodes.petNode, nodes.segmentationNode, clinical, nodes.ctNode)
    table = outputs.tableNode
    names = [table.GetColumnName(c) for c in range(table.GetNumberOfColumns())]
    in_domain, warnings = names.index("In domain"), names.index("Warnings")
    assert table.GetNumberOfRows() == len(outputs.result.predictions) > 0
    for row in range(table.GetNumberOfRows()):
        assert table.GetCellText(row, in_domain) == "0"
        assert "weight_kg = 170 outside the training range" in table.GetCellText(row, warnings)
