"""Red team (issue 13): 200+ bad inputs and faults, each run as its own process, each held to the contract.

For every case: exit status 2, exactly one stderr line starting 'error: ' that names the problem (a keyword
per case), no traceback, and the user's folder exactly as before (every file and folder hashed: no output, no
leftover '.tmp-' folder, no input modified). Signals, a full disk and concurrent runs use fresh interpreters
(real ``python -m psmadose.cli`` processes); the bad-input table uses the fork server (cli_forkserver.py).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from psmadose.modelfile import bundled_model_dir
from psmadose.segmentation import SegmentToWrite, read_segmentation, write_segmentation

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parent.parent / "dicom"))
from dicom_writer import write_series  # noqa: E402
from redteam_helpers import tree  # noqa: E402

pytestmark = pytest.mark.redteam


# ------------------------------------------------------------------------------------------- case mutations

def _pet(case: Path) -> sitk.Image:
    return sitk.ReadImage(str(case / "pet.nrrd"))


def _write_pet_array(case: Path, transform) -> None:
    pet = _pet(case)
    array = transform(sitk.GetArrayFromImage(pet).astype(np.float32))
    image = sitk.GetImageFromArray(array)
    image.CopyInformation(pet)
    sitk.WriteImage(image, str(case / "pet.nrrd"), useCompression=True)


def _set_voxel(value):
    def transform(array):
        array[array.shape[0] // 2, array.shape[1] // 2, array.shape[2] // 2] = value
        return array
    return transform


def _respace(file: str, spacing):
    def mutate(case: Path):
        image = sitk.ReadImage(str(case / file))
        image.SetSpacing(spacing)
        sitk.WriteImage(image, str(case / file), useCompression=True)
    return mutate


def _shift(file: str, offset_mm: float):
    def mutate(case: Path):
        image = sitk.ReadImage(str(case / file))
        image.SetOrigin(tuple(o + offset_mm for o in image.GetOrigin()))
        sitk.WriteImage(image, str(case / file), useCompression=True)
    return mutate


def _pet_2d(case: Path):
    sitk.WriteImage(sitk.Image(20, 20, sitk.sitkFloat32) + 1.0, str(case / "pet.nrrd"))


def _pet_vector(case: Path):
    pet = _pet(case)
    sitk.WriteImage(sitk.Compose(pet, pet), str(case / "pet.nrrd"))


def _pet_huge_header(case: Path):
    """A valid NRRD header that declares 4000^3 voxels over a few bytes of data."""
    (case / "pet.nrrd").write_bytes(b"NRRD0004\ntype: float\ndimension: 3\nsizes: 4000 4000 4000\n"
                                    b"space: left-posterior-superior\nspace directions: (4,0,0) (0,4,0) (0,0,4)\n"
                                    b"space origin: (0,0,0)\nendian: little\nencoding: raw\n\n" + b"\0" * 64)


def _truncate(file: str):
    def mutate(case: Path):
        data = (case / file).read_bytes()
        (case / file).write_bytes(data[: len(data) // 2])
    return mutate


def _replace_bytes(file: str, data: bytes):
    def mutate(case: Path):
        (case / file).write_bytes(data)
    return mutate


def _remove(*files: str):
    def mutate(case: Path):
        for file in files:
            (case / file).unlink()
    return mutate


def _segments(case: Path):
    return read_segmentation(case / "segmentation.seg.nrrd")[1]


def _rewrite_segments(edit):
    def mutate(case: Path):
        raws = _segments(case)
        segments = [SegmentToWrite(r.name, r.mask, r.color or (1.0, 0.0, 0.0)) for r in raws]
        write_segmentation(case / "segmentation.seg.nrrd", _pet(case), edit(segments))
    return mutate


def _write_first_name(case: Path, raw: bytes) -> None:
    """Put raw bytes as the first segment's name into the .seg.nrrd header, as another program might."""
    path = case / "segmentation.seg.nrrd"
    data = path.read_bytes()
    end = data.index(b"\n\n")
    header = data[:end].split(b"\n")
    for n, line in enumerate(header):
        if line.startswith(b"Segment0_Name:="):
            header[n] = b"Segment0_Name:=" + raw
    path.write_bytes(b"\n".join(header) + data[end:])


def _rename_first(name: str):
    """A name written as UTF-8 by another program (our writer refuses such names)."""
    return lambda case: _write_first_name(case, name.encode("utf-8"))


def _empty_first(segments):
    segments[0].mask = np.zeros_like(segments[0].mask)
    return segments


def _duplicate_first(segments):
    segments[1].name = segments[0].name
    return segments


def _unrecognised(segments):
    for n, segment in enumerate(segments):
        segment.name = f"structure {n}"
    return segments


