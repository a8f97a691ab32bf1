"""Prediction results written back into the scene: segment colours, a table node, plots and a colour legend.

Colours follow the documented dose colormap of ``psmadose.dose_colors`` (turbo, log scale, 0.1-30 Gy/GBq,
clipped), so a colour in Slicer means the same dose as in the report and in ``dose_segmentation.seg.nrrd``.
Reference limits come from ``psmadose.report.DOSE_LIMITS`` (one place for the CLI and Slicer).
"""

from __future__ import annotations

import math

import numpy as np
import slicer
import vtk
from psmadose.dose_colors import DOSE_COLOR_RANGE_GY_PER_GBQ, dose_to_rgb
from psmadose.dose_references import ORGAN_AT_RISK_TYPES, dose_limit_for
from psmadose.predict import REFERENCE_ORGAN_COLOR, PredictionResult

ORIGINAL_COLOR_TAG = "PSMADosePredict.OriginalColor"
DOSE_TAG = "PSMADosePredict.PredictedGyPerGBq"
# The type a prediction used. Not STRUCTURE_TYPE_TAG: that one means "set by the user" and would make every
# predicted segment look explicitly typed (a segment renamed afterwards would keep its old type).
PREDICTED_TYPE_TAG = "PSMADosePredict.PredictedStructureType"
# Doses named in the colour legend (Gy/GBq, log-spaced over the colormap range 0.1-30).
LEGEND_DOSES_GY_PER_GBQ = (0.1, 0.3, 1.0, 3.0, 10.0, 30.0)
LEGEND_COLOR_NODE_NAME = "PSMADosePredict dose legend (Gy/GBq)"
PREVIOUS_COLOR_NODE_ATTRIBUTE = "PSMADosePredict.PreviousColorNodeID"

# (column name, attribute of DosePrediction, kind, unit label, long name)
RESULT_COLUMNS: tuple[tuple[str, str, str, str, str], ...] = (
    ("Segment", "segment", "string", "", "Segment name"),
    ("Type", "structure_type", "string", "", "Structure type"),
    ("Volume", "volume_ml", "double", "mL", "Segment volume on the PET grid"),
    ("SUVmean", "suv_mean", "double", "g/mL", "Mean SUV (body weight) in the segment"),
    ("SUV tissue", "suv_tissue", "double", "g/mL",
     "Tissue uptake used by the physics baseline (independent of blur, noise and a voxel of contour)"),
    ("Gy/GBq", "predicted_gy_per_gbq", "double", "Gy/GBq", "Predicted absorbed dose per injected activity"),
    ("Physics Gy/GBq", "physics_gy_per_gbq", "double", "Gy/GBq",
     "Physics baseline alone: the dose the tissue uptake implies with population kinetics"),
    ("Population Gy/GBq", "population_mean_gy_per_gbq", "double", "Gy/GBq",
     "Training mean dose of the structure type (baseline)"),
    ("Gy per cycle", "predicted_gy", "double", "Gy", "Predicted absorbed dose per cycle at the planned activity"),
    ("Cumulative Gy", "predicted_gy_cumulative", "double", "Gy",
     "Predicted absorbed dose over the planned cycles (cycle-1 kinetics assumed)"),
    ("80% low", "interval_80_low_gy_per_gbq", "double", "Gy/GBq", "80% prediction interval, lower bound"),
    ("80% high", "interval_80_high_gy_per_gbq", "double", "Gy/GBq", "80% prediction interval, upper bound"),
    ("In domain", "in_domain", "bit", "", "Inputs inside the training domain of the model"),
    ("Warnings", "warnings", "string", "", "Why a prediction may be less reliable"),
)


def _restoreOrRememberColor(segment) -> None:
    value = vtk.reference("")
    if not segment.GetTag(ORIGINAL_COLOR_TAG, value):
        segment.SetTag(ORIGINAL_COLOR_TAG, " ".join(f"{c:.6g}" for c in segment.GetColor()))


