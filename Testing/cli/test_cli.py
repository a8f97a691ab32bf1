"""End-to-end tests of the ``psmadose`` command: every test runs the real command in a child process.

Where the expectations come from:
- /work/shared/DESIGN.md "Command line": exit codes (0 ok; 2 bad input/usage with ONE line ``error: ...`` on
  stderr and no traceback), outputs written to a temporary name and renamed when complete, inputs never
  modified, an existing output replaced only as a whole (and only with --overwrite).
- DESIGN.md "Data contracts": the prediction output directory (doses.csv/json, dose_segmentation.seg.nrrd,
  report.html + figures), the doses.csv columns, provenance in doses.json, the clinical.json keys and units.
- psmadose.simulate.cohort.PRESETS: 'southampton-poc' = 9 patients with 57 tumours in total.
- psmadose.cli.cmd_batch: exit code 2 when any case failed.

Expensive outputs (demo, predictions, simulated cohort) are produced once per module and shared.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import slicerio
from psmadose.dose_colors import dose_to_rgb
from psmadose.modelfile import BUNDLED_MODEL_SHA256, CARD_FILE, MODEL_FILE, bundled_model_dir, write_card
from psmadose.predict import CSV_COLUMNS, REFERENCE_ORGAN_COLOR
from psmadose.segmentation import SegmentToWrite, read_segmentation, write_segmentation

PLANNED_ACTIVITY_GBQ = 7.4  # planned_activity_gbq of every virtual patient's clinical.json (simulator)

# DESIGN.md "Prediction output directory": the doses.csv columns named there ("interval bounds" = the
# 80 % and 90 % interval columns); predicted_gy_cumulative is the one extra column (documented in doses.json).
DESIGN_COLUMNS = {"segment", "structure_type", "volume_ml", "suv_mean", "suv_max", "predicted_gy_per_gbq",
                  "predicted_gy", "interval_80_low_gy_per_gbq", "interval_80_high_gy_per_gbq",
                  "interval_90_low_gy_per_gbq", "interval_90_high_gy_per_gbq", "in_domain", "warnings"}


# ---------------------------------------------------------------------------------------------- helpers

def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def tree_hashes(directory: Path) -> dict[str, str]:
    """sha256 of every file below ``directory`` (relative path -> hash)."""
    return {str(p.relative_to(directory)): sha256(p) for p in sorted(Path(directory).rglob("*")) if p.is_file()}


def read_csv(path: Path) -> tuple[list[str], list[dict]]:
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        return list(reader.fieldnames or []), list(reader)


def segment_names(seg_path: Path) -> list[str]:
    return [s["name"] for s in slicerio.read_segmentation(str(seg_path), skip_voxels=True)["segments"]]


def copy_case(source: Path, destination: Path) -> Path:
    shutil.copytree(source, destination)
    return destination


def assert_bad_input(result, keyword: str, parent: Path, before: list[str] | None = None) -> str:
    """DESIGN.md: exit 2, exactly one stderr line 'error: ...' naming the problem, no traceback, nothing written.

    ``parent`` is the folder that holds --out; it must be exactly as before the run (no output, no hidden
    '.<name>.tmp-*' / '.<name>.old-*' directories left behind).
    """
    assert result.returncode == 2, (result.returncode, result.stderr[-2000:])
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, f"expected ONE stderr line, got {len(lines)}:\n{result.stderr}"
    assert lines[0].startswith("error: "), lines[0]
    assert keyword.lower() in lines[0].lower(), f"{keyword!r} not in {lines[0]!r}"
    assert sorted(p.name for p in parent.iterdir()) == sorted(before or []), list(parent.iterdir())
    return lines[0]


# --------------------------------------------------------------------------------------- shared outputs

@pytest.fixture(scope="module")
def bundled_card() -> dict:
    path = bundled_model_dir() / CARD_FILE
    if not path.is_file():
        pytest.fail(f"bundled model card missing: {path}")
    return json.loads(path.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory, cli):
    out = tmp_path_factory.mktemp("demo_cli") / "D"
    result = cli("demo", "--out", out)
    return out, result


@pytest.fixture(scope="module")
def demo_out(demo_run) -> Path:
    out, result = demo_run
    assert result.returncode == 0, result.stderr[-3000:]
    return out


@pytest.fixture(scope="module")
def pristine_case(demo_out, tmp_path_factory) -> Path:
    """A copy of the demo's virtual patient that tests only read (never modified)."""
    return copy_case(demo_out / "virtual_patient", tmp_path_factory.mktemp("pristine") / "vp_demo")


