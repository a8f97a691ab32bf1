"""Post-therapy dosimetry through the MRML adapter (slicer-core): the scene gets the dose map, a doses table that
equals the core's doses.csv, and one time-activity series per segment; cancelling writes nothing."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from psmadose.errors import CancelledError

pytestmark = pytest.mark.mrml


def test_run_dosimetry_loads_results_into_the_scene(mrml_scene, demo_case, tmp_path):
    import slicer
    from PSMADosePredictLib.dosimetry import runDosimetry

    fractions = []
    outputs = runDosimetry(demo_case, tmp_path / "dosi", method="lde", scene=mrml_scene,
                           progressCallback=lambda f, m: fractions.append(f))
    assert fractions and fractions[-1] == pytest.approx(1.0)
    table = pd.read_csv(tmp_path / "dosi" / "doses.csv")
    node = outputs.tableNode
    assert node.GetNumberOfRows() == len(table)
    shown = [float(node.GetCellText(r, 2)) for r in range(node.GetNumberOfRows())]
    np.testing.assert_allclose(shown, table["absorbed_dose_gy"], rtol=1e-5)
    assert node.GetColumnUnitLabel("Absorbed dose") == "Gy"
    dose = slicer.util.arrayFromVolume(outputs.doseVolumeNode)
    assert dose.shape == tuple(outputs.result.reference.GetSize()[::-1]) and float(dose.max()) > 0
    assert outputs.tacChartNode.GetNumberOfPlotSeriesNodes() == len(table)


def test_cancel_writes_nothing(mrml_scene, demo_case, tmp_path):
    from PSMADosePredictLib.dosimetry import runDosimetry

    with pytest.raises(CancelledError):
        runDosimetry(demo_case, tmp_path / "dosi", method="lde", scene=mrml_scene,
                     progressCallback=lambda f, m: f < 0.3)
    assert not (tmp_path / "dosi").exists()


def test_folder_of_studies_gives_one_reference_table(mrml_scene, tmp_path):
    """The panel's study folder may be a folder of studies (psmadose.dosimetry.cohort): the studies run one after
    the other, OUT/<study>/ each, and the scene gets the reference doses of all of them as one table node whose
    values are the core's reference_doses.csv; a broken study is reported, not fatal."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parents[1] / "dosimetry"))
    from phantoms import write_study
    from PSMADosePredictLib.dosimetry import runDosimetry

    studies = tmp_path / "studies"
    write_study(studies / "pt_a", activity_gbq=7.4)
    write_study(studies / "pt_b", activity_gbq=6.0)
    (write_study(studies / "pt_c") / "administration.json").unlink()
    said = []
    outputs = runDosimetry(studies, tmp_path / "out", method="lde", scene=mrml_scene, logCallback=said.append)
    assert outputs.summary["succeeded"] == 2 and outputs.summary["failed"] == 1
    assert any("pt_c" in line and line.startswith("warning:") for line in said), said
    assert outputs.doseVolumeNode is None and outputs.tacChartNode is None
    expected = pd.read_csv(tmp_path / "out" / "reference_doses.csv")
    node = outputs.tableNode
    assert node.GetNumberOfRows() == len(expected) > 0
    columns = [node.GetColumnName(c) for c in range(node.GetNumberOfColumns())]
    assert columns == list(expected.columns)
    column = columns.index("reference_gy_per_gbq")
    shown = [float(node.GetCellText(r, column)) for r in range(node.GetNumberOfRows())]
    np.testing.assert_allclose(shown, expected["reference_gy_per_gbq"], rtol=1e-6)
    assert {node.GetCellText(r, 0) for r in range(node.GetNumberOfRows())} == {"pt_a", "pt_b"}
    assert (tmp_path / "out" / "pt_a" / "dose_map_gy.nrrd").is_file()