def applyDoseColors(segmentationNode, result: PredictionResult) -> dict[str, tuple[float, float, float]]:
    """Colour every predicted segment by its predicted Gy/GBq; segments without a prediction turn grey.

    The original colour is kept in a segment tag (``restoreOriginalColors`` puts it back); the predicted
    type and dose are stored as tags too (``PREDICTED_TYPE_TAG``, ``DOSE_TAG``). Returns the colour given to each
    segment, by name.
    """
    doses = {p.segment: p for p in result.predictions}
    segmentation = segmentationNode.GetSegmentation()
    colors = {}
    for i in range(segmentation.GetNumberOfSegments()):
        segment = segmentation.GetNthSegment(i)
        name = segment.GetName()
        _restoreOrRememberColor(segment)
        prediction = doses.get(name)
        if prediction is None:
            color = REFERENCE_ORGAN_COLOR
        else:
            color = dose_to_rgb(prediction.predicted_gy_per_gbq)
            segment.SetTag(PREDICTED_TYPE_TAG, prediction.structure_type)
            segment.SetTag(DOSE_TAG, f"{prediction.predicted_gy_per_gbq:.6g}")
        segment.SetColor(*color)
        colors[name] = tuple(float(c) for c in color)
    return colors


def restoreOriginalColors(segmentationNode) -> None:
    """Original segment colours back, and the dose legend hidden (the colours no longer mean doses)."""
    segmentation = segmentationNode.GetSegmentation()
    for i in range(segmentation.GetNumberOfSegments()):
        segment = segmentation.GetNthSegment(i)
        value = vtk.reference("")
        if segment.GetTag(ORIGINAL_COLOR_TAG, value):
            segment.SetColor(*[float(v) for v in str(value).split()])
    legend = _legendDisplayNode(segmentationNode)
    if legend is not None:
        legend.SetVisibility(False)
    display = segmentationNode.GetDisplayNode()
    if display is not None and display.GetAttribute(PREVIOUS_COLOR_NODE_ATTRIBUTE) is not None:
        display.SetAndObserveColorNodeID(display.GetAttribute(PREVIOUS_COLOR_NODE_ATTRIBUTE) or "")
        display.RemoveAttribute(PREVIOUS_COLOR_NODE_ATTRIBUTE)


def _newNode(className: str, name: str, scene=None):
    scene = scene if scene is not None else slicer.mrmlScene
    return scene.AddNewNodeByClass(className, scene.GenerateUniqueName(name))


def _column(kind: str, name: str):
    array = {"string": vtk.vtkStringArray, "double": vtk.vtkDoubleArray, "bit": vtk.vtkBitArray}[kind]()
    array.SetName(name)
    return array


def updateResultsTable(result: PredictionResult, tableNode=None, scene=None):
    """A vtkMRMLTableNode with one row per predicted segment (columns ``RESULT_COLUMNS``, units set)."""
    if tableNode is None:
        tableNode = _newNode("vtkMRMLTableNode", f"{result.case_id} predicted doses", scene)
    table = vtk.vtkTable()
    arrays = []
    for name, attribute, kind, _, _ in RESULT_COLUMNS:
        array = _column(kind, name)
        for prediction in result.predictions:
            value = getattr(prediction, attribute)
            if kind == "string":
                array.InsertNextValue(str(value))
            elif kind == "bit":
                array.InsertNextValue(1 if value else 0)
            else:
                array.InsertNextValue(float(value))
        arrays.append(array)
        table.AddColumn(array)
    wasModifying = tableNode.StartModify()
    tableNode.SetAndObserveTable(table)
    for name, _, _, unit, longName in RESULT_COLUMNS:
        if unit:
            tableNode.SetColumnUnitLabel(name, unit)
        tableNode.SetColumnDescription(name, longName)
    tableNode.SetLocked(True)  # results, not an input: editing them in the table view would be misleading
    tableNode.SetAttribute("PSMADosePredict.ModelId", str(result.provenance.get("model_id", "")))
    tableNode.SetAttribute("PSMADosePredict.ActivityGBq", f"{result.activity_gbq:g}")
    tableNode.SetAttribute("PSMADosePredict.Cycles", str(result.cycles))
    tableNode.EndModify(wasModifying)
    return tableNode


def organDoseRows(result: PredictionResult) -> list[tuple[str, str, float, float]]:
    """(segment, type, cumulative Gy, reference limit Gy or NaN) for every organ at risk of the result."""
    rows = []
    for p in result.predictions:
        if p.structure_type in ORGAN_AT_RISK_TYPES:
            limit = dose_limit_for(p.structure_type)
            rows.append((p.segment, p.structure_type, float(p.predicted_gy_cumulative),
                         float(limit.value) if limit else math.nan))
    return rows