@pytest.fixture(scope="module")
def predict_runs(demo_out, tmp_path_factory, cli):
    """`predict` on a copy of the demo case, with the planned activity and with --activity-gbq 6.0."""
    base = tmp_path_factory.mktemp("predict")
    case = copy_case(demo_out / "virtual_patient", base / "case")
    before = tree_hashes(case)
    default = cli("predict", case, "--out", base / "O")
    six = cli("predict", case, "--out", base / "O6", "--activity-gbq", "6.0")
    return {"case": case, "before": before, "after": tree_hashes(case), "default": default, "six": six,
            "out": base / "O", "out6": base / "O6"}


# ---------------------------------------------------------------------------------------------- 1. demo

def test_demo_exits_0_and_prints_the_dose_table(demo_run, demo_out):
    _, result = demo_run
    _, rows = read_csv(demo_out / "prediction" / "doses.csv")
    assert rows
    lines = result.stdout.splitlines()
    for row in rows:  # a table line per predicted segment (cli.format_table starts lines with the name)
        assert any(line.startswith(row["segment"] + " ") for line in lines), row["segment"]
    assert any(line.startswith("kidney_left") for line in lines)
    assert "Traceback" not in result.stderr


def test_demo_writes_case_and_prediction(demo_out):
    case = demo_out / "virtual_patient"
    for name in ("pet.nrrd", "segmentation.seg.nrrd", "clinical.json", "doses.csv"):
        assert (case / name).is_file(), name
    pred = demo_out / "prediction"
    for name in ("doses.csv", "doses.json", "dose_segmentation.seg.nrrd", "report.html"):
        assert (pred / name).is_file() and (pred / name).stat().st_size > 0, name
    assert list(pred.glob("*.png"))
    # every figure the report links to exists beside it
    html = (pred / "report.html").read_text(encoding="utf-8")
    sources = re.findall(r'<img[^>]+src="([^"]+)"', html)
    assert sources
    for src in sources:
        if not src.startswith("data:"):
            assert (pred / src).is_file(), src
    # nothing else left beside D (the demo's temporary directories are gone)
    assert [p.name for p in demo_out.parent.iterdir()] == ["D"]


def test_demo_doses_csv_columns_and_activity(demo_out):
    header, rows = read_csv(demo_out / "prediction" / "doses.csv")
    assert header == list(CSV_COLUMNS)
    assert DESIGN_COLUMNS <= set(header)
    # Beyond DESIGN: cumulative dose, and (issue 11) the tissue uptake, its method and the two baselines.
    assert set(header) - DESIGN_COLUMNS == {"predicted_gy_cumulative", "suv_tissue", "uptake_method",
                                            "physics_gy_per_gbq", "population_mean_gy_per_gbq"}
    clinical = json.loads((demo_out / "virtual_patient" / "clinical.json").read_text())
    activity = clinical["planned_activity_gbq"]
    assert activity == PLANNED_ACTIVITY_GBQ
    for row in rows:
        per_gbq = float(row["predicted_gy_per_gbq"])
        assert per_gbq > 0
        assert math.isclose(float(row["predicted_gy"]), per_gbq * activity, rel_tol=1e-5), row  # %.6g rounding
        assert math.isclose(float(row["predicted_gy_cumulative"]),
                            per_gbq * activity * clinical["planned_cycles"], rel_tol=1e-5), row
        assert float(row["interval_80_low_gy_per_gbq"]) <= per_gbq <= float(row["interval_80_high_gy_per_gbq"])
        assert float(row["interval_90_low_gy_per_gbq"]) <= float(row["interval_80_low_gy_per_gbq"])
        assert float(row["interval_90_high_gy_per_gbq"]) >= float(row["interval_80_high_gy_per_gbq"])
        assert row["in_domain"] in ("true", "false")
    # one row per segment whose type the model predicts; liver/spleen are reference organs only
    assert {r["structure_type"] for r in rows} <= {"tumour", "kidney", "parotid", "submandibular", "lacrimal"}