def _labels(names: dict | None = None, raw_json: bytes | None = None, float_labels: bool = False):
    """Replace the .seg.nrrd by labels.nii.gz + labels.json."""
    def mutate(case: Path):
        raws = _segments(case)
        labels = np.zeros(raws[0].mask.shape, dtype=np.float32 if float_labels else np.uint8)
        for value, raw in enumerate(raws, start=1):
            labels[raw.mask] = value
        if float_labels:
            labels[labels > 0] += 0.5
        image = sitk.GetImageFromArray(labels)
        image.CopyInformation(_pet(case))
        sitk.WriteImage(image, str(case / "labels.nii.gz"))
        (case / "segmentation.seg.nrrd").unlink()
        listed = names if names is not None else {str(v): r.name for v, r in enumerate(raws, start=1)}
        (case / "labels.json").write_bytes(raw_json if raw_json is not None else json.dumps(listed).encode())
    return mutate


def _labels_missing_one(case: Path):
    _labels()(case)
    listed = json.loads((case / "labels.json").read_text())
    listed.pop("1")
    (case / "labels.json").write_text(json.dumps(listed))


def _labels_without_json(case: Path):
    _labels()(case)
    (case / "labels.json").unlink()


def _clinical(**changes):
    def mutate(case: Path):
        data = json.loads((case / "clinical.json").read_text())
        for key, value in changes.items():
            if value is None:
                data.pop(key)
            else:
                data[key] = value
        (case / "clinical.json").write_text(json.dumps(data))
    return mutate


def _clinical_literal(case: Path, key: str, literal: str):
    """A value JSON itself does not allow but Python's and many other parsers accept (NaN, Infinity)."""
    data = json.loads((case / "clinical.json").read_text())
    data[key] = 12345.678
    (case / "clinical.json").write_text(json.dumps(data).replace("12345.678", literal))


def _clinical_text(text: str):
    return _replace_bytes("clinical.json", text.encode("utf-8"))


def _utf16(file: str):
    def mutate(case: Path):
        (case / file).write_bytes((case / file).read_text(encoding="utf-8").encode("utf-16"))
    return mutate


def _doses(text: str, encoding: str = "utf-8"):
    return _replace_bytes("doses.csv", text.encode(encoding))


def _ct_array(transform):
    def mutate(case: Path):
        ct = sitk.ReadImage(str(case / "ct.nrrd"))
        array = transform(sitk.GetArrayFromImage(ct).astype(np.float32))
        image = sitk.GetImageFromArray(array)
        image.CopyInformation(ct)
        sitk.WriteImage(image, str(case / "ct.nrrd"), useCompression=True)
    return mutate


DEEP = "[" * 200_000 + "]" * 200_000
FIRST_DOSE_ROWS = "segment,reference_gy_per_gbq\nkidney_left,0.4\n"

