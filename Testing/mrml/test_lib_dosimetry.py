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
