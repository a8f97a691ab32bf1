"""Throughput of the cohort commands on local processes vs Dask (issue 16). Figures, not asserts.

    OMP_NUM_THREADS=1 python tools/benchmark_distributed.py [--patients 40] [--cases 20] [--empty 1000]

Measures, on this machine:
  - simulation of N virtual patients (demo preset: whole-body grid at 4 mm): local pool of 2 processes, a Dask
    LocalCluster of 2 single-thread workers, and of 1 worker (scaling 1 -> 2);
  - batch prediction of M of those cases, the same three ways;
  - per-task overhead of the Dask path: K empty tasks through ``Executor.run`` (submit, stream back, re-order);
  - peak resident memory of each Dask worker process during the batch (VmHWM, reset before the batch);
  - with --whole-body W: batch of W copies of a whole-body case (PET 200x200x250 at 4 mm, CT, ~20 segments;
    tools/benchmark_predict.py's case) on 2 Dask workers, local pool for comparison, and the workers' peak memory.
Cluster start-up is timed apart and not counted in the throughput. --only-whole-body skips the rest.
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path


def _noop(task):
    return task


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _reset_peak() -> None:
    """Linux: reset the process's peak RSS (write 5 to /proc/self/clear_refs), so the peak is the batch's."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
    except OSError:
        pass


def _vmhwm_mb() -> float:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return _peak_rss_mb()


def _own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _cpu_seconds(executor=None) -> float:
    """CPU seconds of this process and its finished children, plus those of the Dask workers of ``executor``."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    total = _own_cpu() + children.ru_utime + children.ru_stime
    if executor is not None and getattr(executor, "client", None) is not None:
        total += sum(executor.client.run(_own_cpu).values())
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--patients", type=int, default=40)
    parser.add_argument("--cases", type=int, default=20)
    parser.add_argument("--empty", type=int, default=1000)
    parser.add_argument("--whole-body", type=int, default=4)
    parser.add_argument("--only-whole-body", action="store_true")
    args = parser.parse_args()
    if args.only_whole_body:
        whole_body(args.whole_body)
        return

    from psmadose.batch import run_batch
    from psmadose.executors import LocalExecutor, open_executor
    from psmadose.simulate.cohort import simulate_cohort

    scratch = Path(tempfile.mkdtemp(prefix="psmadose-bench-"))
    rows = []

    def timed(label: str, n: int, fn, executor=None) -> float:
        """Wall time, and CPU seconds per item of this process plus its workers (children or Dask workers): on
        a machine shared with other jobs the CPU figure compares the two paths where wall time cannot."""
        cpu_before = _cpu_seconds(executor)
        start = time.perf_counter()
        fn()
        seconds = time.perf_counter() - start
        cpu = _cpu_seconds(executor) - cpu_before
        rows.append((label, n, seconds, n / seconds))
        print(f"{label:<44} {n:>5} in {seconds:7.1f} s  {n / seconds:6.2f} /s   CPU {cpu / n:6.3f} s each",
              flush=True)
        return seconds

    cases = scratch / "cases"
    simulate_cohort(cases, "demo", n_patients=args.cases, workers=2)  # warm-up and the batch's input

    timed("simulate, local pool, 2 processes", args.patients,
          lambda: simulate_cohort(scratch / "sim-local", "demo", n_patients=args.patients, workers=2))
    timed("batch, local pool, 2 processes", args.cases,
          lambda: run_batch(cases, scratch / "batch-local", workers=2))

    for n_workers in (2, 1):
        start = time.perf_counter()
        with open_executor("local", n_workers) as executor:
            print(f"LocalCluster of {n_workers} worker(s) started in {time.perf_counter() - start:.1f} s", flush=True)
            executor.run(_noop, list(range(2 * n_workers)))  # the workers are up and warm
            sim_out, batch_out = scratch / f"sim-dask{n_workers}", scratch / f"batch-dask{n_workers}"
            timed(f"simulate, Dask LocalCluster, {n_workers} worker(s)", args.patients,
                  lambda out=sim_out, ex=executor: simulate_cohort(out, "demo", n_patients=args.patients, executor=ex),
                  executor)
            executor.client.run(_reset_peak)
            timed(f"batch, Dask LocalCluster, {n_workers} worker(s)", args.cases,
                  lambda out=batch_out, ex=executor: run_batch(cases, out, executor=ex), executor)
            peaks = executor.client.run(_vmhwm_mb)
            print("  peak RSS per worker during batch (MB): "
                  + ", ".join(f"{peak:.0f}" for peak in sorted(peaks.values())), flush=True)
            if n_workers == 2:
                executor.run(_noop, list(range(100)))  # warm
                seconds = timed("empty tasks, Dask LocalCluster, 2 workers", args.empty,
                                lambda: executor.run(_noop, list(range(args.empty))), executor)
                print(f"  per-task overhead of the Dask path: {1000 * seconds / args.empty:.2f} ms "
                      "(2 workers in parallel; submit + stream back + re-order)", flush=True)
    seconds = timed("empty tasks, local pool, 2 processes", args.empty,
                    lambda: LocalExecutor(2).run(_noop, list(range(args.empty))))
    print(f"  per-task overhead of the local pool: {1000 * seconds / args.empty:.2f} ms (including pool start)")
    print(f"(scratch: {scratch}; remove when done)")
    if args.whole_body:
        whole_body(args.whole_body)


def whole_body(n_cases: int) -> None:
    import shutil
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    from benchmark_predict import make_case
    from psmadose.batch import run_batch
    from psmadose.executors import open_executor

    scratch = Path(tempfile.mkdtemp(prefix="psmadose-bench-wb-"))
    source = make_case(scratch / "made")
    cases = scratch / "cases"
    cases.mkdir()
    for n in range(n_cases):
        shutil.copytree(source, cases / f"wb{n + 1:02d}")
    start = time.perf_counter()
    run_batch(cases, scratch / "local", workers=2)
    local = time.perf_counter() - start
    print(f"whole-body batch, local pool, 2 processes: {n_cases} in {local:.1f} s", flush=True)
    with open_executor("local", 2) as executor:
        executor.run(_noop, [0, 1, 2, 3])
        executor.client.run(_reset_peak)
        start = time.perf_counter()
        summary = run_batch(cases, scratch / "dask", executor=executor)
        seconds = time.perf_counter() - start
        peaks = executor.client.run(_vmhwm_mb)
    print(f"whole-body batch, Dask LocalCluster, 2 workers: {n_cases} in {seconds:.1f} s ({summary['succeeded']} ok); "
          "peak RSS per worker (MB): " + ", ".join(f"{p:.0f}" for p in sorted(peaks.values())), flush=True)
    shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