# (id, mutation of the case folder, keyword of the error line). Every one must be refused by predict.
CASE_FAULTS = [
    ("pet_nan", lambda c: _write_pet_array(c, _set_voxel(np.nan)), "NaN"),
    ("pet_inf", lambda c: _write_pet_array(c, _set_voxel(np.inf)), "infinite"),
    ("pet_negative", lambda c: _write_pet_array(c, _set_voxel(-5.0)), "negative"),
    ("pet_in_bq_per_ml", lambda c: _write_pet_array(c, lambda a: a * 5000.0), "Bq/mL"),
    ("pet_holds_more_than_injected", lambda c: _write_pet_array(c, lambda a: a * 4.0), "mass balance"),
    ("pet_all_zero", lambda c: _write_pet_array(c, lambda a: a * 0.0), "too low"),
    ("pet_2d", _pet_2d, "3D"),
    ("pet_two_components", _pet_vector, "component"),
    ("pet_spacing_in_cm", _respace("pet.nrrd", (0.4, 0.4, 0.4)), "spacing"),
    ("pet_spacing_in_m", _respace("pet.nrrd", (0.004, 0.004, 0.004)), "spacing"),
    ("pet_spacing_absurd", _respace("pet.nrrd", (400.0, 400.0, 400.0)), "spacing"),
    ("pet_header_declares_64e9_voxels", _pet_huge_header, "voxels"),
    ("pet_truncated", _truncate("pet.nrrd"), "cannot read"),
    ("pet_empty_file", _replace_bytes("pet.nrrd", b""), "cannot read"),
    ("pet_text_file", _replace_bytes("pet.nrrd", b"this is not an image\n"), "cannot read"),
    ("pet_missing", _remove("pet.nrrd"), "no PET"),
    ("ct_nan", _ct_array(_set_voxel(np.nan)), "NaN"),
    ("ct_raw_stored_values", _ct_array(lambda a: a + 3024.0), "HU"),
    ("ct_elsewhere", _shift("ct.nrrd", 5000.0), "overlap"),
    ("ct_spacing_in_cm", _respace("ct.nrrd", (0.1, 0.1, 0.1)), "spacing"),
    ("ct_truncated", _truncate("ct.nrrd"), "cannot read"),
    ("segmentation_missing", _remove("segmentation.seg.nrrd"), "no segmentation"),
    ("segmentation_truncated", _truncate("segmentation.seg.nrrd"), "segmentation"),
    ("segmentation_text", _replace_bytes("segmentation.seg.nrrd", b"NRRD0004\nnonsense\n\n"), "segmentation"),
    ("segmentation_no_segments", _rewrite_segments(lambda s: []), "no segments"),
    ("segment_empty", _rewrite_segments(_empty_first), "empty"),
    ("segment_names_duplicate", _rewrite_segments(_duplicate_first), "duplicate"),
    ("segment_names_unrecognised", _rewrite_segments(_unrecognised), "recognised"),
    ("segmentation_elsewhere", lambda c: _segmentation_elsewhere(c), "overlap"),
    ("segment_name_pipe", _rename_first("kidney|left"), "'|'"),
    ("segment_name_tab", _rename_first("kidney\tleft"), "rename"),
    ("segment_name_bell", _rename_first("kidney\x07"), "rename"),
    ("segment_name_bidi_override", _rename_first("kidney\u202eleft"), "rename"),
    ("segment_name_zero_width", _rename_first("kid\u200bney"), "rename"),
    ("segment_name_line_separator", _rename_first("kidney\u2028left"), "rename"),
    ("segment_name_too_long", _rename_first("kidney_" + "x" * 300), "too long"),
    ("segment_name_latin1_bytes", lambda c: _rename_latin1(c), "UTF-8"),
    ("labels_without_json", _labels_without_json, "labels.json"),
    ("labels_json_invalid", _labels(raw_json=b"{1: kidney}"), "JSON"),
    ("labels_json_nested_200000", _labels(raw_json=DEEP.encode()), "nested"),
    ("labels_json_utf16", _labels(raw_json='{"1": "kidney_left"}'.encode("utf-16")), "UTF-16"),
    ("labels_json_latin1", _labels(raw_json='{"1": "Niere_ß"}'.encode("latin-1")), "UTF-8"),
    ("labels_json_list", _labels(raw_json=b'["kidney_left"]'), "JSON object"),
    ("labels_json_huge", _labels(raw_json=b'{"1": "' + b"k" * 2_000_000 + b'"}'), "too large"),
    ("labels_json_name_newline", _labels(names={"1": "kidney\nleft"}), "rename"),
    ("labels_json_missing_label", _labels_missing_one, "no name"),
    ("labels_non_integer", _labels(float_labels=True), "non-integer"),
    ("clinical_missing", _remove("clinical.json"), "clinical.json"),
    ("clinical_invalid_json", _clinical_text("{'weight_kg': 70}"), "JSON"),
    ("clinical_empty_file", _clinical_text(""), "JSON"),
    ("clinical_nested_200000", _clinical_text(DEEP), "nested"),
    ("clinical_utf16", _utf16("clinical.json"), "UTF-16"),
    ("clinical_latin1", _replace_bytes("clinical.json", '{"weight_kg": 70, "x": "ß"}'.encode("latin-1")), "UTF-8"),
    ("clinical_list", _clinical_text("[1, 2, 3]"), "JSON object"),
    ("clinical_huge", _clinical_text('{"note": "' + "x" * 2_000_000 + '"}'), "too large"),
    ("clinical_missing_weight", _clinical(weight_kg=None), "weight_kg"),
    ("clinical_weight_7_5", _clinical(weight_kg=7.5), "weight_kg"),
    ("clinical_weight_in_g", _clinical(weight_kg=75000), "weight_kg"),
    ("clinical_weight_text", _clinical(weight_kg="75 kg"), "weight_kg"),
    ("clinical_weight_bool", _clinical(weight_kg=True), "weight_kg"),
    ("clinical_weight_nan", lambda c: _clinical_literal(c, "weight_kg", "NaN"), "weight_kg"),
    ("clinical_weight_infinity", lambda c: _clinical_literal(c, "weight_kg", "Infinity"), "weight_kg"),
    ("clinical_psa_minus_infinity", lambda c: _clinical_literal(c, "psa_ng_ml", "-Infinity"), "psa_ng_ml"),
    ("clinical_age_300", _clinical(age_years=300), "age_years"),
    ("clinical_age_negative", _clinical(age_years=-1), "age_years"),
    ("clinical_height_in_m", _clinical(height_cm=1.81), "height_cm"),
    ("clinical_psa_negative", _clinical(psa_ng_ml=-3), "psa_ng_ml"),
    ("clinical_egfr_zero", _clinical(egfr_ml_min_1_73m2=0), "egfr"),
    ("clinical_hemoglobin_g_l", _clinical(hemoglobin_g_dl=121), "hemoglobin"),
    ("clinical_activity_mbq", _clinical(planned_activity_gbq=7400), "planned_activity_gbq"),
    ("clinical_cycles_zero", _clinical(planned_cycles=0), "planned_cycles"),
    ("clinical_tracer_unknown", _clinical(pet_tracer="FDG"), "pet_tracer"),
    ("clinical_uptake_negative", _clinical(pet_uptake_time_min=-10), "pet_uptake_time_min"),
    ("doses_utf16", _utf16("doses.csv"), "UTF-16"),
    ("doses_latin1", _doses("segment,reference_gy_per_gbq\nNiere_ß,0.4\n", "latin-1"), "UTF-8"),
    ("doses_header_only", _doses("segment,reference_gy_per_gbq\n"), "header only"),
    ("doses_empty_file", _doses(""), "expected columns"),
    ("doses_wrong_columns", _doses("name,dose\nkidney_left,0.4\n"), "'name'"),
    ("doses_duplicate_conflicting", _doses(FIRST_DOSE_ROWS + "kidney_left,0.9\n"), "twice"),
    ("doses_unmatched_name", _doses("segment,reference_gy_per_gbq\nkidney_links,0.4\n"), "match no segment"),
    ("doses_non_numeric", _doses("segment,reference_gy_per_gbq\nkidney_left,0,4\n"), "kidney_left"),
    ("doses_text_value", _doses("segment,reference_gy_per_gbq\nkidney_left,high\n"), "non-numeric"),
    ("doses_negative", _doses("segment,reference_gy_per_gbq\nkidney_left,-0.4\n"), "not plausible"),
    ("doses_zero", _doses("segment,reference_gy_per_gbq\nkidney_left,0\n"), "not plausible"),
    ("doses_infinite", _doses("segment,reference_gy_per_gbq\nkidney_left,inf\n"), "not plausible"),
    ("doses_nan", _doses("segment,reference_gy_per_gbq\nkidney_left,nan\n"), "not plausible"),
    ("doses_mgy", _doses("segment,reference_gy_per_gbq\nkidney_left,4000\n"), "not plausible"),
    ("doses_empty_name", _doses("segment,reference_gy_per_gbq\n,0.4\n"), "no segment name"),
]