def test_demo_doses_json_provenance(demo_out, bundled_card):
    document = json.loads((demo_out / "prediction" / "doses.json").read_text(encoding="utf-8"))
    provenance = document["provenance"]
    assert provenance["model_id"] == bundled_card["model_id"]
    assert provenance["model_sha256"] == bundled_card["sha256"] == BUNDLED_MODEL_SHA256
    assert sha256(bundled_model_dir() / MODEL_FILE) == provenance["model_sha256"]
    assert isinstance(provenance["library_versions"], dict) and provenance["library_versions"]
    case = demo_out / "virtual_patient"
    hashes = provenance["input_sha256"]
    assert hashes["pet"] == sha256(case / "pet.nrrd")
    assert hashes["segmentation"] == sha256(case / "segmentation.seg.nrrd")
    assert hashes["clinical"] == sha256(case / "clinical.json")
    assert document["activity_gbq"] == PLANNED_ACTIVITY_GBQ
    _, rows = read_csv(demo_out / "prediction" / "doses.csv")
    assert [s["segment"] for s in document["segments"]] == [r["segment"] for r in rows]


def test_demo_dose_segmentation_names_and_colours(demo_out):
    source = slicerio.read_segmentation(str(demo_out / "virtual_patient" / "segmentation.seg.nrrd"))
    dosed = slicerio.read_segmentation(str(demo_out / "prediction" / "dose_segmentation.seg.nrrd"))
    assert [s["name"] for s in dosed["segments"]] == [s["name"] for s in source["segments"]]
    document = json.loads((demo_out / "prediction" / "doses.json").read_text(encoding="utf-8"))
    doses = {s["segment"]: s["predicted_gy_per_gbq"] for s in document["segments"]}
    assert doses
    for segment in dosed["segments"]:
        colour = np.array(segment["color"], dtype=float)
        expected = dose_to_rgb(doses[segment["name"]]) if segment["name"] in doses else REFERENCE_ORGAN_COLOR
        assert np.allclose(colour, expected, atol=2e-3), (segment["name"], colour, expected)
        # the same voxels as the input segment (the demo segmentation is on the PET grid)
        by_name = next(s for s in source["segments"] if s["name"] == segment["name"])
        assert (np.count_nonzero(slicerio.segment_mask(dosed, segment))
                == np.count_nonzero(slicerio.segment_mask(source, by_name))), segment["name"]


def test_demo_prediction_is_close_to_the_virtual_truth(demo_out):
    # Loose on purpose: one virtual patient. Truth = the simulator's doses.csv in the case directory.
    _, truth_rows = read_csv(demo_out / "virtual_patient" / "doses.csv")
    truth = {r["segment"]: float(r["reference_gy_per_gbq"]) for r in truth_rows}
    _, rows = read_csv(demo_out / "prediction" / "doses.csv")
    predicted = {r["segment"]: float(r["predicted_gy_per_gbq"]) for r in rows}
    for kidney in ("kidney_left", "kidney_right"):
        ratio = predicted[kidney] / truth[kidney]
        assert 0.5 <= ratio <= 2.0, (kidney, predicted[kidney], truth[kidney])
    common = sorted(set(truth) & set(predicted))
    assert len(common) >= 10
    errors = [abs(predicted[s] - truth[s]) / truth[s] for s in common]
    assert float(np.mean(errors)) < 0.60, dict(zip(common, np.round(errors, 2)))


# ------------------------------------------------------------------------------------------- 2. predict

