"""Cohort commands on a real Dask cluster (a scheduler and two workers as processes on localhost, and a
LocalCluster): the same outputs byte for byte as a serial run, one case's failure reported, errors in one line."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from dask_helpers import run_cli, tree_bytes
from psmadose.batch import run_batch
from psmadose.errors import InputError
from psmadose.executors import normalise_scheduler
from psmadose.simulate.cohort import simulate_cohort


@pytest.fixture(scope="module")
def serial_batch(cohort_with_bad_case, tmp_path_factory):
    out = tmp_path_factory.mktemp("serial") / "batch"
    summary = run_batch(cohort_with_bad_case, out, workers=1)
    assert summary["succeeded"] == 3 and summary["failed"] == 1
    return out


def test_batch_on_cluster_is_the_serial_batch_byte_for_byte(cluster, cohort_with_bad_case, serial_batch, tmp_path):
    out = tmp_path / "batch"
    result = run_cli("batch", cohort_with_bad_case, "--out", out, "--scheduler", cluster.address)
    # The bad case fails alone: the others are predicted, the command ends with one error line naming it.
    assert result.returncode == 2, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "vp003b" in errors[0] and "1 of 4" in errors[0], result.stderr
    assert "3 case(s) predicted, 1 failed" in result.stdout
    serial, distributed = tree_bytes(serial_batch), tree_bytes(out)
    assert sorted(distributed) == sorted(serial)
    differing = [name for name in serial if serial[name] != distributed[name]]
    assert not differing, differing
    summary = (out / "batch_summary.csv").read_text(encoding="utf-8").splitlines()
    assert [line.split(",")[0] for line in summary[1:]] == ["vp001", "vp002", "vp003", "vp003b"]
    assert not list(out.glob(".*partial*"))


@pytest.mark.slow
def test_simulate_on_cluster_is_the_serial_simulation(cluster, small_cohort, tmp_path):
    out = tmp_path / "cohort"
    result = run_cli("simulate", "--out", out, "--patients", "3", "--scheduler", cluster.address)
    assert result.returncode == 0, result.stderr
    assert tree_bytes(out) == tree_bytes(small_cohort)


def test_features_of_a_cohort_on_cluster_match_local_processes(cluster, small_cohort, tmp_path):
    local = run_cli("features", small_cohort, "--out", tmp_path / "local.csv", "--no-radiomics", "--workers", "1")
    assert local.returncode == 0, local.stderr
    remote = run_cli("features", small_cohort, "--out", tmp_path / "dask.csv", "--no-radiomics", "--scheduler",
                     cluster.address)
    assert remote.returncode == 0, remote.stderr
    data = (tmp_path / "dask.csv").read_bytes()
    assert data == (tmp_path / "local.csv").read_bytes()
    case_ids = [line.split(b",")[0] for line in data.splitlines()[1:]]
    assert case_ids == sorted(case_ids) and len(set(case_ids)) == 3  # one CSV, case order
    # The cohort CSV is the single-case tables one after the other.
    from psmadose.case import read_case
    from psmadose.features import extract_features
    from psmadose.outputs import write_csv_table

    write_csv_table(extract_features(read_case(small_cohort / "vp002")), tmp_path / "vp002.csv")
    rows = (tmp_path / "vp002.csv").read_bytes().splitlines()
    assert rows[0] == data.splitlines()[0]
    assert all(row in data.splitlines() for row in rows[1:])


def test_dosimetry_of_studies_on_cluster_matches_local_processes(cluster, tmp_path):
    """Post-therapy studies (the analytic sphere phantoms of Testing/dosimetry): doses, dose maps, DVHs and the
    summaries from the cluster are the local run's, byte for byte."""
    sys.path.insert(0, str(Path(__file__).parents[1] / "dosimetry"))
    from phantoms import write_study

    studies = tmp_path / "studies"
    for index, name in enumerate(("pt_a", "pt_b", "pt_c")):
        write_study(studies / name, activity_gbq=6.0 + index)
    local = run_cli("dosimetry", studies, "--out", tmp_path / "local", "--workers", "1", "--method", "lde")
    assert local.returncode == 0, local.stderr
    remote = run_cli("dosimetry", studies, "--out", tmp_path / "dask", "--method", "lde", "--scheduler",
                     cluster.address)
    assert remote.returncode == 0, remote.stderr
    assert "3 study(ies) done, 0 failed" in remote.stdout
    serial, distributed = tree_bytes(tmp_path / "local"), tree_bytes(tmp_path / "dask")
    compared = [n for n in serial if n.endswith((".csv", ".nrrd"))]
    assert len(compared) == 3 * 3 + 2 and sorted(serial) == sorted(distributed)
    assert [n for n in compared if serial[n] != distributed[n]] == []


