"""The module's "Post-therapy dosimetry" section without its GUI: parameter values -> runDosimetry arguments (the
core's method and fit lists, "." meaning "not set"), and what its Run and Show buttons put into a real scene
(slicer-core): dose map coloured in Gy with a legend, layout with table and plot views, one TAC series a segment."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib import colormaps
from psmadose.dose_colors import DOSE_COLOR_RANGE_GY_PER_GBQ, DOSE_COLORMAP_NAME
from psmadose.errors import InputError
from PSMADosePredictLib.parameters import (
    DOSE_FIT_CHOICES,
    DOSE_METHOD_CHOICES,
    DOSIMETRY_PARAMETERS,
    dosimetryArguments,
    dosimetryReady,
    optionalPath,
)

pytestmark = pytest.mark.mrml

MODULE_DIR = Path(__file__).resolve().parents[2] / "PSMADosePredict"
VALUES = {"dosimetryStudyDir": Path("/data/study"), "dosimetryOutDir": Path("/data/out"), "dosimetryMethod": "lde",
          "dosimetryFit": "mono", "dosimetryRegister": True, "dosimetryIntoCase": Path("."),
          "dosimetryOverwrite": False}


# ------------------------------------------------------------------------------------------ parameters

def test_method_and_fit_choices_are_the_cores_lists():
    from psmadose.dosimetry import DOSE_METHODS
    from psmadose.dosimetry.kinetics import METHODS

    assert list(DOSE_METHOD_CHOICES) == list(DOSE_METHODS) and len(DOSE_METHOD_CHOICES) == len(DOSE_METHODS)
    assert list(DOSE_FIT_CHOICES) == list(METHODS)
    assert DOSE_FIT_CHOICES[0] == "auto" and "madsen" in DOSE_FIT_CHOICES and "vsv" not in DOSE_FIT_CHOICES
    assert {"vsv", "lde", "sphere"} <= set(DOSE_METHOD_CHOICES)


def test_choices_do_not_import_the_core_until_used():
    """The module file declares Choice(DOSE_METHOD_CHOICES) before the core's packages may be installed."""
    code = ("import sys; import PSMADosePredictLib.parameters as p; r = repr(p.DOSE_METHOD_CHOICES); "
            "before = 'psmadose' in sys.modules; ok = 'vsv' in p.DOSE_METHOD_CHOICES; "
            "print(before, ok, 'psmadose.dosimetry' in sys.modules, r)")
    env = dict(os.environ, PYTHONPATH=str(MODULE_DIR))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True,
                         timeout=300).stdout.split()
    assert out[:3] == ["False", "True", "True"], out
    assert out[3] == "psmadose.dosimetry.DOSE_METHODS"


def test_parameter_values_become_run_dosimetry_arguments():
    arguments = dosimetryArguments(VALUES)
    assert arguments == {"studyDir": Path("/data/study"), "outDir": Path("/data/out"), "method": "lde",
                         "fit": "mono", "register": True, "into": None, "overwrite": False}
    assert set(DOSIMETRY_PARAMETERS.values()) == set(arguments)
    assert set(DOSIMETRY_PARAMETERS) == set(VALUES)
    into = dosimetryArguments(dict(VALUES, dosimetryIntoCase=Path("/data/case"), dosimetryOverwrite=True))
    assert into["into"] == Path("/data/case") and into["overwrite"] is True
    assert dosimetryArguments(dict(VALUES, dosimetryOutDir="~/dosi"))["outDir"] == Path.home() / "dosi"


@pytest.mark.parametrize("empty", [Path(), Path(""), ".", "", "  ", None])
def test_empty_path_parameter_is_not_set(empty):
    """An empty pathlib.Path parameter reads back as "." (what an empty ctkPathLineEdit stores)."""
    assert optionalPath(empty) is None
    assert not dosimetryReady(dict(VALUES, dosimetryStudyDir=empty))
    assert not dosimetryReady(dict(VALUES, dosimetryOutDir=empty))
    with pytest.raises(InputError, match="no study folder"):
        dosimetryArguments(dict(VALUES, dosimetryStudyDir=empty))
    with pytest.raises(InputError, match="no output folder"):
        dosimetryArguments(dict(VALUES, dosimetryOutDir=empty))
    assert dosimetryArguments(dict(VALUES, dosimetryIntoCase=empty))["into"] is None


