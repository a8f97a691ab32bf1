"""Post-therapy dosimetry through MRML: run ``psmadose.dosimetry`` on a STUDY folder and show its results in the
scene (dose map volume, doses table, time-activity curves as a plot chart).

``runDosimetry`` is what the module's "Post-therapy dosimetry" section runs (issue 15, item 6), and
``showDosimetryResults`` what its Show button does; the widget only adds the progress dialog and fits the slice
views. The core computation touches no MRML node; nodes are created in the calling thread afterwards.
``progressCallback(fraction, message)`` returning False cancels (``psmadose.errors.CancelledError``).

The dose map (Gy) is shown with the module's dose colormap (turbo, ``psmadose.dose_colors``) but on a linear Gy
scale with a legend in Gy (see ``doseMapColorNode`` for why not the segments' log scale), transparent below the
colormap's low end (0.1 Gy/GBq times the administered activity).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import slicer
import vtk
from matplotlib import colormaps
from psmadose.dose_colors import DOSE_COLOR_RANGE_GY_PER_GBQ, DOSE_COLORMAP_NAME
from psmadose.dosimetry import DosimetryResult, Settings, run_dosimetry
from psmadose.dosimetry.cohort import is_cohort

from .convert import loadVolumeNode

log = logging.getLogger(__name__)

ACTIVITY_ATTRIBUTE = "PSMADosePredict.ActivityGBq"
DOSE_MAP_COLOR_NODE_NAME = "PSMADosePredict dose map colours (Gy, linear)"
DOSE_MAP_COLOR_ENTRIES = 256  # Slicer maps a volume's window to 256 levels: more entries would never be used
DOSE_MAP_OPACITY = 0.6  # as a foreground layer over the anatomy

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
    summary: dict | None = None  # a folder of studies: counts of succeeded / failed (psmadose.dosimetry.cohort)


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
    if is_cohort(Path(studyDir)):
        return _runCohort(Path(studyDir), Path(outDir), settings, into, overwrite, progress, say, scene)
    result = run_dosimetry(Path(studyDir), Path(outDir), settings, into=Path(into) if into else None,
                           overwrite=overwrite, progress=progress)
    say(f"dosimetry of {Path(studyDir).name}: {len(result.segments)} segments, method {method}; wrote {outDir}")
    doseNode = loadVolumeNode(Path(outDir) / "dose_map_gy.nrrd", "dose map (Gy)", scene)
    doseNode.SetAttribute(ACTIVITY_ATTRIBUTE, f"{result.study.activity_gbq:g}")
    doseNode.SetAttribute("PSMADosePredict.DoseMethod", result.settings.method)
    return DosimetryOutputs(Path(outDir), result, doseNode, dosesTableNode(result, scene),
                            tacChartNode(result, scene))


def _runCohort(studiesDir: Path, outDir: Path, settings, into, overwrite: bool, progress, say, scene):
    """A folder of studies (``psmadose.dosimetry.cohort``), one after the other in Slicer's process: OUT/<study>/
    per study, and the reference doses of every study as one table node (no single dose map or chart)."""
    from psmadose.batch import failure_line
    from psmadose.dosimetry.cohort import REFERENCE_TABLE, SUMMARY, run_dosimetry_cohort

    summary = run_dosimetry_cohort(studiesDir, outDir, settings, into=Path(into) if into else None,
                                   overwrite=overwrite, workers=1, progress=progress)
    say(f"dosimetry of {summary['succeeded']} studies of {studiesDir.name} (method {settings.method}), "
        f"{summary['failed']} failed; wrote {outDir}" + (f"; doses written into {summary['written_into']} cases"
                                                         if into else ""))
    if summary["failed"]:
        say(failure_line(summary, outDir, SUMMARY, ("study(ies)", "studies")).replace("error: ", "warning: ", 1))
    scene = scene if scene is not None else slicer.mrmlScene
    table = _readTable(outDir / REFERENCE_TABLE, scene)
    table.SetName(scene.GenerateUniqueName(f"reference doses of {studiesDir.name}"))
    table.SetAttribute("PSMADosePredict.DoseMethod", settings.method)
    table.SetLocked(True)
    return DosimetryOutputs(outDir, None, None, table, None, summary)


def _readTable(path: Path, scene):
    node = scene.AddNewNodeByClass("vtkMRMLTableNode")
    storage = scene.AddNewNodeByClass("vtkMRMLTableStorageNode")
    storage.SetFileName(str(path))
    if not storage.ReadData(node):
        raise ValueError(f"{path}: could not be read as a table")
    scene.RemoveNode(storage)
    return node


def activityOf(node) -> float:
    """The administered activity (GBq) recorded on a dose map or doses table node by ``runDosimetry``."""
    text = node.GetAttribute(ACTIVITY_ATTRIBUTE) if node is not None else None
    try:
        activity = float(text)
    except (TypeError, ValueError):
        raise ValueError(f"{node.GetName() if node is not None else 'no node'} is not a dose map of the "
                         "post-therapy dosimetry (no administered activity recorded); run the dosimetry again") \
            from None
    if not activity > 0:
        raise ValueError(f"{node.GetName()}: administered activity {text} GBq is not positive")
    return activity


def doseMapColorNode(scene=None):
    """Colour table of dose maps: the module's dose colormap (``DOSE_COLORMAP_NAME``, turbo), 256 entries, linear.

    Linear, not the log scale of segment colours: Slicer maps a scalar volume's window to 256 levels before the
    lookup table (vtkMRMLScalarVolumeDisplayNode), so a log scale put into a table linear in Gy was measured to
    give 123 distinct colours over 0-222 Gy and colours wrong by up to half the scale at 1-2 Gy (kidney doses).
    """
    scene = scene if scene is not None else slicer.mrmlScene
    existing = scene.GetFirstNodeByName(DOSE_MAP_COLOR_NODE_NAME)
    if existing is not None:
        return existing
    colormap = colormaps[DOSE_COLORMAP_NAME]
    node = scene.AddNewNodeByClass("vtkMRMLColorTableNode", DOSE_MAP_COLOR_NODE_NAME)
    node.SetTypeToUser()
    node.SetNumberOfColors(DOSE_MAP_COLOR_ENTRIES)
    for index in range(DOSE_MAP_COLOR_ENTRIES):
        r, g, b, _ = colormap(index / (DOSE_MAP_COLOR_ENTRIES - 1))
        node.SetColor(index, float(r), float(g), float(b), 1.0)
    node.SetAttribute("PSMADosePredict.Scale", f"{DOSE_COLORMAP_NAME}, linear over the dose map's window (Gy)")
    return node


def doseMapWindowGy(doseVolumeNode, activityGbq: float | None = None) -> tuple[float, float]:
    """(transparent below, top of the colour scale) in Gy.

    Below: the low end of the dose colormap (0.1 Gy/GBq) times the activity, so voxels that received next to
    nothing do not hide the anatomy. Top: the 99.9th percentile of the voxels above that (one hot voxel does not
    set the scale), at least twice the low end.
    """
    activity = activityGbq if activityGbq is not None else activityOf(doseVolumeNode)
    low = DOSE_COLOR_RANGE_GY_PER_GBQ[0] * activity
    dose = slicer.util.arrayFromVolume(doseVolumeNode)
    above = dose[np.isfinite(dose) & (dose > low)]
    top = float(np.percentile(above, 99.9)) if above.size else 0.0
    return low, max(top, 2.0 * low)


def showDoseMap(doseVolumeNode, activityGbq: float | None = None, scene=None):
    """Colour the dose map (turbo, linear in Gy over ``doseMapWindowGy``), transparent below the window's low end,
    with Slicer's colour legend of the volume labelled in Gy. Returns the scalar volume display node.
    """
    scene = scene if scene is not None else slicer.mrmlScene
    colorNode = doseMapColorNode(scene)
    lowGy, topGy = doseMapWindowGy(doseVolumeNode, activityGbq)
    if doseVolumeNode.GetDisplayNode() is None:
        doseVolumeNode.CreateDefaultDisplayNodes()
    display = doseVolumeNode.GetDisplayNode()
    wasModifying = display.StartModify()
    display.SetAndObserveColorNodeID(colorNode.GetID())
    display.AutoWindowLevelOff()
    display.SetWindowLevelMinMax(0.0, topGy)
    display.AutoThresholdOff()
    display.SetThreshold(lowGy, float(np.finfo(np.float32).max))  # below: transparent over the anatomy
    display.ApplyThresholdOn()
    display.SetInterpolate(False)  # a voxel is a dose estimate; do not blur it into its neighbours
    display.EndModify(wasModifying)
    colorLogic = _colorLogic()
    if colorLogic is not None and hasattr(slicer, "vtkMRMLColorLegendDisplayNode"):
        legend = colorLogic.GetColorLegendDisplayNode(doseVolumeNode) or \
            colorLogic.AddDefaultColorLegendDisplayNode(doseVolumeNode)
        if legend is not None:
            legend.SetTitleText("Absorbed dose (Gy)")
            legend.SetLabelFormat("%.1f")
            legend.SetVisibility(True)
    return display


def _colorLogic():
    try:
        return slicer.modules.colors.logic()
    except AttributeError:
        return None


def showDosimetryResults(doseVolumeNode=None, tableNode=None, chartNode=None, scene=None, appLogic=None,
                         opacity: float = DOSE_MAP_OPACITY) -> None:
    """Show a dosimetry's results: the dose map in every slice view, the doses table and the TAC chart in a layout
    with table and plot views.

    The dose map goes over what the slice views show (foreground, ``opacity``), or becomes their background when
    they show nothing. ``appLogic`` (Slicer's application logic) propagates the selection to the table and plot
    views, as ``vtkSlicerPlotsLogic::ShowChartInLayout`` does.
    """
    scene = scene if scene is not None else slicer.mrmlScene
    if doseVolumeNode is not None:
        showDoseMap(doseVolumeNode, scene=scene)
        doseId = doseVolumeNode.GetID()
        for index in range(scene.GetNumberOfNodesByClass("vtkMRMLSliceCompositeNode")):
            composite = scene.GetNthNodeByClass(index, "vtkMRMLSliceCompositeNode")
            background = composite.GetBackgroundVolumeID()
            if background and background != doseId:
                composite.SetForegroundVolumeID(doseId)
                composite.SetForegroundOpacity(opacity)
            else:
                composite.SetBackgroundVolumeID(doseId)
    if tableNode is None and chartNode is None:
        return
    layout = scene.GetFirstNodeByClass("vtkMRMLLayoutNode")
    if layout is not None:
        layout.SetViewArrangement(slicer.vtkMRMLLayoutNode.SlicerLayoutFourUpPlotTableView)
    selection = scene.GetFirstNodeByClass("vtkMRMLSelectionNode")
    if selection is not None:
        if tableNode is not None:
            selection.SetActiveTableID(tableNode.GetID())
        if chartNode is not None:
            selection.SetActivePlotChartID(chartNode.GetID())
    if appLogic is not None:
        if tableNode is not None:
            appLogic.PropagateTableSelection()
        if chartNode is not None:
            appLogic.PropagatePlotChartSelection()