@pytest.mark.slow
def test_evaluate_on_cluster_matches_local(cluster, small_cohort, tmp_path):
    local = run_cli("evaluate", small_cohort, "--out", tmp_path / "local", "--workers", "1")
    assert local.returncode == 0, local.stderr
    remote = run_cli("evaluate", small_cohort, "--out", tmp_path / "dask", "--scheduler", cluster.address)
    assert remote.returncode == 0, remote.stderr
    for name in ("metrics.json", "predictions.csv"):
        assert (tmp_path / "dask" / name).read_bytes() == (tmp_path / "local" / name).read_bytes(), name
    assert json.loads((tmp_path / "dask" / "metrics.json").read_text())["kidney"]["n"] == 6


def test_unreachable_scheduler_is_one_line_naming_it(small_cohort, tmp_path):
    import socket

    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    address = f"tcp://127.0.0.1:{port}"
    started = time.monotonic()
    result = run_cli("batch", small_cohort, "--out", tmp_path / "out", "--scheduler", address,
                     env={"PSMADOSE_SCHEDULER_TIMEOUT_S": "1"})
    elapsed = time.monotonic() - started
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: "), result.stderr
    assert address in result.stderr and "dask scheduler" in result.stderr
    assert "Traceback" not in result.stderr
    assert elapsed < 30
    assert list(tmp_path.iterdir()) == []  # nothing written, no temporary left


@pytest.mark.parametrize("argv, keyword", [
    (["--scheduler", "http://x"], "not a Dask scheduler address"),
    (["--scheduler", "tcp://127.0.0.1:8786", "--workers", "2"], "drop --workers"),
])
def test_bad_scheduler_options_are_refused(small_cohort, tmp_path, argv, keyword):
    result = run_cli("batch", small_cohort, "--out", tmp_path / "out", *argv)
    assert result.returncode == 2 and keyword in result.stderr, result.stderr
    assert result.stderr.count("\n") == 1
    assert list(tmp_path.iterdir()) == []


def test_scheduler_addresses():
    assert normalise_scheduler(None) is None
    assert normalise_scheduler("local") == "local"
    assert normalise_scheduler("10.0.0.5:8786") == "tcp://10.0.0.5:8786"
    assert normalise_scheduler("tls://head:8786") == "tls://head:8786"
    for bad in ("", "tcp://", "tcp://host", "tcp://host:0", "udp://host:1", "host:port"):
        with pytest.raises(InputError):
            normalise_scheduler(bad)


@pytest.mark.slow
def test_local_cluster_simulation_matches_serial(small_cohort, tmp_path):
    result = run_cli("simulate", "--out", tmp_path / "cohort", "--patients", "3", "--scheduler", "local",
                     "--workers", "2")
    assert result.returncode == 0, result.stderr
    assert tree_bytes(tmp_path / "cohort") == tree_bytes(small_cohort)


NO_DASK_SCRIPT = """
import sys
from psmadose.cli import main

if __name__ == "__main__":
    cohort, scheduler = sys.argv[1], sys.argv[2:]  # scheduler: [] or ["--scheduler", ADDRESS]
    if scheduler:  # an address nobody listens on: refused (exit 2) after Dask was imported to try it
        assert main(["simulate", "--out", cohort, "--patients", "1", *scheduler]) == 2
    else:
        assert main(["simulate", "--out", cohort, "--patients", "1", "--workers", "1"]) == 0
        assert main(["features", cohort, "--out", cohort + ".csv", "--no-radiomics", "--workers", "1"]) == 0
        assert main(["batch", cohort, "--out", cohort + "-batch", "--workers", "1"]) == 0
    print("LOADED", sorted(m for m in sys.modules if m.split(".")[0] in ("dask", "distributed")))
"""


