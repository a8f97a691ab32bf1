"""Fixtures of the Dask tests: a scheduler and two workers as processes, small virtual cohorts."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

pytest.importorskip("distributed", reason="Dask is an optional extra: pip install 'psmadose[distributed]'")

from dask_helpers import dask_cluster  # noqa: E402


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A scheduler and two single-threaded workers, shared by the tests of a module (they leave it as found)."""
    with dask_cluster(tmp_path_factory.mktemp("dask")) as running:
        yield running


@pytest.fixture(scope="session")
def small_cohort(tmp_path_factory) -> Path:
    """Three virtual patients (demo preset), generated serially."""
    from psmadose.simulate.cohort import simulate_cohort

    out = tmp_path_factory.mktemp("cohort") / "cohort"
    simulate_cohort(out, "demo", n_patients=3, workers=1)
    return out


@pytest.fixture(scope="session")
def cohort_with_bad_case(small_cohort, tmp_path_factory) -> Path:
    """The three patients and a fourth whose clinical.json has an implausible weight (refused by read_case)."""
    import json

    out = tmp_path_factory.mktemp("bad") / "cases"
    shutil.copytree(small_cohort, out)
    bad = out / "vp003b"
    shutil.copytree(small_cohort / "vp003", bad)
    clinical = json.loads((bad / "clinical.json").read_text(encoding="utf-8"))
    clinical["weight_kg"] = 8200
    (bad / "clinical.json").write_text(json.dumps(clinical), encoding="utf-8")
    return out