def test_predict_matches_demo_and_leaves_inputs_untouched(predict_runs, demo_out):
    result = predict_runs["default"]
    assert result.returncode == 0, result.stderr[-3000:]
    assert "kidney_left" in result.stdout
    assert predict_runs["after"] == predict_runs["before"]  # DESIGN.md: inputs are never modified
    assert predict_runs["six"].returncode == 0, predict_runs["six"].stderr[-3000:]
    assert predict_runs["after"] == predict_runs["before"]
    header, rows = read_csv(predict_runs["out"] / "doses.csv")
    demo_header, demo_rows = read_csv(demo_out / "prediction" / "doses.csv")
    assert header == demo_header
    assert rows == demo_rows  # deterministic: same case, same bundled model -> same numbers
    for name in ("doses.json", "dose_segmentation.seg.nrrd", "report.html"):
        assert (predict_runs["out"] / name).is_file()


def test_predict_activity_option_scales_gy(predict_runs):
    assert predict_runs["six"].returncode == 0, predict_runs["six"].stderr[-3000:]
    _, base = read_csv(predict_runs["out"] / "doses.csv")
    _, six = read_csv(predict_runs["out6"] / "doses.csv")
    assert [r["segment"] for r in six] == [r["segment"] for r in base]
    for a, b in zip(base, six):
        assert a["predicted_gy_per_gbq"] == b["predicted_gy_per_gbq"]
        assert math.isclose(float(b["predicted_gy"]), float(a["predicted_gy"]) * 6.0 / PLANNED_ACTIVITY_GBQ,
                            rel_tol=2e-5), (a, b)
    settings = json.loads((predict_runs["out6"] / "doses.json").read_text())["provenance"]["settings"]
    assert settings["activity_gbq"] == 6.0 and settings["activity_source"] == "--activity-gbq"


def test_out_of_domain_reason_reaches_csv_json_and_report(demo_out, tmp_path, cli):
    # The bundled model saw 53-134 kg (its card's training domain); 170 kg is plausible (clinical schema allows
    # 30-250) but outside: every segment must say so, in words, in each output.
    case = copy_case(demo_out / "virtual_patient", tmp_path / "heavy")
    clinical = json.loads((case / "clinical.json").read_text())
    clinical["weight_kg"] = 170.0
    (case / "clinical.json").write_text(json.dumps(clinical))
    result = cli("predict", case, "--out", tmp_path / "O")
    assert result.returncode == 0, result.stderr[-3000:]
    _, rows = read_csv(tmp_path / "O" / "doses.csv")
    assert rows and all(r["in_domain"] == "false" for r in rows)
    assert all("weight_kg = 170 outside the training range 53.3-134" in r["warnings"] for r in rows)
    document = json.loads((tmp_path / "O" / "doses.json").read_text())
    assert all(not r["in_domain"] and "weight_kg = 170 outside" in r["warnings"] for r in document["segments"])
    assert all(r["interval_stratum"] for r in document["segments"])
    report = (tmp_path / "O" / "report.html").read_text()
    assert "weight_kg = 170 outside the training range" in report


# ---------------------------------------------------------------------------------------- 3. bad inputs

def _rewrite_pet(case: Path, change) -> None:
    image = sitk.ReadImage(str(case / "pet.nrrd"))
    array = sitk.GetArrayFromImage(image)
    change(array)
    out = sitk.GetImageFromArray(array)
    out.CopyInformation(image)
    sitk.WriteImage(out, str(case / "pet.nrrd"), useCompression=True)


def _rewrite_segments(case: Path, change) -> None:
    """Read the case's segmentation, let ``change(raw_segments)`` return SegmentToWrite's, write it back."""
    path = case / "segmentation.seg.nrrd"
    geometry, raw = read_segmentation(path)
    write_segmentation(path, geometry, change(raw))


def _keep(raw) -> SegmentToWrite:
    return SegmentToWrite(raw.name, raw.mask, raw.color or (1.0, 0.0, 0.0),
                          raw.tags.get("PSMADosePredict.StructureType"))


def _missing_pet(case):
    (case / "pet.nrrd").unlink()


