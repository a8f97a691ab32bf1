"""Fixtures of the red-team suite: a fork server for the CLI and a sandbox per case."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

HERE = Path(__file__).parent


class ForkedCli:
    """Sends command lines to cli_forkserver.py; each runs in its own forked process (see that module)."""

    def __init__(self):
        env = dict(os.environ)
        env.pop("PYTHONWARNINGS", None)
        env.setdefault("OMP_NUM_THREADS", "1")
        self.process = subprocess.Popen([sys.executable, str(HERE / "cli_forkserver.py")], stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, text=True, env=env)
        ready = json.loads(self.process.stdout.readline())
        assert ready == {"ready": True}

    def __call__(self, *argv, cwd: Path | None = None, env: dict | None = None, timeout: float = 300):
        request = {"argv": [str(a) for a in argv], "cwd": str(cwd) if cwd else None, "env": env or {},
                   "timeout": timeout}
        self.process.stdin.write(json.dumps(request) + "\n")
        self.process.stdin.flush()
        return SimpleNamespace(**json.loads(self.process.stdout.readline()))

    def close(self):
        self.process.stdin.close()
        self.process.wait(timeout=30)


@pytest.fixture(scope="session")
def forked_cli():
    server = ForkedCli()
    yield server
    server.close()


@pytest.fixture()
def sandbox(demo_case, tmp_path):
    """A user's folder: a case, a one-case cohort, someone's unrelated work and a home folder."""
    shutil.copytree(demo_case, tmp_path / "case")
    shutil.copytree(demo_case, tmp_path / "cohort" / "vp001")
    (tmp_path / "notes.txt").write_text("years of work\n", encoding="utf-8")
    (tmp_path / "home").mkdir()
    return tmp_path