def _segmentation_elsewhere(case: Path):
    raws = _segments(case)
    reference = _pet(case)
    reference.SetOrigin(tuple(o + 5000.0 for o in reference.GetOrigin()))
    segments = [SegmentToWrite(r.name, r.mask, (1.0, 0.0, 0.0)) for r in raws]
    write_segmentation(case / "segmentation.seg.nrrd", reference, segments)


def _rename_latin1(case: Path):
    _write_first_name(case, "kidney_ß".encode("latin-1"))


def assert_refused(result, keyword: str, before: dict, root: Path) -> None:
    """The contract: exit 2, one 'error:' line naming the problem, nothing written, nothing modified."""
    assert result.returncode == 2, (result.returncode, result.stderr[-1500:])
    assert "Traceback" not in result.stderr, result.stderr[-1500:]
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr[-1500:]
    assert keyword.lower() in lines[0].lower(), f"{keyword!r} not in {lines[0]!r}"
    assert "internal error" not in lines[0]
    assert tree(root) == before, "files changed, appeared or disappeared"


@pytest.mark.parametrize("fault", CASE_FAULTS, ids=[c[0] for c in CASE_FAULTS])
def test_predict_refuses_bad_case(forked_cli, sandbox, fault):
    _, mutate, keyword = fault
    mutate(sandbox / "case")
    before = tree(sandbox)
    result = forked_cli("predict", sandbox / "case", "--out", sandbox / "result", cwd=sandbox)
    assert_refused(result, keyword, before, sandbox)


EVALUATE_FAULTS = [c for c in CASE_FAULTS if c[0].startswith(("doses_", "pet_nan", "segment_name", "clinical_w"))]


@pytest.mark.parametrize("fault", EVALUATE_FAULTS, ids=[c[0] for c in EVALUATE_FAULTS])
def test_evaluate_refuses_bad_case(forked_cli, sandbox, fault):
    """evaluate reads every case before any work: one bad case is one error line naming it, nothing written."""
    _, mutate, keyword = fault
    mutate(sandbox / "cohort" / "vp001")
    before = tree(sandbox)
    result = forked_cli("evaluate", sandbox / "cohort", "--out", sandbox / "evaluation", "--workers", "1",
                        cwd=sandbox)
    assert_refused(result, keyword, before, sandbox)