def _nan_pet(case):
    def change(a):
        a[a.shape[0] // 2, a.shape[1] // 2, a.shape[2] // 2] = np.nan
    _rewrite_pet(case, change)


def _negative_pet(case):
    def change(a):
        a[a.shape[0] // 2, a.shape[1] // 2, a.shape[2] // 2] = -5.0
    _rewrite_pet(case, change)


def _empty_segment(case):
    def change(raws):
        out = [_keep(r) for r in raws]
        out[0] = SegmentToWrite(out[0].name, np.zeros_like(out[0].mask), out[0].color, out[0].structure_type)
        return out
    _rewrite_segments(case, change)


def _segment_outside_pet(case):
    """Segmentation on a grid extended by 20 voxels before the PET along i; one new lesion lies only there."""
    path = case / "segmentation.seg.nrrd"
    geometry, raws = read_segmentation(path)
    pad = 20
    direction = np.array(geometry.GetDirection()).reshape(3, 3)
    origin = np.array(geometry.GetOrigin()) - pad * geometry.GetSpacing()[0] * direction[:, 0]
    k, j, i = raws[0].mask.shape
    bigger = sitk.Image([i + pad, j, k], sitk.sitkUInt8)
    bigger.SetSpacing(geometry.GetSpacing())
    bigger.SetDirection(geometry.GetDirection())
    bigger.SetOrigin([float(o) for o in origin])
    segments = []
    for r in raws:
        mask = np.zeros((k, j, i + pad), dtype=bool)
        mask[:, :, pad:] = r.mask
        segments.append(SegmentToWrite(r.name, mask, _keep(r).color, _keep(r).structure_type))
    outside = np.zeros((k, j, i + pad), dtype=bool)
    outside[k // 2 - 2:k // 2 + 2, j // 2 - 2:j // 2 + 2, 3:12] = True  # seg voxels 3..11 = PET i -17..-9
    segments.append(SegmentToWrite("lesion_far", outside, (1.0, 0.0, 0.0), "tumour"))
    write_segmentation(path, bigger, segments)


def _no_recognised_segment(case):
    names = ["bladder", "heart", "brain", "bowel", "stomach", "aorta", "lung", "bone", "rectum", "muscle"]

    def change(raws):  # no structure-type tag, so the (unrecognised) name decides
        return [SegmentToWrite(f"{names[n % len(names)]}_{n}", r.mask, (0.5, 0.5, 0.5), None)
                for n, r in enumerate(raws)]
    _rewrite_segments(case, change)


def _clinical(key, value):
    def change(case):
        path = case / "clinical.json"
        data = json.loads(path.read_text())
        data[key] = value
        path.write_text(json.dumps(data))
    return change


CASE_PROBLEMS = {
    # id: (how to break a copy of the demo case, keyword the one-line message must contain)
    "missing_pet": (_missing_pet, "no PET"),
    "nan_pet": (_nan_pet, "NaN"),
    "negative_pet": (_negative_pet, "negative"),
    "empty_segment": (_empty_segment, "empty"),
    "segment_outside_pet": (_segment_outside_pet, "outside the PET"),
    "no_recognised_segment": (_no_recognised_segment, "no segment"),
    "weight_zero": (_clinical("weight_kg", 0), "weight_kg"),
    "egfr_in_ml_s": (_clinical("egfr_ml_min_1_73m2", 1.2), "mL/s"),  # clinical.py unit hint
}


@pytest.mark.parametrize("problem", list(CASE_PROBLEMS))
def test_bad_case_gives_one_error_line_and_writes_nothing(problem, demo_out, tmp_path, cli):
    breaker, keyword = CASE_PROBLEMS[problem]
    case = copy_case(demo_out / "virtual_patient", tmp_path / "case")
    breaker(case)
    before = tree_hashes(case)
    parent = tmp_path / "outparent"
    parent.mkdir()
    result = cli("predict", case, "--out", parent / "O")
    line = assert_bad_input(result, keyword, parent)
    if problem == "empty_segment":
        assert "kidney_left" in line  # names the segment (the first one of the demo case)
    if problem == "segment_outside_pet":
        assert "lesion_far" in line
    assert tree_hashes(case) == before


@pytest.mark.parametrize("activity, keyword", [("0", "positive"), ("7400", "GBq"), ("nan", "positive")])
def test_bad_activity(activity, keyword, pristine_case, tmp_path, cli):
    result = cli("predict", pristine_case, "--out", tmp_path / "O", "--activity-gbq", activity)
    assert_bad_input(result, keyword, tmp_path)


def _predict_with_model(case, tmp_path, cli, model, *options):
    """predict with --model into a fresh parent folder; (result, parent) for assert_bad_input."""
    parent = tmp_path / "outparent"
    parent.mkdir()
    return cli("predict", case, "--out", parent / "O", "--model", model, *options), parent


def test_tampered_model(pristine_case, tmp_path, cli):
    model = tmp_path / "model"
    shutil.copytree(bundled_model_dir(), model)
    data = bytearray((model / MODEL_FILE).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (model / MODEL_FILE).write_bytes(bytes(data))
    result, parent = _predict_with_model(pristine_case, tmp_path, cli, model, "--trust-model")
    assert_bad_input(result, "sha256", parent)


def test_foreign_file_as_model(pristine_case, tmp_path, cli):
    model = tmp_path / "model"
    model.mkdir()
    payload = b"this is not a model\n"
    (model / MODEL_FILE).write_bytes(payload)
    digest = hashlib.sha256(payload).hexdigest()
    card = json.loads((bundled_model_dir() / CARD_FILE).read_text(encoding="utf-8"))
    card.update(model_id=f"foreign-{digest[:12]}", sha256=digest)
    write_card(model, card)  # a card in psmadose's format: the archive checks behind it must hold
    result, parent = _predict_with_model(pristine_case, tmp_path, cli, model, "--trust-model")
    assert_bad_input(result, "skops", parent)


def test_other_model_needs_trust(pristine_case, tmp_path, cli):
    model = tmp_path / "model"
    shutil.copytree(bundled_model_dir(), model)  # a perfectly valid copy, but not the bundled path
    result, parent = _predict_with_model(pristine_case, tmp_path, cli, model)
    assert_bad_input(result, "--trust-model", parent)


def test_existing_output_is_refused_and_untouched(pristine_case, tmp_path, cli):
    out = tmp_path / "O"
    out.mkdir()
    (out / "keep.txt").write_text("precious\n")
    result = cli("predict", pristine_case, "--out", out)
    assert_bad_input(result, "--overwrite", tmp_path, before=["O"])
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    assert (out / "keep.txt").read_text() == "precious\n"


@pytest.mark.parametrize("args, keyword", [
    (("--preset", "nope"), "nope"),
    (("--patients", "0"), "--patients"),
    (("--patients", "-3"), "--patients"),
    (("--preset", "southampton-poc", "--patients", "4"), "exactly"),  # fixed-size preset
])
def test_bad_simulate_options(args, keyword, tmp_path, cli):
    result = cli("simulate", "--out", tmp_path / "X", *args)
    assert_bad_input(result, keyword, tmp_path)


@pytest.mark.parametrize("args, keyword", [(("predict",), "required"), ((), "required"),
                                           (("predict", "CASE"), "--out"), (("frobnicate",), "invalid choice")])
def test_usage_errors_give_one_error_line(args, keyword, tmp_path, cli):
    result = cli(*args, cwd=tmp_path)  # argparse errors: cli._Parser.error
    assert_bad_input(result, keyword, tmp_path)


# -------------------------------------------------------------------------------------------- 4. simulate

@pytest.fixture(scope="module")
def poc_cli(tmp_path_factory, cli):
    out = tmp_path_factory.mktemp("poc_cli") / "X"
    result = cli("simulate", "--preset", "southampton-poc", "--out", out)
    return out, result


def test_simulate_southampton_poc(poc_cli):
    out, result = poc_cli
    assert result.returncode == 0, result.stderr[-3000:]
    cases = sorted(p for p in out.iterdir() if p.is_dir())
    assert len(cases) == 9  # PRESETS['southampton-poc']: 9 patients
    lesions = 0
    for case in cases:
        assert (case / "clinical.json").is_file() and (case / "pet.nrrd").is_file()
        lesions += sum(name.startswith("lesion") for name in segment_names(case / "segmentation.seg.nrrd"))
    assert lesions == 57  # ... and 57 tumours in total (SNMMI 2026 proof of concept)
    assert [p.name for p in out.parent.iterdir()] == ["X"]  # no temporary directories left


def test_simulate_overwrite_replaces_as_a_whole(poc_cli, tmp_path, cli):
    out = tmp_path / "X"
    shutil.copytree(poc_cli[0], out)
    (out / "marker.txt").write_text("old output\n")
    refused = cli("simulate", "--preset", "demo", "--out", out)
    assert_bad_input(refused, "--overwrite", tmp_path, before=["X"])
    assert (out / "marker.txt").is_file() and (out / "vp009").is_dir()
    result = cli("simulate", "--preset", "demo", "--out", out, "--overwrite")
    assert result.returncode == 0, result.stderr[-3000:]
    # replaced, not merged: the marker and the poc patients 2..9 are gone; only the demo's one patient (and the
    # .psmadose-output marker that lets a later --overwrite replace it)
    assert sorted(p.name for p in out.iterdir()) == [".psmadose-output", "cohort.json", "vp001"]
    assert json.loads((out / "cohort.json").read_text())["n_patients"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["X"]


# -------------------------------------------------------------------------------------------- 5. features

def test_features_one_row_per_segment(pristine_case, tmp_path, cli):
    out = tmp_path / "f.csv"
    result = cli("features", pristine_case, "--out", out)
    assert result.returncode == 0, result.stderr[-3000:]
    header, rows = read_csv(out)
    for column in ("segment", "volume_ml", "suv_peak", "suv_mean_to_kidney", "egfr_ml_min_1_73m2"):
        assert column in header, column
    assert [r["segment"] for r in rows] == segment_names(pristine_case / "segmentation.seg.nrrd")
    egfr = json.loads((pristine_case / "clinical.json").read_text())["egfr_ml_min_1_73m2"]
    assert all(math.isclose(float(r["egfr_ml_min_1_73m2"]), egfr) for r in rows)
    assert all(float(r["volume_ml"]) > 0 for r in rows)
    assert [p.name for p in tmp_path.iterdir()] == ["f.csv"]


# ----------------------------------------------------------------------------------------------- 6. batch

def test_batch_reports_failures_per_case(poc_cohort, tmp_path, cli):
    cohort = tmp_path / "cohort"
    cohort.mkdir()
    for case_id in ("vp001", "vp002"):
        copy_case(poc_cohort / case_id, cohort / case_id)
    broken = copy_case(poc_cohort / "vp003", cohort / "broken")
    _nan_pet(broken)
    (cohort / "notes.txt").write_text("other files may sit beside the cases (DESIGN.md)\n")
    before = tree_hashes(cohort)
    out = tmp_path / "B"
    result = cli("batch", cohort, "--out", out)
    assert result.returncode == 2, result.stderr[-3000:]  # cli.cmd_batch: 2 when any case failed
    assert "Traceback" not in result.stderr
    _, summary = read_csv(out / "batch_summary.csv")
    status = {r["case_id"]: r for r in summary}
    assert set(status) == {"vp001", "vp002", "broken"}
    for case_id in ("vp001", "vp002"):
        assert status[case_id]["status"] == "ok", status[case_id]
        header, rows = read_csv(out / case_id / "doses.csv")
        assert header == list(CSV_COLUMNS) and len(rows) == int(status[case_id]["n_segments"]) > 0
    assert status["broken"]["status"] == "error"
    assert "NaN" in status["broken"]["message"]
    assert not (out / "broken").exists()  # no half-written output for the failed case
    assert tree_hashes(cohort) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["B", "cohort"]


# ------------------------------------------------------------------------------------------ 7. calibration

def test_calibration_prints_the_table(cli):
    result = cli("calibration", "--patients", "100")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "kidney dose mean" in result.stdout
    assert "tumour dose mean" in result.stdout


def test_calibration_refuses_too_few_patients(tmp_path, cli):
    result = cli("calibration", "--patients", "10", cwd=tmp_path)
    assert_bad_input(result, "--patients", tmp_path)
