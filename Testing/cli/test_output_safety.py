"""Issue 13, part 1: no mistyped --out can destroy data (real CLI processes).

--overwrite replaces only a folder psmadose wrote (a .psmadose-output marker inside); the working directory, the
home folder and the root are never outputs; an output is never, contains or lies inside an input. Every refusal is
exit 2, one error line, and leaves every file as it was (checked by hashing the tree)."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest


def _tree(path: Path) -> dict[str, str]:
    return {str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(path.rglob("*")) if p.is_file()}


def _refused(result, *words):
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for word in words:
        assert word in lines[0], lines[0]


@pytest.fixture()
def workdir(demo_case, tmp_path):
    """A folder holding someone's other work and a copy of a case."""
    (tmp_path / "thesis.docx").write_text("years of work\n")
    shutil.copytree(demo_case, tmp_path / "case")
    return tmp_path


@pytest.mark.parametrize("out", [".", ""])
def test_working_directory_or_empty_out_is_refused_even_with_overwrite(cli, workdir, out):
    before = _tree(workdir)
    result = cli("predict", workdir / "case", "--out", out, "--overwrite", cwd=workdir)
    _refused(result, "--out")
    assert _tree(workdir) == before


@pytest.mark.parametrize("relative", ["case", "case/inner", "."])
def test_output_that_is_inside_or_contains_the_input_is_refused(cli, workdir, relative):
    before = _tree(workdir)
    out = workdir / relative if relative != "." else workdir
    result = cli("predict", workdir / "case", "--out", out, "--overwrite")
    _refused(result, "input" if relative != "." else "")
    assert _tree(workdir) == before


def test_overwrite_replaces_only_a_folder_psmadose_wrote(cli, workdir):
    mine = workdir / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("not a psmadose output\n")
    before = _tree(workdir)
    result = cli("predict", workdir / "case", "--out", mine, "--overwrite")
    _refused(result, "not written by psmadose", "--out")
    assert _tree(workdir) == before
    # A psmadose output is replaced as a whole.
    out = workdir / "prediction"
    assert cli("predict", workdir / "case", "--out", out).returncode == 0
    assert (out / ".psmadose-output").is_file()
    (out / "stale.txt").write_text("from an older run\n")
    assert cli("predict", workdir / "case", "--out", out, "--overwrite").returncode == 0
    assert not (out / "stale.txt").exists() and (out / "doses.csv").is_file()
    assert (workdir / "thesis.docx").read_text() == "years of work\n"


def test_batch_into_its_own_cohort_is_refused(cli, workdir):
    cohort = workdir / "cohort"
    cohort.mkdir()
    shutil.move(str(workdir / "case"), cohort / "case")
    before = _tree(workdir)
    result = cli("batch", cohort, "--out", cohort, "--overwrite")
    _refused(result, "input")
    assert _tree(workdir) == before