FEATURE_FAULTS = [c for c in CASE_FAULTS if c[0].startswith(("pet_", "segment", "labels_json_n", "clinical_n"))]


@pytest.mark.parametrize("fault", FEATURE_FAULTS, ids=[c[0] for c in FEATURE_FAULTS])
def test_features_refuses_bad_case(forked_cli, sandbox, fault):
    _, mutate, keyword = fault
    mutate(sandbox / "case")
    before = tree(sandbox)
    result = forked_cli("features", sandbox / "case", "--out", sandbox / "features.csv", "--no-radiomics",
                        cwd=sandbox)
    assert_refused(result, keyword, before, sandbox)


# --------------------------------------------------------------------------------------------- output paths

def _commands(sandbox: Path) -> dict[str, list]:
    """Each command with its inputs; '{out}' is replaced by the output under test."""
    return {
        "predict": ["predict", sandbox / "case", "--out", "{out}"],
        "batch": ["batch", sandbox / "cohort", "--out", "{out}", "--workers", "1"],
        "evaluate": ["evaluate", sandbox / "cohort", "--out", "{out}", "--workers", "1"],
        "train": ["train", sandbox / "cohort", "--out", "{out}", "--workers", "1"],
        "simulate": ["simulate", "--out", "{out}", "--preset", "demo", "--workers", "1"],
        "demo": ["demo", "--out", "{out}"],
        "robustness": ["robustness", "--out", "{out}", "--patients", "2", "--workers", "1"],
    }


def _unmarked(sandbox):
    folder = sandbox / "someone_elses"
    folder.mkdir()
    (folder / "data.txt").write_text("keep me\n")
    return folder


def _existing_file(sandbox):
    (sandbox / "a_file").write_text("keep me\n")
    return sandbox / "a_file"


OUTPUTS = {  # name -> (function of the sandbox giving --out, extra flags, keyword)
    "empty": (lambda s: "", ["--overwrite"], "--out"),
    "dot": (lambda s: ".", ["--overwrite"], "--out"),
    "working_directory": (lambda s: s, ["--overwrite"], "working directory"),
    "home": (lambda s: s / "home", ["--overwrite"], "home"),
    "root": (lambda s: "/", ["--overwrite"], "root"),
    "unmarked_folder_overwrite": (_unmarked, ["--overwrite"], "not written by psmadose"),
    "unmarked_folder": (_unmarked, [], "not empty"),
    "existing_file": (_existing_file, [], "not a directory"),
    "missing_parent": (lambda s: s / "no" / "such" / "out", [], "does not exist"),
    "component_300_chars": (lambda s: s / ("x" * 300), [], "too long"),
    "path_max": (lambda s: s / "/".join(["y" * 200] * 25), [], "too long"),
}
INPUT_OUTPUTS = {
    "the_input": (lambda s, i: i, ["--overwrite"], "the input"),
    "inside_input": (lambda s, i: i / "out", ["--overwrite"], "the input"),
    "around_input": (lambda s, i: i.parent, ["--overwrite"], "input"),
}
DIR_CASES = [(command, name) for command in _commands(Path("/")) for name in OUTPUTS]
INPUT_CASES = [(command, name) for command in ("predict", "batch", "evaluate", "train") for name in INPUT_OUTPUTS]


def _run_output_case(forked_cli, sandbox, command, out, flags, keyword, cwd=None):
    argv = [str(out) if a == "{out}" else a for a in _commands(sandbox)[command]] + flags
    before = tree(sandbox)
    result = forked_cli(*argv, cwd=cwd or sandbox, env={"HOME": str(sandbox / "home")})
    assert_refused(result, keyword, before, sandbox)


@pytest.mark.parametrize("command,name", DIR_CASES, ids=[f"{c}-{n}" for c, n in DIR_CASES])
def test_output_folder_refused(forked_cli, sandbox, command, name):
    make, flags, keyword = OUTPUTS[name]
    _run_output_case(forked_cli, sandbox, command, make(sandbox), flags, keyword)


@pytest.mark.parametrize("command,name", INPUT_CASES, ids=[f"{c}-{n}" for c, n in INPUT_CASES])
def test_output_never_touches_an_input(forked_cli, sandbox, command, name):
    make, flags, keyword = INPUT_OUTPUTS[name]
    source = sandbox / ("case" if command == "predict" else "cohort")
    _run_output_case(forked_cli, sandbox, command, make(sandbox, source), flags, keyword, cwd=sandbox / "home")


