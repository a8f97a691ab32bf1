"""Post-therapy dosimetry through MRML: run ``psmadose.dosimetry`` on a STUDY folder and show its results in the
scene (dose map volume, doses table, time-activity curves as a plot chart).

One call does what a future "Dosimetry" section of the module would do (issue 15, item 6); the widget is not
written yet. The core computation touches no MRML node; nodes are created in the calling thread afterwards.
``progressCallback(fraction, message)`` returning False cancels (``psmadose.errors.CancelledError``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import slicer
import vtk
from psmadose.dosimetry import DosimetryResult, Settings, run_dosimetry

from .convert import loadVolumeNode

log = logging.getLogger(__name__)

DOSE_COLUMNS = (  # (column, attribute or callable, kind, unit)
    ("Segment", "name", "string", ""),
    ("Type", "structure_type", "string", ""),
    ("Absorbed dose", "absorbed_dose_gy", "double", "Gy"),
    ("Dose per GBq", None, "double", "Gy/GBq"),
    ("Uncertainty (1 SD)", "dose_sd_gy", "double", "Gy"),
    ("TIA", None, "double", "MBq*h"),
    ("Effective half-life", None, "double", "h"),
    ("Fit", None, "string", ""),
    ("Dose-map mean", "dose_map_mean_gy", "double", "Gy"),
)


@dataclass
class DosimetryOutputs:
    outDir: Path
    result: DosimetryResult
    doseVolumeNode: object
    tableNode: object
    tacChartNode: object


def _value(segment, column: str, activity_gbq: float):
    if column == "Dose per GBq":
        return segment.absorbed_dose_gy / activity_gbq
    if column == "TIA":
        return segment.tia.tia_mbq_h
    if column == "Effective half-life":
        return segment.tia.effective_half_life_h
    if column == "Fit":
        return segment.tia.model
    return None


def dosesTableNode(result: DosimetryResult, scene=None):
    """A locked vtkMRMLTableNode, one row per segment (columns ``DOSE_COLUMNS``, units set)."""
    scene = scene if scene is not None else slicer.mrmlScene
    node = scene.AddNewNodeByClass("vtkMRMLTableNode", scene.GenerateUniqueName("post-therapy doses"))
    table = vtk.vtkTable()
    for column, attribute, kind, _ in DOSE_COLUMNS:
        array = vtk.vtkStringArray() if kind == "string" else vtk.vtkDoubleArray()
        array.SetName(column)
        for segment in result.segments:
            value = getattr(segment, attribute) if attribute else _value(segment, column, result.study.activity_gbq)
            array.InsertNextValue(str(value) if kind == "string" else float(value))
        table.AddColumn(array)
    node.SetAndObserveTable(table)
    for column, _, _, unit in DOSE_COLUMNS:
        if unit:
            node.SetColumnUnitLabel(column, unit)
    node.SetAttribute("PSMADosePredict.DoseMethod", result.settings.method)
    node.SetAttribute("PSMADosePredict.ActivityGBq", f"{result.study.activity_gbq:g}")
    node.SetLocked(True)
    return node


def tacChartNode(result: DosimetryResult, scene=None):
    """Time-activity curves: a table (time in h, activity in MBq per segment) and one scatter series a segment."""
    scene = scene if scene is not None else slicer.mrmlScene
    tableNode = scene.AddNewNodeByClass("vtkMRMLTableNode", scene.GenerateUniqueName("time-activity curves"))
    table = vtk.vtkTable()
    times = vtk.vtkDoubleArray()
    times.SetName("Time (h)")
    for t in result.study.times_h:
        times.InsertNextValue(float(t))
    table.AddColumn(times)
    for segment in result.segments:
        column = vtk.vtkDoubleArray()
        column.SetName(segment.name)
        for value in segment.activity_mbq:
            column.InsertNextValue(float(value))
        table.AddColumn(column)
    tableNode.SetAndObserveTable(table)
    chart = scene.AddNewNodeByClass("vtkMRMLPlotChartNode", scene.GenerateUniqueName("time-activity curves"))
    chart.SetNodeReferenceID("PSMADosePredict.Table", tableNode.GetID())
    for segment in result.segments:
        series = scene.AddNewNodeByClass("vtkMRMLPlotSeriesNode", scene.GenerateUniqueName(segment.name))
        series.SetAndObserveTableNodeID(tableNode.GetID())
        series.SetXColumnName("Time (h)")
        series.SetYColumnName(segment.name)
        series.SetPlotType(slicer.vtkMRMLPlotSeriesNode.PlotTypeScatter)
        series.SetMarkerStyle(slicer.vtkMRMLPlotSeriesNode.MarkerStyleCircle)
        chart.AddAndObservePlotSeriesNodeID(series.GetID())
    chart.SetTitle("Time-activity curves (partial-volume recovered; research use, not clinically validated)")
    chart.SetXAxisTitle("time after injection (h)")
    chart.SetYAxisTitle("activity (MBq)")
    chart.SetLegendVisibility(True)
    return chart


def runDosimetry(studyDir: str | Path, outDir: str | Path, *, method: str = "vsv", fit: str = "auto",
                 register: bool = False, into: str | Path | None = None, overwrite: bool = False,
                 progressCallback: Callable[[float, str], "bool | None"] | None = None,
                 logCallback: Callable[[str], None] | None = None, scene=None) -> DosimetryOutputs:
    """Run the post-therapy dosimetry of ``studyDir`` into ``outDir`` and load its results into the scene."""
    say = logCallback or log.info

    def progress(done: int, total: int):
        if progressCallback is None:
            return True
        return progressCallback(done / max(total, 1), "post-therapy dosimetry")

    settings = Settings(method=method, fit=fit, register=register)
    result = run_dosimetry(Path(studyDir), Path(outDir), settings, into=Path(into) if into else None,
                           overwrite=overwrite, progress=progress)
    say(f"dosimetry of {Path(studyDir).name}: {len(result.segments)} segments, method {method}; wrote {outDir}")
    doseNode = loadVolumeNode(Path(outDir) / "dose_map_gy.nrrd", "dose map (Gy)", scene)
    return DosimetryOutputs(Path(outDir), result, doseNode, dosesTableNode(result, scene),
                            tacChartNode(result, scene))
