"""Benchmark `psmadose suv`: convert a synthetic 300-slice 200x200 PET series (written with pydicom).

    python tools/benchmark_suv.py [--slices 300] [--size 200]

Prints the time to write the series (setup, not measured) and the in-process conversion time (read + sort +
SUV + NRRD/JSON write), and peak Python memory of the conversion (tracemalloc). Figures, not asserts.
"""

from __future__ import annotations

import argparse
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
    args = parser.parse_args()
    from dicom_writer import write_series
    from psmadose.dicom.series import read_pet_suv, write_suv

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        start = time.perf_counter()
        write_series(tmp / "pet", n_slices=args.slices, rows=args.size, columns=args.size,
                     pixel_spacing=(4.0, 4.0), slice_spacing=4.0)
        written_s = time.perf_counter() - start
        tracemalloc.start()
        start = time.perf_counter()
        suv = read_pet_suv(tmp / "pet")
        write_suv(suv, tmp / "SUV.nrrd")
        convert_s = time.perf_counter() - start
        peak_mb = tracemalloc.get_traced_memory()[1] / 1e6
        tracemalloc.stop()
    print(f"series {args.slices} x {args.size}x{args.size}: written in {written_s:.1f} s (setup)")
    print(f"psmadose suv: {convert_s:.2f} s ({1000 * convert_s / args.slices:.1f} ms/slice), "
          f"peak Python memory {peak_mb:.0f} MB")


if __name__ == "__main__":
    main()