FILE_OUTPUTS = {
    "empty": (lambda s: "", "--out"),
    "dot": (lambda s: ".", "--out"),
    "existing_file": (_existing_file, "exists"),
    "a_folder": (lambda s: s / "home", "directory"),
    "inside_input": (lambda s: s / "case" / "out.csv", "input"),
    "missing_parent": (lambda s: s / "no" / "such.csv", "does not exist"),
    "component_300_chars": (lambda s: s / ("x" * 300 + ".csv"), "too long"),
}


@pytest.mark.parametrize("name", FILE_OUTPUTS)
def test_features_output_file_refused(forked_cli, sandbox, name):
    make, keyword = FILE_OUTPUTS[name]
    out = make(sandbox)
    before = tree(sandbox)
    result = forked_cli("features", sandbox / "case", "--out", out, "--no-radiomics", cwd=sandbox)
    assert_refused(result, keyword, before, sandbox)


@pytest.mark.parametrize("name", FILE_OUTPUTS)
def test_suv_output_file_refused(forked_cli, sandbox, name, tmp_path_factory):
    series = write_series(sandbox / "case" / "pet_dicom").folder
    make, keyword = FILE_OUTPUTS[name]
    out = make(sandbox)
    if name == "inside_input":
        out = series / "suv.nrrd"
    elif name not in ("empty", "dot", "a_folder"):
        out = Path(str(out).replace(".csv", ".nrrd")) if name != "existing_file" else out
    before = tree(sandbox)
    result = forked_cli("suv", series, "--out", out, cwd=sandbox)
    assert_refused(result, keyword, before, sandbox)


# ------------------------------------------------------------------------------------------ options, models

BAD_OPTIONS = [
    ("activity_zero", ["predict", "{case}", "--out", "{out}", "--activity-gbq", "0"], "activity"),
    ("activity_negative", ["predict", "{case}", "--out", "{out}", "--activity-gbq", "-7.4"], "activity"),
    ("activity_nan", ["predict", "{case}", "--out", "{out}", "--activity-gbq", "nan"], "activity"),
    ("activity_inf", ["predict", "{case}", "--out", "{out}", "--activity-gbq", "inf"], "activity"),
    ("activity_mbq", ["predict", "{case}", "--out", "{out}", "--activity-gbq", "7400"], "activity"),
    ("activity_text", ["predict", "{case}", "--out", "{out}", "--activity-gbq", "lots"], "lots"),
    ("case_missing", ["predict", "{sandbox}/nope", "--out", "{out}"], "not found"),
    ("case_is_a_file", ["predict", "{sandbox}/notes.txt", "--out", "{out}"], "not found"),
    ("no_out", ["predict", "{case}"], "--out"),
    ("unknown_command", ["predikt", "{case}"], "predikt"),
    ("unknown_option", ["predict", "{case}", "--out", "{out}", "--fast"], "--fast"),
    ("workers_zero", ["batch", "{sandbox}/cohort", "--out", "{out}", "--workers", "0"], "workers"),
    ("workers_negative", ["evaluate", "{sandbox}/cohort", "--out", "{out}", "--workers", "-2"], "workers"),
    ("workers_text", ["train", "{sandbox}/cohort", "--out", "{out}", "--workers", "two"], "two"),
    ("simulate_preset", ["simulate", "--out", "{out}", "--preset", "hospital"], "hospital"),
    ("simulate_patients_zero", ["simulate", "--out", "{out}", "--patients", "0"], "patients"),
    ("simulate_patients_negative", ["simulate", "--out", "{out}", "--patients", "-3"], "patients"),
    ("simulate_spect_text", ["simulate", "--out", "{out}", "--spect-times", "a,b"], "spect"),
    ("simulate_spect_negative", ["simulate", "--out", "{out}", "--spect-times", "-4,24"], "spect"),
    ("calibration_too_few", ["calibration", "--patients", "10"], "patients"),
    ("cohort_missing", ["evaluate", "{sandbox}/nope", "--out", "{out}"], "not found"),
    ("cohort_empty", ["train", "{sandbox}/home", "--out", "{out}"], "case"),
    ("batch_cohort_missing", ["batch", "{sandbox}/nope", "--out", "{out}"], "not found"),
    ("suv_not_a_folder", ["suv", "{sandbox}/notes.txt", "--out", "{sandbox}/suv.nrrd"], "notes.txt"),
    ("suv_empty_folder", ["suv", "{sandbox}/home", "--out", "{sandbox}/suv.nrrd"], "DICOM"),
    ("suv_not_dicom", ["suv", "{case}", "--out", "{sandbox}/suv.nrrd"], "DICOM"),
    ("suv_bad_method", ["suv", "{case}", "--out", "{sandbox}/suv.nrrd", "--method", "sul"], "method"),
    ("features_case_missing", ["features", "{sandbox}/nope", "--out", "{sandbox}/f.csv"], "not found"),
    ("robustness_patients_zero", ["robustness", "--out", "{out}", "--patients", "0"], "patients"),
]


