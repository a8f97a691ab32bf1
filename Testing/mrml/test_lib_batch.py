"""The headless batch script (Slicer --no-main-window --python-script) on slicer-core, through main(argv)."""

from __future__ import annotations

import csv
import math
import shutil

import pytest
from psmadose.case import read_case
from psmadose.modelfile import load_model
from psmadose.predict import predict_case
from psmadose.simulate.cohort import simulate_cohort
from PSMADosePredictLib import batch_cli

pytestmark = pytest.mark.mrml


def test_batch_two_cases_same_doses_as_core(tmp_path, mrml_scene, capsys):
    cases = tmp_path / "cases"
    simulate_cohort(cases, "demo", n_patients=2, workers=1)
    broken = cases / "vp_broken"
    shutil.copytree(cases / "vp001", broken)
    (broken / "clinical.json").write_text('{"age_years": 71}')
    out = tmp_path / "out"
    status = batch_cli.main(["--", "--cases", str(cases), "--out", str(out)])
    assert status == 2  # one case failed; the others are complete
    with open(out / "batch_summary.csv", newline="") as handle:
        summary = {r["case_id"]: r for r in csv.DictReader(handle)}
    assert summary["vp001"]["status"] == summary["vp002"]["status"] == "ok"
    assert summary["vp_broken"]["status"] == "error" and "weight_kg" in summary["vp_broken"]["message"]
    assert not (out / "vp_broken").exists()
    model = load_model()
    for case_id in ("vp001", "vp002"):
        for name in ("doses.csv", "doses.json", "dose_segmentation.seg.nrrd", "report.html"):
            assert (out / case_id / name).is_file()
        core = predict_case(read_case(cases / case_id), model)
        expected = {p.segment: p.predicted_gy_per_gbq for p in core.predictions}
        with open(out / case_id / "doses.csv", newline="") as handle:
            got = {r["segment"]: float(r["predicted_gy_per_gbq"]) for r in csv.DictReader(handle)}
        assert got.keys() == expected.keys()
        assert all(math.isclose(got[k], expected[k], rel_tol=1e-5) for k in got)  # CSV keeps 6 digits
    assert "2 case(s) predicted, 1 failed" in capsys.readouterr().out
    # The scene is left as it was: case nodes are removed after each case.
    assert mrml_scene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode") == 0
    # An existing output is refused with exit code 2 and one error line.
    assert batch_cli.main(["--cases", str(cases), "--out", str(out)]) == 2
    assert capsys.readouterr().err.startswith("error: ")