def updateDoseLimitsChart(result: PredictionResult, chartNode=None, scene=None):
    """Bar chart of cumulative organ doses with the reference limits of ``psmadose.report.DOSE_LIMITS``.

    Returns the vtkMRMLPlotChartNode; its table node holds columns Index, Segment, Type, Cumulative Gy, Limit Gy
    (NaN where no limit is sourced: submandibular and lacrimal glands).
    """
    scene = scene if scene is not None else slicer.mrmlScene
    rows = organDoseRows(result)
    if chartNode is None:
        chartNode = _newNode("vtkMRMLPlotChartNode", f"{result.case_id} organ doses vs limits", scene)
    tableNode = chartNode.GetNodeReference("PSMADosePredict.Table")
    if tableNode is None:
        tableNode = _newNode("vtkMRMLTableNode", f"{result.case_id} organ doses vs limits table", scene)
        chartNode.SetNodeReferenceID("PSMADosePredict.Table", tableNode.GetID())
    table = vtk.vtkTable()
    columns = {"Index": _column("double", "Index"), "Segment": _column("string", "Segment"),
               "Type": _column("string", "Type"), "Cumulative Gy": _column("double", "Cumulative Gy"),
               "Limit Gy": _column("double", "Limit Gy")}
    for index, (segment, kind, dose, limit) in enumerate(rows):
        columns["Index"].InsertNextValue(float(index))
        columns["Segment"].InsertNextValue(segment)
        columns["Type"].InsertNextValue(kind)
        columns["Cumulative Gy"].InsertNextValue(dose)
        columns["Limit Gy"].InsertNextValue(limit)
    for array in columns.values():
        table.AddColumn(array)
    tableNode.SetAndObserveTable(table)
    tableNode.SetColumnUnitLabel("Cumulative Gy", "Gy")
    tableNode.SetColumnUnitLabel("Limit Gy", "Gy")

    def series(role: str, name: str):
        node = chartNode.GetNodeReference(role)
        if node is None:
            node = _newNode("vtkMRMLPlotSeriesNode", name, scene)
            chartNode.SetNodeReferenceID(role, node.GetID())
            chartNode.AddAndObservePlotSeriesNodeID(node.GetID())
        node.SetAndObserveTableNodeID(tableNode.GetID())
        node.SetXColumnName("Index")
        node.SetLabelColumnName("Segment")
        return node

    doses = series("PSMADosePredict.DoseSeries", "Predicted cumulative dose")
    doses.SetYColumnName("Cumulative Gy")
    doses.SetPlotType(slicer.vtkMRMLPlotSeriesNode.PlotTypeBar)
    doses.SetColor(0.2, 0.45, 0.75)
    limits = series("PSMADosePredict.LimitSeries", "Reference limit (external-beam derived)")
    limits.SetYColumnName("Limit Gy")
    limits.SetPlotType(slicer.vtkMRMLPlotSeriesNode.PlotTypeScatter)
    limits.SetLineStyle(slicer.vtkMRMLPlotSeriesNode.LineStyleNone)
    limits.SetMarkerStyle(slicer.vtkMRMLPlotSeriesNode.MarkerStyleSquare)
    limits.SetMarkerSize(12)
    limits.SetColor(0.85, 0.1, 0.1)
    chartNode.SetTitle(f"Cumulative organ doses over {result.cycles} cycles of {result.activity_gbq:g} GBq "
                       "(virtual-patient model; not clinically validated)")
    chartNode.SetXAxisTitle("organ at risk (bar index; segment names in the table)")
    chartNode.SetYAxisTitle("cumulative absorbed dose (Gy)")
    chartNode.SetLegendVisibility(True)
    return chartNode