@pytest.mark.parametrize("case", BAD_OPTIONS, ids=[c[0] for c in BAD_OPTIONS])
def test_bad_options_refused(forked_cli, sandbox, case):
    _, argv, keyword = case
    argv = [a.format(case=sandbox / "case", out=sandbox / "result", sandbox=sandbox) for a in argv]
    before = tree(sandbox)
    assert_refused(forked_cli(*argv, cwd=sandbox), keyword, before, sandbox)


def _model_copy(sandbox: Path) -> Path:
    model = sandbox / "model"
    shutil.copytree(bundled_model_dir(), model)
    return model


def _edit_card(**changes):
    def mutate(model: Path):
        card = json.loads((model / "model_card.json").read_text())
        card.update(changes)
        (model / "model_card.json").write_text(json.dumps(card, indent=2))
    return mutate


def _rezip(extra: dict | None = None, drop: str | None = None):
    """Rewrite model.skops with a member added or removed, and re-sign the card as a forger would (sha256)."""
    def mutate(model: Path):
        import hashlib

        from psmadose.modelfile import write_card

        source = zipfile.ZipFile(model / "model.skops")
        with zipfile.ZipFile(model / "new.skops", "w", zipfile.ZIP_DEFLATED) as target:
            for name in source.namelist():
                if name != drop:
                    target.writestr(name, source.read(name))
            for name, data in (extra or {}).items():
                target.writestr(name, data)
        source.close()
        os.replace(model / "new.skops", model / "model.skops")
        card = json.loads((model / "model_card.json").read_text())
        digest = hashlib.sha256((model / "model.skops").read_bytes()).hexdigest()
        card.update(sha256=digest, model_id=f"forged-{digest[:12]}")
        write_card(model, card)
    return mutate


def _npy_header(shape) -> bytes:
    header = "{'descr': '<f8', 'fortran_order': False, 'shape': %s, }" % (shape,)
    header = header + " " * (63 - len(header) % 64) + "\n"
    return b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header.encode("latin-1")


def _huge_used_array(model: Path):
    source = zipfile.ZipFile(model / "model.skops")
    victim = sorted(n for n in source.namelist() if n.endswith(".npy"))[0]
    source.close()
    _rezip(extra={}, drop=victim)(model)
    _rezip(extra={victim: _npy_header((1_000_000_000,)) + b"\0" * 64})(model)


MODEL_FAULTS = [
    ("missing_folder", None, [], "not a psmadose model directory"),
    ("empty_folder", lambda m: [p.unlink() for p in m.iterdir()], ["--trust-model"], "not a psmadose model"),
    ("not_trusted", lambda m: None, [], "--trust-model"),
    ("card_missing", _remove("model_card.json"), ["--trust-model"], "model_card.json"),
    ("skops_missing", _remove("model.skops"), ["--trust-model"], "model.skops"),
    ("skops_random_bytes", _replace_bytes("model.skops", os.urandom(4096)), ["--trust-model"], "sha256"),
    ("skops_truncated", _truncate("model.skops"), ["--trust-model"], "sha256"),
    ("card_invalid_json", _replace_bytes("model_card.json", b"{nope"), ["--trust-model"], "JSON"),
    ("card_nested_200000", _replace_bytes("model_card.json", DEEP.encode()), ["--trust-model"], "nested"),
    ("card_utf16", _utf16("model_card.json"), ["--trust-model"], "UTF-16"),
    ("card_not_object", _replace_bytes("model_card.json", b"[]"), ["--trust-model"], "model card"),
    ("card_forged_intended_use", _edit_card(intended_use="Approved for clinical dosimetry"), ["--trust-model"],
     "edited"),
    ("card_forged_model_id", _edit_card(model_id="fda-cleared-v9"), ["--trust-model"], "edited"),
    ("card_forged_metrics", _edit_card(metrics={}), ["--trust-model"], "edited"),
    ("skops_unused_array_4gb", _rezip(extra={"99999.npy": _npy_header((500_000_000,)) + b"\0" * 64}),
     ["--trust-model"], "does not use"),
    ("skops_declares_8gb", _huge_used_array, ["--trust-model"], "declares"),
    ("skops_without_schema", _rezip(drop="schema.json"), ["--trust-model"], "skops"),
]