def test_ready_and_refused_values():
    assert dosimetryReady(VALUES)
    assert optionalPath("./study") == Path("study")
    with pytest.raises(InputError, match="dose method 'gauss' is not one of vsv"):
        dosimetryArguments(dict(VALUES, dosimetryMethod="gauss"))
    with pytest.raises(InputError, match="fit 'poly' is not one of auto"):
        dosimetryArguments(dict(VALUES, dosimetryFit="poly"))


# ---------------------------------------------------------------------------------- Run and Show, for real

def test_run_and_show_put_the_results_in_the_views(mrml_app, mrml_scene, demo_case, tmp_path):
    """What the Run button does (parameter values -> runDosimetry, reference doses written into a case folder) and
    what Show does: dose map over the slice views' background, coloured linearly in Gy with the dose colormap,
    transparent below 0.1 Gy/GBq x activity, a colour legend; the doses table and TAC chart in table/plot views."""
    import slicer
    from PSMADosePredictLib.dosimetry import (
        ACTIVITY_ATTRIBUTE,
        DOSE_MAP_COLOR_NODE_NAME,
        DOSE_MAP_OPACITY,
        runDosimetry,
        showDosimetryResults,
    )
    from vtk.util.numpy_support import vtk_to_numpy

    case = tmp_path / "case"
    shutil.copytree(demo_case, case)  # demo_case is shared by the session: never write into it
    (case / "doses.csv").write_text("segment,reference_gy_per_gbq\nkidney_left,0.1\n", encoding="utf-8")
    values = dict(VALUES, dosimetryStudyDir=demo_case, dosimetryOutDir=tmp_path / "dosi", dosimetryFit="auto",
                  dosimetryRegister=False, dosimetryIntoCase=case)
    with pytest.raises(InputError, match="doses.csv"):  # an existing doses.csv is replaced only with overwrite
        runDosimetry(**dosimetryArguments(values), scene=mrml_scene)
    assert not (tmp_path / "dosi").exists()
    outputs = runDosimetry(**dosimetryArguments(dict(values, dosimetryOverwrite=True)), scene=mrml_scene)
    written = pd.read_csv(tmp_path / "dosi" / "doses.csv")
    reference = pd.read_csv(case / "doses.csv")
    assert sorted(reference["segment"]) == sorted(written["segment"])
    activity = outputs.result.study.activity_gbq
    assert float(outputs.doseVolumeNode.GetAttribute(ACTIVITY_ATTRIBUTE)) == pytest.approx(activity, rel=1e-5)

    # The views of a Slicer application: a layout and slice views, one already showing an anatomy volume.
    layout = mrml_scene.AddNewNodeByClass("vtkMRMLLayoutNode")
    layout.SetViewArrangement(slicer.vtkMRMLLayoutNode.SlicerLayoutConventionalView)
    anatomy = slicer.util.addVolumeFromArray(np.zeros((2, 2, 2), dtype=np.float32), name="ct")
    red = mrml_scene.AddNewNodeByClass("vtkMRMLSliceCompositeNode")
    red.SetBackgroundVolumeID(anatomy.GetID())
    green = mrml_scene.AddNewNodeByClass("vtkMRMLSliceCompositeNode")

    showDosimetryResults(outputs.doseVolumeNode, outputs.tableNode, outputs.tacChartNode, scene=mrml_scene,
                         appLogic=mrml_app.app_logic)
    doseId = outputs.doseVolumeNode.GetID()
    assert red.GetBackgroundVolumeID() == anatomy.GetID() and red.GetForegroundVolumeID() == doseId
    assert red.GetForegroundOpacity() == pytest.approx(DOSE_MAP_OPACITY)
    assert green.GetBackgroundVolumeID() == doseId
    assert layout.GetViewArrangement() == slicer.vtkMRMLLayoutNode.SlicerLayoutFourUpPlotTableView
    selection = mrml_scene.GetFirstNodeByClass("vtkMRMLSelectionNode")
    assert selection.GetActiveTableID() == outputs.tableNode.GetID()
    assert selection.GetActivePlotChartID() == outputs.tacChartNode.GetID()

    # One TAC series per segment, named after it, holding its activities at the study's time points.
    chart, names = outputs.tacChartNode, [s.name for s in outputs.result.segments]
    series = [chart.GetNthPlotSeriesNode(i) for i in range(chart.GetNumberOfPlotSeriesNodes())]
    assert [s.GetYColumnName() for s in series] == names == list(written["segment"])
    tacTable = series[0].GetTableNode()
    assert tacTable.GetNumberOfRows() == len(outputs.result.study.times_h)
    for segment in outputs.result.segments:
        column = vtk_to_numpy(tacTable.GetTable().GetColumnByName(segment.name))
        np.testing.assert_allclose(column, segment.activity_mbq, rtol=1e-6)

    # The colours Slicer's volume pipeline really produces (RGBA per voxel), against the dose colormap.
    display = outputs.doseVolumeNode.GetDisplayNode()
    assert display.GetColorNode().GetName() == DOSE_MAP_COLOR_NODE_NAME
    low = DOSE_COLOR_RANGE_GY_PER_GBQ[0] * activity
    top = display.GetWindowLevelMax()
    assert display.GetWindowLevelMin() == 0.0 and top > 2 * low
    dose = slicer.util.arrayFromVolume(outputs.doseVolumeNode)
    assert np.percentile(dose[dose > low], 99) < top <= dose.max()
    producer = display.GetOutputImageDataConnection().GetProducer()
    producer.Update()
    rgba = vtk_to_numpy(producer.GetOutputDataObject(0).GetPointData().GetScalars()).reshape(dose.shape + (4,))
    below = dose < low
    assert below.any() and (~below).any()
    assert (rgba[below][:, 3] == 0).all() and (rgba[~below][:, 3] == 255).all()
    shown = ~below & (dose <= top)
    expected = colormaps[DOSE_COLORMAP_NAME](dose[shown] / top)[:, :3] * 255
    # 256 levels over the window: a voxel may take the neighbouring entry's colour
    assert np.abs(rgba[shown][:, :3] - expected).max() < 12
    assert np.median(np.abs(rgba[shown][:, :3] - expected)) < 3
    hottest = np.unravel_index(np.argmax(dose), dose.shape)
    np.testing.assert_allclose(rgba[hottest][:3], np.array(colormaps[DOSE_COLORMAP_NAME](1.0)[:3]) * 255, atol=1)

    legend = slicer.modules.colors.logic().GetColorLegendDisplayNode(outputs.doseVolumeNode)
    assert legend is not None and legend.GetVisibility() and "Gy" in legend.GetTitleText()
    assert legend.GetPrimaryDisplayNode() is display

    # Show again (the button, later): nothing duplicated.
    colors = mrml_scene.GetNumberOfNodesByClass("vtkMRMLColorTableNode")
    showDosimetryResults(outputs.doseVolumeNode, outputs.tableNode, outputs.tacChartNode, scene=mrml_scene)
    assert mrml_scene.GetNumberOfNodesByClass("vtkMRMLColorTableNode") == colors
    assert mrml_scene.GetNumberOfNodesByClass("vtkMRMLColorLegendDisplayNode") == 1


def test_show_refuses_a_volume_that_is_not_a_dose_map(mrml_scene):
    import slicer
    from PSMADosePredictLib.dosimetry import showDosimetryResults

    volume = slicer.util.addVolumeFromArray(np.ones((2, 2, 2), dtype=np.float32), name="pet")
    with pytest.raises(ValueError, match="not a dose map of the post-therapy dosimetry"):
        showDosimetryResults(volume, scene=mrml_scene)
