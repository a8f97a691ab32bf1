"""``psmadose dosimetry`` over a folder of studies (issue 15: "batch over a cohort with the same contract"), as a
real process: one OUT/<study>/ per study identical to the single-study run, a failing study reported without
stopping the others (exit 2, one ``error:`` line naming it), the reference table, and ``--into`` a cohort of
cases, all or nothing before any work."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
from phantoms import write_study
from psmadose.case import read_doses
from psmadose.dosimetry.cohort import is_cohort, list_studies


def _cohort(root: Path) -> Path:
    cohort = root / "studies"
    write_study(cohort / "pt_a", activity_gbq=7.4)
    write_study(cohort / "pt_b", activity_gbq=6.0, times_h=(2, 20, 70, 140))
    broken = write_study(cohort / "pt_c")
    (broken / "administration.json").unlink()  # refused by read_study: names the file
    (cohort / "notes").mkdir()  # not a study: ignored
    (cohort / "notes" / "readme.txt").write_text("not a study\n", encoding="utf-8")
    return cohort


def _cases(root: Path, names) -> Path:
    cases = root / "cases"
    for name in names:
        (cases / name).mkdir(parents=True)
        (cases / name / "clinical.json").write_text(json.dumps({"weight_kg": 80}), encoding="utf-8")
    return cases


def test_folder_of_studies_is_the_single_study_runs(cli, tmp_path):
    cohort = _cohort(tmp_path)
    assert is_cohort(cohort) and not is_cohort(cohort / "pt_a")
    assert [p.name for p in list_studies(cohort)] == ["pt_a", "pt_b", "pt_c"]
    out = tmp_path / "out"
    result = cli("dosimetry", cohort, "--out", out, "--workers", "2", "--method", "lde")
    assert result.returncode == 2, result.stderr
    errors = result.stderr.strip().splitlines()
    assert len(errors) == 1 and errors[0].startswith("error: 1 of 3 study(ies) failed (first: pt_c:"), errors
    assert "administration.json" in errors[0] and "dosimetry_summary.csv" in errors[0]
    summary = pd.read_csv(out / "dosimetry_summary.csv")
    assert summary["status"].tolist() == ["ok", "ok", "error"]
    assert not (out / "pt_c").exists() and not list(out.glob(".*partial*"))
    # Each study's folder holds what a run on that study alone writes (the dose map and the doses byte for byte).
    for name in ("pt_a", "pt_b"):
        alone = tmp_path / f"alone_{name}"
        single = cli("dosimetry", cohort / name, "--out", alone, "--method", "lde")
        assert single.returncode == 0, single.stderr
        for file in ("doses.csv", "dose_map_gy.nrrd", "dvh.csv"):
            assert (out / name / file).read_bytes() == (alone / file).read_bytes(), (name, file)
    # The reference table gathers every segment of the successful studies, Gy/GBq = Gy / the study's activity.
    table = pd.read_csv(out / "reference_doses.csv")
    for name, activity in (("pt_a", 7.4), ("pt_b", 6.0)):
        own = pd.read_csv(out / name / "doses.csv").set_index("segment")
        rows = table[table["case_id"] == name].set_index("segment")
        assert sorted(rows.index) == sorted(own.index)
        assert (rows["activity_gbq"] == activity).all()
        # (the CSV cells carry 6 significant digits)
        assert (abs(rows["reference_gy_per_gbq"] / (rows["absorbed_dose_gy"] / activity) - 1) < 2e-5).all()
        assert (rows["reference_gy_per_gbq"] == own.loc[rows.index, "reference_gy_per_gbq"]).all()


def test_into_a_cohort_of_cases(cli, tmp_path):
    cohort = _cohort(tmp_path)
    shutil.rmtree(cohort / "pt_c")
    cases = _cases(tmp_path, ["pt_a", "pt_b", "pt_z"])
    out = tmp_path / "out"
    result = cli("dosimetry", cohort, "--out", out, "--into", cases, "--method", "lde", "--workers", "1")
    assert result.returncode == 0, result.stderr
    assert "reference doses written into 2 case(s)" in result.stdout
    for name in ("pt_a", "pt_b"):
        expected = pd.read_csv(out / name / "doses.csv").set_index("segment")["reference_gy_per_gbq"]
        written = read_doses(cases / name / "doses.csv")
        assert sorted(written) == sorted(expected.index)
        for segment, value in written.items():
            assert abs(value - expected[segment]) <= 1e-6 * expected[segment]
    assert not (cases / "pt_z" / "doses.csv").exists()
    # Again without --overwrite: the cases' doses.csv exist; refused before any work, nothing written.
    again = cli("dosimetry", cohort, "--out", tmp_path / "out2", "--into", cases, "--method", "lde")
    assert again.returncode == 2 and "doses.csv" in again.stderr and "--overwrite" in again.stderr, again.stderr
    assert not (tmp_path / "out2").exists()


def test_into_refuses_a_study_without_its_case_before_any_work(cli, tmp_path):
    cohort = _cohort(tmp_path)
    cases = _cases(tmp_path, ["pt_a"])
    out = tmp_path / "out"
    result = cli("dosimetry", cohort, "--out", out, "--into", cases)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1, result.stderr
    assert "pt_b" in lines[0] and "clinical.json" in lines[0], lines
    assert not out.exists() and not (cases / "pt_a" / "doses.csv").exists()


def test_workers_with_one_study_is_refused(cli, tmp_path):
    study = write_study(tmp_path / "study")
    result = cli("dosimetry", study, "--out", tmp_path / "out", "--workers", "2")
    assert result.returncode == 2 and "folder of study folders" in result.stderr, result.stderr
    assert not (tmp_path / "out").exists()


def test_folder_without_studies_names_the_layout(cli, tmp_path):
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    result = cli("dosimetry", tmp_path / "empty", "--out", tmp_path / "out")
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1 and "spect_" in lines[0], result.stderr