def createDoseColorTableNode(scene=None, numberOfColors: int = 256):
    """Colour table of the dose colormap: entry i is the colour of a dose log-spaced over 0.1-30 Gy/GBq.

    Entry names carry the dose ("1.00 Gy/GBq"), so Slicer's colour legend can label the scale.
    """
    scene = scene if scene is not None else slicer.mrmlScene
    name = "PSMADosePredict dose colormap (Gy/GBq, log)"
    existing = scene.GetFirstNodeByName(name)
    if existing is not None:
        return existing
    node = scene.AddNewNodeByClass("vtkMRMLColorTableNode", name)
    node.SetTypeToUser()
    node.SetNumberOfColors(numberOfColors)
    low, high = DOSE_COLOR_RANGE_GY_PER_GBQ
    for index, dose in enumerate(np.geomspace(low, high, numberOfColors)):
        r, g, b = dose_to_rgb(float(dose))
        node.SetColor(index, f"{dose:.3g} Gy/GBq", r, g, b, 1.0)
    node.SetAttribute("PSMADosePredict.Scale", f"log10, {low:g}-{high:g} Gy/GBq, clipped")
    return node


def createDoseLegendColorNode(scene=None):
    """A small colour table for the legend: one entry per dose of LEGEND_DOSES_GY_PER_GBQ, named "3 Gy/GBq".

    The legend shows one swatch per entry labelled with its name (a 256-entry table would print 256 labels).
    """
    scene = scene if scene is not None else slicer.mrmlScene
    existing = scene.GetFirstNodeByName(LEGEND_COLOR_NODE_NAME)
    if existing is not None:
        return existing
    node = scene.AddNewNodeByClass("vtkMRMLColorTableNode", LEGEND_COLOR_NODE_NAME)
    node.SetTypeToUser()
    node.SetNumberOfColors(len(LEGEND_DOSES_GY_PER_GBQ))
    for index, dose in enumerate(LEGEND_DOSES_GY_PER_GBQ):
        r, g, b = dose_to_rgb(dose)
        node.SetColor(index, f"{dose:g} Gy/GBq", r, g, b, 1.0)
    low, high = DOSE_COLOR_RANGE_GY_PER_GBQ
    node.SetAttribute("PSMADosePredict.Scale", f"log10, {low:g}-{high:g} Gy/GBq, clipped; segment colours are "
                                               "interpolated between these entries")
    return node


def _legendDisplayNode(segmentationNode):
    for i in range(segmentationNode.GetNumberOfDisplayNodes()):
        display = segmentationNode.GetNthDisplayNode(i)
        if display is not None and display.IsA("vtkMRMLColorLegendDisplayNode"):
            return display
    return None


def showDoseLegend(segmentationNode, scene=None):
    """A colour legend of the dose scale in the views showing the segmentation (vtkMRMLColorLegendDisplayNode).

    Slicer's colour legend displayable manager takes the colour node of the legend's *primary display node*
    (vtkMRMLColorLegendDisplayableManager::vtkInternal::UpdateActor: "No color node is set in primary display
    node" otherwise, and the legend stays hidden), not the one set on the legend node. A segmentation display node
    has none by default, so the legend colour table is set there too; segment colours do not come from it (they are
    per segment), and the previous colour node is remembered for ``restoreOriginalColors``.

    Returns the legend display node, or None on a Slicer without colour legends (before 4.13).
    """
    scene = scene if scene is not None else slicer.mrmlScene
    colorNode = createDoseLegendColorNode(scene)
    if not hasattr(slicer, "vtkMRMLColorLegendDisplayNode"):
        return None
    if segmentationNode.GetDisplayNode() is None:
        segmentationNode.CreateDefaultDisplayNodes()
    display = segmentationNode.GetDisplayNode()
    if display.GetAttribute(PREVIOUS_COLOR_NODE_ATTRIBUTE) is None:
        display.SetAttribute(PREVIOUS_COLOR_NODE_ATTRIBUTE, display.GetColorNodeID() or "")
    display.SetAndObserveColorNodeID(colorNode.GetID())
    legend = _legendDisplayNode(segmentationNode)
    if legend is None:
        legend = scene.AddNewNodeByClass("vtkMRMLColorLegendDisplayNode")
        segmentationNode.AddAndObserveDisplayNodeID(legend.GetID())
    legend.SetAndObservePrimaryDisplayNode(display)
    legend.SetAndObserveColorNodeID(colorNode.GetID())
    legend.SetTitleText("Predicted dose (Gy/GBq)")
    legend.SetUseColorNamesForLabels(True)
    legend.SetLabelFormat("%s")  # labels are the colour names (vtkSlicerScalarBarActor wants a string format)
    legend.SetVisibility(True)
    return legend
