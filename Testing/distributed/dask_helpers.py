"""Helpers of the Dask tests: a real cluster on localhost (``dask scheduler`` and ``dask worker`` processes).

The processes die with the test session (``PR_SET_PDEATHSIG``) and are terminated, then killed, on teardown.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path


def _die_with_parent() -> None:
    import ctypes

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def dask_env() -> dict:
    env = dict(os.environ)
    env["OMP_NUM_THREADS"] = "1"
    env.pop("PYTHONWARNINGS", None)
    package = str(Path(__import__("psmadose").__file__).parents[1])  # workers import this psmadose
    env["PYTHONPATH"] = os.pathsep.join([package] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    return env


def interruptible() -> None:
    """preexec_fn: SIGINT at its default in the child, as in a terminal (a test run started in the background
    passes it on as ignored, and psmadose then rightly ignores Ctrl-C)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@dataclass
class DaskProcesses:
    """A scheduler and its workers, each a process of its own; ``address`` is the scheduler's."""

    logdir: Path
    address: str = ""
    processes: list = field(default_factory=list)
    workers: list = field(default_factory=list)

    def _start(self, name: str, argv: list[str], user: str | None = None) -> subprocess.Popen:
        log = open(self.logdir / f"{name}.log", "w")
        prefix = ["setpriv", f"--reuid={user}", "--regid=nogroup", "--clear-groups"] if user else []
        env = dask_env()
        if user:
            env["HOME"] = "/tmp"
        process = subprocess.Popen(prefix + [sys.executable, "-m", "dask", *argv], stdout=log,
                                   stderr=subprocess.STDOUT, env=env, preexec_fn=_die_with_parent,
                                   cwd="/tmp" if user else self.logdir)
        self.processes.append(process)
        return process

    def start_scheduler(self, timeout: float = 60) -> str:
        process = self._start("scheduler", ["scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard"])
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            match = re.search(r"Scheduler at:\s+(tcp://\S+)", (self.logdir / "scheduler.log").read_text())
            if match:
                self.address = match.group(1)
                return self.address
            if process.poll() is not None:
                break
            time.sleep(0.1)
        raise RuntimeError(f"dask scheduler did not start: {(self.logdir / 'scheduler.log').read_text()[-2000:]}")

    def start_worker(self, name: str, user: str | None = None) -> subprocess.Popen:
        # No nanny: the worker is one process, so killing it is a lost worker (not a restarted one).
        process = self._start(name, ["worker", self.address, "--nthreads", "1", "--no-nanny", "--no-dashboard",
                                     "--name", name, "--host", "127.0.0.1"], user=user)
        self.workers.append(process)
        return process

    def worker_log(self, name: str) -> str:
        return (self.logdir / f"{name}.log").read_text(errors="replace")

    def wait_for_workers(self, n: int, timeout: float = 90) -> None:
        from distributed import Client

        with Client(self.address, timeout=30) as client:
            client.wait_for_workers(n, timeout=timeout)

    def stop(self) -> None:
        for process in reversed(self.processes):
            if process.poll() is None:
                process.terminate()
        for process in self.processes:
            try:
                process.wait(timeout=3)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)


@contextlib.contextmanager
def dask_cluster(logdir: Path, n_workers: int = 2):
    logdir.mkdir(parents=True, exist_ok=True)
    cluster = DaskProcesses(logdir)
    try:
        cluster.start_scheduler()
        for n in range(n_workers):
            cluster.start_worker(f"w{n + 1}")
        if n_workers:
            cluster.wait_for_workers(n_workers)
        yield cluster
    finally:
        cluster.stop()


NRRD_DATE = re.compile(rb"^# on \d{4}-\d\d-\d\d \d\d:\d\d:\d\d\(GMT\)\.$", re.MULTILINE)
Q = rb"(?:\"|&quot;|&#34;)"  # a double quote, raw or HTML-escaped
CREATED = re.compile(Q + rb"created_utc" + Q + rb": " + Q + rb"[0-9T:+-]+" + Q)


def tree_bytes(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` by relative path. Two clock readings differ between two serial runs too and are
    blanked: the NRRD writer's '# on <date>' comment and the prediction's provenance ``created_utc``. Every other
    byte counts."""
    files = {}
    for path in sorted(Path(root).rglob("*")):
        if path.is_file():
            data = path.read_bytes()
            if path.name.endswith(".nrrd"):
                data = NRRD_DATE.sub(b"# on <date>", data)
            if path.name in ("doses.json", "report.html"):
                data = CREATED.sub(b"created_utc: <date>", data)
            files[str(path.relative_to(root))] = data
    return files


def run_cli(*args, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    full_env = dask_env()
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "psmadose.cli", *map(str, args)], capture_output=True, text=True,
                          env=full_env, timeout=timeout)
