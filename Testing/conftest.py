"""Shared fixtures: small virtual patients written once per test session by the real simulator."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

# Tests that start real processes (the CLI, a Dask cluster, Chromium, a Slicer-like interpreter) are marked
# 'process': the everyday fast tier leaves them out (README: scripts/test.sh --fast).
PROCESS_FIXTURES = {"cli", "cluster"}


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    for item in items:
        if PROCESS_FIXTURES & set(getattr(item, "fixturenames", ())) or "distributed" in item.path.parts:
            item.add_marker(pytest.mark.process)


@pytest.fixture(scope="session")
def demo_cohort(tmp_path_factory) -> Path:
    """The 'demo' preset (one patient, CT on its own grid) with post-therapy SPECT at 4/24/96 h."""
    from psmadose.simulate.cohort import simulate_cohort

    out = tmp_path_factory.mktemp("demo") / "cohort"
    simulate_cohort(out, "demo", spect_times_h=[4, 24, 96], workers=1)
    return out


@pytest.fixture(scope="session")
def demo_case(demo_cohort) -> Path:
    return demo_cohort / "vp001"


@pytest.fixture(scope="session")
def poc_cohort(tmp_path_factory) -> Path:
    from psmadose.simulate.cohort import simulate_cohort

    out = tmp_path_factory.mktemp("poc") / "cohort"
    simulate_cohort(out, "southampton-poc", workers=2)
    return out


def run_cli(*args: str, cwd: Path | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run the real ``psmadose`` command in a child process."""
    env = dict(os.environ)
    env.pop("PYTHONWARNINGS", None)
    return subprocess.run([sys.executable, "-m", "psmadose.cli", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=timeout)


@pytest.fixture(scope="session")
def cli():
    return run_cli
