"""``psmadose dosimetry`` as a real process: the simulator's --spect-times patient end to end (recover its true
dose), outputs and --into, and every bad input of issue 15 as one ``error:`` line naming the file, exit 2,
nothing written."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk
from phantoms import write_study
from psmadose.case import read_doses
from psmadose.dosimetry.study import read_study
from psmadose.errors import InputError

sys.path.insert(0, str(Path(__file__).parents[1] / "dicom"))
from dicom_writer import write_series  # noqa: E402


def _bias_by_type(out: Path, truth_csv: Path) -> pd.DataFrame:
    ours = pd.read_csv(out / "doses.csv").set_index("segment")
    truth = pd.Series(read_doses(truth_csv), name="truth")
    joined = ours.join(truth, how="inner")
    joined["error"] = joined["reference_gy_per_gbq"] / joined["truth"] - 1
    return joined.groupby("structure_type")["error"].agg(["mean", "std", "count"])


def test_simulated_patient_end_to_end(demo_case, cli, tmp_path):
    # Truth: the simulator's reference doses (MIRD self-dose of its TIA, full electron absorption, ICRP-107);
    # the SPECT it wrote is blurred (12 mm FWHM) and noisy, and the pipeline recovers partial volume.
    out = tmp_path / "dosi"
    result = cli("dosimetry", demo_case, "--out", out)
    assert result.returncode == 0, result.stderr
    for name in ("doses.csv", "dvh.csv", "dvh.png", "dose_map_gy.nrrd", "report.html", "dosimetry.json"):
        assert (out / name).is_file(), name
    table = pd.read_csv(out / "doses.csv")
    assert list(table.columns[:7]) == ["segment", "reference_gy_per_gbq", "absorbed_dose_gy", "tia_mbq_h",
                                       "effective_half_life_h", "fit_model", "uncertainty_gy"]
    bias = _bias_by_type(out, demo_case / "doses.csv")
    print("\nbias per structure type (fraction; method vsv, 3 time points, virtual patient):\n", bias.round(3))
    assert abs(bias.loc["kidney", "mean"]) < 0.10
    assert abs(bias.loc["tumour", "mean"]) < 0.10 and bias.loc["tumour", "std"] < 0.15
    assert abs(bias.loc["parotid", "mean"]) < 0.10
    dose = sitk.ReadImage(str(out / "dose_map_gy.nrrd"))
    assert dose.GetSize() == sitk.ReadImage(str(demo_case / "spect_024h.nrrd")).GetSize()
    record = json.loads((out / "dosimetry.json").read_text(encoding="utf-8"))
    assert record["settings"]["method"] == "vsv" and record["versions"]["psmadose"]
    assert len(list((out / "tacs").glob("tac_*.png"))) == len(table)
    assert "not clinically validated" in (out / "report.html").read_text(encoding="utf-8")


def test_into_writes_the_case_doses_once(demo_case, cli, tmp_path):
    case = tmp_path / "case"
    shutil.copytree(demo_case, case)
    (case / "doses.csv").unlink()
    out = tmp_path / "dosi"
    result = cli("dosimetry", case, "--out", out, "--method", "lde", "--into", case)
    assert result.returncode == 0, result.stderr
    written = read_doses(case / "doses.csv")
    ours = pd.read_csv(out / "doses.csv").set_index("segment")["reference_gy_per_gbq"]
    assert written == pytest.approx(ours.to_dict(), rel=1e-5)
    bias = _bias_by_type(out, demo_case / "doses.csv")
    print("\nbias per structure type (fraction; method lde):\n", bias.round(3))
    assert abs(bias.loc["kidney", "mean"]) < 0.10
    again = cli("dosimetry", case, "--out", tmp_path / "second", "--method", "lde", "--into", case)
    assert again.returncode == 2 and "doses.csv" in again.stderr and "--overwrite" in again.stderr
    assert not (tmp_path / "second").exists()


def _scale(study: Path, name: str, factor: float) -> None:
    image = sitk.ReadImage(str(study / name))
    sitk.WriteImage(image * factor, str(study / name))


def _counts_header(study: Path) -> None:
    image = sitk.ReadImage(str(study / "spect_24h.nrrd"))
    image.SetMetaData("units", "counts")
    sitk.WriteImage(image, str(study / "spect_24h.nrrd"))


def _crop_late(study: Path) -> None:
    image = sitk.ReadImage(str(study / "spect_96h.nrrd"))
    sitk.WriteImage(image[:24, :, :], str(study / "spect_96h.nrrd"))  # drops the lesion at i ~ 29


def _admin(study: Path, record: dict) -> None:
    (study / "administration.json").write_text(json.dumps(record), encoding="utf-8")


def _rename(study: Path, old: str, new: str) -> None:
    (study / old).rename(study / new)


BAD = {
    "counts": (lambda s: _scale(s, "spect_24h.nrrd", 2000.0), ["spect_24h.nrrd", "counts"]),
    "counts-header": (_counts_header, ["spect_24h.nrrd", "counts"]),
    "kBq/mL": (lambda s: _scale(s, "spect_4h.nrrd", 1e-4), ["spect_4h.nrrd", "kBq/mL"]),
    "activity-in-MBq": (lambda s: _admin(s, {"activity_gbq": 7400}), ["administration.json", "MBq"]),
    "activity-key": (lambda s: _admin(s, {"activity_mbq": 7400}), ["administration.json", "GBq"]),
    "missing-administration": (lambda s: (s / "administration.json").unlink(), ["administration.json", "missing"]),
    "before-injection": (lambda s: _rename(s, "spect_4h.nrrd", "spect_-2h.nrrd"), ["spect_-2h.nrrd", "after"]),
    "outside-fov": (_crop_late, ["spect_96h.nrrd", "lesion_01", "field of view"]),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_is_one_line_naming_file_and_fix(case, cli, tmp_path):
    study = write_study(tmp_path / "study")
    BAD[case][0](study)
    out = tmp_path / "out"
    result = cli("dosimetry", study, "--out", out)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stderr
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for word in BAD[case][1]:
        assert word in lines[0], (word, lines[0])
    assert not out.exists() and not list(tmp_path.glob(".out*"))


def test_one_time_point_with_a_multi_point_method(cli, tmp_path):
    study = write_study(tmp_path / "study", times_h=(48,))
    result = cli("dosimetry", study, "--out", tmp_path / "out", "--fit", "mono")
    assert result.returncode == 2 and "spect_48h.nrrd" in result.stderr and "--fit madsen" in result.stderr
    assert not (tmp_path / "out").exists()
    ok = cli("dosimetry", study, "--out", tmp_path / "stp", "--method", "lde")
    assert ok.returncode == 0, ok.stderr
    table = pd.read_csv(tmp_path / "stp" / "doses.csv").set_index("segment")
    assert table.loc["kidney_left", "fit_model"] == "madsen" and table.loc["kidney_left", "uncertainty_gy"] > 0


def _dicom_study(tmp_path: Path, folder: str, tags: dict) -> Path:
    study = write_study(tmp_path / "study", times_h=(4,))
    write_series(study / folder, tags={"AcquisitionDate": "20260102", "AcquisitionTime": "140000", **tags})
    return study


@pytest.mark.parametrize(("folder", "tags", "message"), [
    ("spect_24h", {"Units": "CNTS"}, "counts"),
    ("spect_24h", {"Units": None}, "no activity calibration"),
    ("spect_24h", {"AcquisitionDate": "20260101"}, "before the injection"),
    ("spect_24h", {}, "rename it spect_4h"),  # scanned 4 h after injection: out of order with spect_4h
])
def test_dicom_time_point_errors(tmp_path, folder, tags, message):
    study = _dicom_study(tmp_path, folder, tags)
    with pytest.raises(InputError, match=message) as caught:
        read_study(study)
    assert folder in str(caught.value)


def test_dicom_counts_through_the_cli(tmp_path, cli):
    study = _dicom_study(tmp_path, "spect_24h", {"Units": "CNTS"})
    result = cli("dosimetry", study, "--out", tmp_path / "out")
    assert result.returncode == 2 and "spect_24h" in result.stderr and "counts" in result.stderr


def test_nothing_modified_in_the_study(tmp_path, cli):
    study = write_study(tmp_path / "study")
    before = {p.name: p.read_bytes() for p in study.iterdir()}
    assert cli("dosimetry", study, "--out", tmp_path / "out", "--method", "lde").returncode == 0
    assert {p.name: p.read_bytes() for p in study.iterdir()} == before
    assert np.isfinite(pd.read_csv(tmp_path / "out" / "doses.csv")["absorbed_dose_gy"]).all()


def test_dicom_admin_decay_correction_is_undone(tmp_path):
    # Same stored values (same seed); ADMIN means decay-corrected to the injection: the activity present at the scan
    # (24 h later) is lower by exp(-lambda_p 24 h), lambda_p from ICRP-107.
    import datetime as dt
    import math

    from psmadose.dosimetry.study import _dicom_time_point
    from psmadose.lu177 import decay_data
    injection = dt.datetime(2026, 1, 1, 14, 0, 0)
    tags = {"AcquisitionDate": "20260102", "AcquisitionTime": "140000"}
    write_series(tmp_path / "start" / "spect_24h", tags={**tags, "DecayCorrection": "START"}, seed=5)
    write_series(tmp_path / "admin" / "spect_24h", tags={**tags, "DecayCorrection": "ADMIN"}, seed=5)
    start, hours = _dicom_time_point(tmp_path / "start" / "spect_24h", 24.0, injection)
    admin, _ = _dicom_time_point(tmp_path / "admin" / "spect_24h", 24.0, injection)
    assert hours == pytest.approx(24.0)
    ratio = sitk.GetArrayFromImage(admin) / np.maximum(sitk.GetArrayFromImage(start), 1e-9)
    expected = math.exp(-decay_data().decay_constant_per_h * 24.0)
    assert np.allclose(ratio[sitk.GetArrayFromImage(start) > 0], expected, rtol=1e-5)


def test_segment_names_are_escaped_in_report_and_neutralised_in_csv(tmp_path, cli):
    from phantoms import DEFAULT_SPHERES, Sphere

    odd = Sphere("lesion <b>ü</b>", *[getattr(DEFAULT_SPHERES[1], f) for f in ("center_kji", "radius_mm", "c0_bq_ml",
                                                                           "teff_h")])
    formula = Sphere("=kidney+1", *[getattr(DEFAULT_SPHERES[0], f) for f in ("center_kji", "radius_mm", "c0_bq_ml",
                                                                         "teff_h")])
    study = write_study(tmp_path / "study", spheres=(formula, odd))
    result = cli("dosimetry", study, "--out", tmp_path / "out", "--method", "lde")
    assert result.returncode == 0, result.stderr
    report = (tmp_path / "out" / "report.html").read_text(encoding="utf-8")
    assert "<b>ü</b>" not in report and "&lt;b&gt;ü&lt;/b&gt;" in report
    text = (tmp_path / "out" / "doses.csv").read_text(encoding="utf-8")
    assert "\n'=kidney+1," in text  # a spreadsheet shows it, never runs it
    header = (tmp_path / "out" / "dvh.csv").read_text(encoding="utf-8").splitlines()[0]
    assert ",'=kidney+1," in header