def test_without_scheduler_dask_is_never_imported(tmp_path):
    from dask_helpers import dask_env

    script = tmp_path / "no_dask.py"
    script.write_text(NO_DASK_SCRIPT, encoding="utf-8")
    result = subprocess.run([sys.executable, str(script), str(tmp_path / "c")], capture_output=True, text=True,
                            env=dask_env(), timeout=300)
    assert result.returncode == 0, result.stderr
    assert "LOADED []" in result.stdout, result.stdout
    # The check can fail: with --scheduler the same script does load Dask.
    env = {**dask_env(), "PSMADOSE_SCHEDULER_TIMEOUT_S": "1"}
    result = subprocess.run([sys.executable, str(script), str(tmp_path / "d"), "--scheduler", "tcp://127.0.0.1:9"],
                            capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "'distributed'" in result.stdout, result.stdout


def test_simulate_in_process_with_an_open_executor(tmp_path):
    """The Python API: one executor (a LocalCluster) shared by several calls, progress counting cases."""
    from psmadose.executors import open_executor

    seen = []
    with open_executor("local", 2) as executor:
        simulate_cohort(tmp_path / "a", "demo", n_patients=3, executor=executor,
                        progress=lambda done, total: seen.append((done, total)))
        with pytest.raises(InputError, match="--patients"):
            simulate_cohort(tmp_path / "b", "demo", n_patients=0, executor=executor)
    assert seen == [(1, 3), (2, 3), (3, 3)]
    assert sorted(p.name for p in (tmp_path / "a").iterdir() if p.is_dir()) == ["vp001", "vp002", "vp003"]
    assert not (tmp_path / "b").exists()


def test_held_warnings_handler_releases_its_lock():
    """Dask logs from its own threads: the CLI's held-warnings handler must release its lock after each record
    (it once overrode logging.Handler.release, leaving the lock held: a later record from another thread, or
    logging.shutdown at exit, waited forever) and must hold warnings until the command succeeds."""
    import io
    import logging
    import threading
    from contextlib import redirect_stderr

    from psmadose.cli import _HeldWarnings

    handler = _HeldWarnings()
    logger = logging.getLogger("psmadose.test-held")
    logger.addHandler(handler)
    logger.propagate = False
    stderr = io.StringIO()
    try:
        with redirect_stderr(stderr):
            worker = threading.Thread(target=lambda: [logger.warning("first"), logger.warning("second")])
            worker.start()
            worker.join()
            assert handler.lock.acquire(timeout=2), "the handler's lock is still held by a finished thread"
            handler.lock.release()
            assert stderr.getvalue() == ""  # nothing shown before the command succeeds
            handler.release_held()
    finally:
        logger.removeHandler(handler)
    assert stderr.getvalue() == "warning: first\nwarning: second\n"


@pytest.mark.slow
def test_train_on_cluster_gives_the_same_model(cluster, tmp_path):
    """Features per case and one cross-validation run per group x candidate on the cluster: the same model."""
    cohort = tmp_path / "cohort"
    simulate_cohort(cohort, "demo", n_patients=6, seed=77, workers=1)
    local = run_cli("train", cohort, "--out", tmp_path / "local", "--workers", "1")
    assert local.returncode == 0, local.stderr
    remote = run_cli("train", cohort, "--out", tmp_path / "dask", "--scheduler", cluster.address)
    assert remote.returncode == 0, remote.stderr
    cards = [json.loads((tmp_path / name / "model_card.json").read_text()) for name in ("local", "dask")]
    assert cards[0]["metrics"] == cards[1]["metrics"] and cards[0]["sha256"] == cards[1]["sha256"]
    assert (tmp_path / "local" / "model.skops").read_bytes() == (tmp_path / "dask" / "model.skops").read_bytes()
