"""Faults on a real Dask cluster: a worker killed mid-run, cancellation, a worker that cannot read the data."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
from dask_helpers import dask_cluster, dask_env, interruptible, run_cli, tree_bytes
from psmadose.batch import run_batch
from psmadose.errors import InputError
from psmadose.executors import open_executor


@pytest.mark.slow
def test_worker_killed_mid_run_loses_and_duplicates_nothing(cohort_with_bad_case, tmp_path):
    serial = tmp_path / "serial"
    run_batch(cohort_with_bad_case, serial, workers=1)
    killed = {}
    with dask_cluster(tmp_path / "dask", n_workers=2) as cluster, open_executor(cluster.address) as executor:
        pids = executor.client.run(os.getpid)

        def progress(done: int, total: int):
            if done == 1:  # one case finished: the other worker is inside a case now; kill it there
                processing = executor.client.processing()
                worker = next(w for w, keys in processing.items() if keys)
                killed.update(worker=worker, keys=list(processing[worker]))
                os.kill(pids[worker], signal.SIGKILL)
            return True

        summary = run_batch(cohort_with_bad_case, tmp_path / "dask-out", executor=executor, progress=progress)
        survivors = executor.client.scheduler_info()["workers"]
    assert killed["keys"], "the killed worker had no task"
    assert killed["worker"] not in survivors and len(survivors) == 1
    killed_cases = {key.split("-")[2] for key in killed["keys"]}  # psmadose-predict-<case>-<token>
    assert summary["succeeded"] == 3 and summary["failed"] == 1
    rows = (tmp_path / "dask-out" / "batch_summary.csv").read_text(encoding="utf-8").splitlines()[1:]
    cases = [row.split(",")[0] for row in rows]
    assert cases == ["vp001", "vp002", "vp003", "vp003b"]  # each once, in order
    for case in killed_cases - {"vp003b"}:  # the case being predicted on the killed worker was redone elsewhere
        assert any(row.startswith(f"{case},ok,") for row in rows), rows
    assert tree_bytes(tmp_path / "dask-out") == tree_bytes(serial)  # no leftover, nothing missing or extra
    assert not list((tmp_path / "dask-out").glob(".*partial*"))


@pytest.mark.slow
def test_cancellation_stops_the_cluster_tasks(cluster, cohort_with_bad_case, tmp_path):
    from distributed import Client

    out = tmp_path / "out"
    process = subprocess.Popen([sys.executable, "-m", "psmadose.cli", "batch", str(cohort_with_bad_case), "--out",
                                str(out), "--scheduler", cluster.address], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, env=dask_env(), preexec_fn=interruptible)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not list(tmp_path.glob(".out.tmp-*/vp00*")):
        time.sleep(0.05)
    assert list(tmp_path.glob(".out.tmp-*/vp00*")), "no case was ever completed"
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    assert stderr.strip().splitlines()[-1].startswith("error: stopped (SIGINT)")
    assert list(tmp_path.iterdir()) == []  # the output and its temporary are gone
    with Client(cluster.address, timeout=30) as client:  # and the cluster is idle again, ready for others
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            tasks = client.run_on_scheduler(lambda dask_scheduler: [str(k) for k in dask_scheduler.tasks])
            if not [k for k in tasks if k.startswith("psmadose-")] and not any(client.processing().values()):
                break
            time.sleep(0.2)
        else:
            pytest.fail(f"tasks still on the cluster after the cancellation: {tasks}")
        assert len(client.scheduler_info()["workers"]) == 2
    assert list(tmp_path.iterdir()) == []  # a task still running at the signal wrote nothing afterwards


def test_a_worker_that_cannot_read_the_inputs_is_named(small_cohort, tmp_path):
    """A worker running as another user ('nobody') cannot read the cohort (under root's 0700 pytest folder)."""
    if os.geteuid() != 0 or not os.path.exists("/usr/bin/setpriv"):
        pytest.skip("needs root and setpriv to start a worker as another user")
    with dask_cluster(tmp_path / "dask", n_workers=0) as cluster:
        cluster.start_worker("nobody-worker", user="nobody")
        try:
            cluster.wait_for_workers(1, timeout=60)
        except Exception:  # noqa: BLE001 - e.g. the interpreter is not readable by that user
            pytest.skip(f"a worker as 'nobody' did not start: {cluster.worker_log('nobody-worker')[-500:]}")
        out = tmp_path / "out"
        result = run_cli("batch", small_cohort, "--out", out, "--scheduler", cluster.address)
        with open_executor(cluster.address) as executor:
            with pytest.raises(InputError, match="nobody-worker|tcp://"):
                executor.check_locality([small_cohort])
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1, result.stderr
    line = result.stderr
    assert "Dask worker tcp://127.0.0.1:" in line and str(small_cohort) in line and "cannot" in line, line
    assert "docs/CLUSTER.md" in line
    assert not out.exists() and not list(tmp_path.glob(".out.tmp-*"))
