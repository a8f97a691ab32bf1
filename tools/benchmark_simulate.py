"""Benchmark `psmadose simulate`: a cohort at 4 mm PET on all cores vs one core.

    python tools/benchmark_simulate.py [--patients 500] [--serial-patients 20]

Prints wall time, patients per second, disk use, and the speed-up of the parallel run over a serial run
(measured on a smaller serial cohort and scaled per patient). Figures, not asserts.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def run(out: Path, patients: int, workers: int) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "psmadose.cli", "simulate", "--preset", "training", "--patients",
                    str(patients), "--workers", str(workers), "--out", str(out)], check=True, capture_output=True)
    return time.perf_counter() - start


def disk_mb(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--patients", type=int, default=500)
    parser.add_argument("--serial-patients", type=int, default=20)
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    with tempfile.TemporaryDirectory(dir=".") as tmp:
        tmp = Path(tmp)
        serial = run(tmp / "serial", args.serial_patients, 1)
        parallel = run(tmp / "parallel", args.patients, cores)
        size = disk_mb(tmp / "parallel")
    per_serial = serial / args.serial_patients
    per_parallel = parallel / args.patients
    print(f"simulate --preset training: {args.patients} patients on {cores} workers in {parallel:.1f} s "
          f"({per_parallel * 1000:.0f} ms/patient, {size / args.patients:.1f} MB/patient, {size / 1000:.2f} GB)")
    print(f"serial: {args.serial_patients} patients on 1 worker in {serial:.1f} s ({per_serial * 1000:.0f} ms/patient)")
    print(f"parallel speed-up per patient: x{per_serial / per_parallel:.2f} on {cores} cores")


if __name__ == "__main__":
    main()