@pytest.mark.parametrize("fault", MODEL_FAULTS, ids=[f[0] for f in MODEL_FAULTS])
def test_bad_model_refused(forked_cli, sandbox, fault):
    name, mutate, flags, keyword = fault
    model = sandbox / "model"
    if mutate is not None:
        model = _model_copy(sandbox)
        mutate(model)
    before = tree(sandbox)
    result = forked_cli("predict", sandbox / "case", "--out", sandbox / "result", "--model", model, *flags,
                        cwd=sandbox)
    assert_refused(result, keyword, before, sandbox)


def test_table_has_200_cases():
    """The issue's target is a suite of 200+ bad inputs and faults; count what this module runs."""
    total = (len(CASE_FAULTS) + len(EVALUATE_FAULTS) + len(FEATURE_FAULTS) + len(DIR_CASES) + len(INPUT_CASES)
             + 2 * len(FILE_OUTPUTS) + len(BAD_OPTIONS) + len(MODEL_FAULTS))
    assert total >= 200, total


def test_forked_runs_match_fresh_interpreters(forked_cli, cli, sandbox):
    """The fork server is the real CLI: a sample of cases gives the same status and error line either way."""
    _doses("segment,reference_gy_per_gbq\n")(sandbox / "case")
    for argv in (["predict", sandbox / "case", "--out", sandbox / "r"],
                 ["predict", sandbox / "case", "--out", "."],
                 ["simulate", "--out", sandbox / "s", "--preset", "hospital"]):
        forked, fresh = forked_cli(*argv, cwd=sandbox), cli(*argv, cwd=sandbox)
        assert (forked.returncode, forked.stderr) == (fresh.returncode, fresh.stderr)


def test_unicode_names_survive_every_output(forked_cli, sandbox):
    """Names as Slicer writes them (UTF-8) come back unchanged from doses.csv, doses.json, the dose .seg.nrrd
    and the report; a name a spreadsheet would run as a formula is neutralised in the CSV only."""
    formula = '=HYPERLINK("http://x","click")'
    names = {"kidney_left": "kidney_links_ß", "lesion_01": "lesion_ü_01 (Läsion)", "lesion_02": formula}

    def rename(segments):
        for segment in segments:
            if segment.name == "lesion_02":
                segment.structure_type = "tumour"  # Slicer's type tag: the name alone says nothing
            segment.name = names.get(segment.name, segment.name)
        return segments

    _rewrite_segments(rename)(sandbox / "case")
    from psmadose.case import read_doses, write_doses

    doses = read_doses(sandbox / "case" / "doses.csv")
    write_doses(sandbox / "case" / "doses.csv", {names.get(k, k): v for k, v in doses.items()})
    result = forked_cli("predict", sandbox / "case", "--out", sandbox / "result", cwd=sandbox)
    assert result.returncode == 0, result.stderr
    out = sandbox / "result"
    import csv

    with open(out / "doses.csv", newline="", encoding="utf-8") as handle:
        csv_names = [row["segment"] for row in csv.DictReader(handle)]
    json_names = [row["segment"] for row in json.loads((out / "doses.json").read_text(encoding="utf-8"))["segments"]]
    seg_names = [s.name for s in read_segmentation(out / "dose_segmentation.seg.nrrd")[1]]
    report = (out / "report.html").read_text(encoding="utf-8")
    for name in ("kidney_links_ß", "lesion_ü_01 (Läsion)"):
        assert name in csv_names and name in json_names and name in seg_names
        assert name.replace("(", "").split()[0] in report
    assert formula in json_names and formula in seg_names
    assert "'" + formula in csv_names and formula not in csv_names  # shown as text by a spreadsheet
    # the .seg.nrrd header holds the UTF-8 bytes, as Slicer writes them
    assert ":=kidney_links_ß\n".encode() in (out / "dose_segmentation.seg.nrrd").read_bytes()


def test_pet_in_kbq_per_ml_is_flagged_not_silent(forked_cli, sandbox):
    """A PET in kBq/mL (x1.9 here; below what mass balance can refuse) is predicted, but said loudly: one
    warning line on the terminal and every organ flagged out of domain in doses.json (issue 11's scale check)."""
    _write_pet_array(sandbox / "case", lambda a: a * 1.9)
    result = forked_cli("predict", sandbox / "case", "--out", sandbox / "result", cwd=sandbox)
    assert result.returncode == 0, result.stderr
    assert any(line.startswith("warning:") and "SUVbw" in line for line in result.stderr.splitlines()), result.stderr
    rows = json.loads((sandbox / "result" / "doses.json").read_text(encoding="utf-8"))["segments"]
    organs = [r for r in rows if r["structure_type"] in ("kidney", "parotid", "submandibular")]
    assert organs and not any(r["in_domain"] for r in organs)
