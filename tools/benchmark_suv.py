"""Benchmark `psmadose suv`: convert a synthetic 300-slice 200x200 PET series (written with pydicom).

    python tools/benchmark_suv.py [--slices 300] [--size 200] [--repeat 3]

Prints the time to write the series (setup, not measured), the in-process conversion time (read + sort + SUV +
NRRD/JSON write; best of --repeat runs, without tracing), the same conversion as the real `psmadose suv` command in a
child process (imports included), and the peak Python memory of one conversion (tracemalloc, a separate run because
tracing slows Python down). Figures, not asserts. The pixel values are random (incompressible), a worst case for
the gzip of the NRRD.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "Testing" / "dicom"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--slices", type=int, default=300)
    parser.add_argument("--size", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    from dicom_writer import write_series
    from psmadose.dicom.series import read_pet_suv, write_suv

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        start = time.perf_counter()
        write_series(tmp / "pet", n_slices=args.slices, rows=args.size, columns=args.size,
                     pixel_spacing=(4.0, 4.0), slice_spacing=4.0)
        written_s = time.perf_counter() - start
        times = []
        for _ in range(args.repeat):
            start = time.perf_counter()
            write_suv(read_pet_suv(tmp / "pet"), tmp / "SUV.nrrd", overwrite=True)
            times.append(time.perf_counter() - start)
        (tmp / "SUV.nrrd").unlink()
        start = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "psmadose.cli", "suv", str(tmp / "pet"), "--out",
                               str(tmp / "SUV.nrrd"), "--overwrite"], capture_output=True, text=True,
                              env=dict(os.environ))
        process_s = time.perf_counter() - start
        if done.returncode != 0:
            raise SystemExit(f"psmadose suv failed: {done.stderr}")
        tracemalloc.start()
        write_suv(read_pet_suv(tmp / "pet"), tmp / "SUV2.nrrd", overwrite=True)
        peak_mb = tracemalloc.get_traced_memory()[1] / 1e6
        tracemalloc.stop()
    best = min(times)
    print(f"series {args.slices} x {args.size}x{args.size}: written in {written_s:.1f} s (setup)")
    print(f"psmadose suv in process: {best:.2f} s best of {args.repeat} ({1000 * best / args.slices:.1f} ms/slice; "
          f"all: {', '.join(f'{t:.2f}' for t in times)} s)")
    print(f"psmadose suv as a command (child process, imports included): {process_s:.2f} s")
    print(f"peak Python memory of one conversion: {peak_mb:.0f} MB")


if __name__ == "__main__":
    main()
