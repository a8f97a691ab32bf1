"""Benchmark radiomics extraction on a whole-body-size virtual patient (PET 200x200x250 at 4 mm + CT, 20 segments).

    python tools/benchmark_radiomics.py [--repeat 3]

Prints pyradiomics' import time (fresh processes), reading the case, sampling the CT onto the PET grid, the
naive extraction (pyradiomics on full-volume label images, once per segment and modality, as its documentation
shows), the fast extraction (cropped boxes; serial and 2 worker processes), the same for PET features only,
the shape class on the largest organ, grey-level counts and peak memory. Figures, not asserts.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

IMPORT_PROBE = """
import time
t0 = time.perf_counter()
import numpy, pandas, SimpleITK
t1 = time.perf_counter()
from radiomics import featureextractor
t2 = time.perf_counter()
print(t1 - t0, t2 - t1)
"""


def import_seconds(repeat: int) -> tuple[float, float]:
    """(numpy+pandas+SimpleITK, pyradiomics on top of them), median over fresh processes."""
    base, extra = [], []
    for _ in range(repeat):
        out = subprocess.run([sys.executable, "-c", IMPORT_PROBE], check=True, capture_output=True, text=True)
        first, second = map(float, out.stdout.split())
        base.append(first)
        extra.append(second)
    return statistics.median(base), statistics.median(extra)


def timed(function, repeat: int) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        result = function()
        times.append(time.perf_counter() - start)
    return min(times), result


def pet_only_params(directory: Path) -> Path:
    from psmadose.features.radiomics import DEFAULT_PARAMS_PATH

    text = DEFAULT_PARAMS_PATH.read_text(encoding="utf-8")
    path = directory / "radiomics_pet_only.yaml"
    path.write_text(text.split("\nct:\n")[0] + "\n", encoding="utf-8")
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from benchmark_predict import make_case

    import_base, import_radiomics = import_seconds(args.repeat)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        case_dir = make_case(tmp)
        import SimpleITK as sitk
        from psmadose.case import read_case
        from psmadose.features.radiomics import RadiomicsExtractor
        from psmadose.images import mask_bounds
        from radiomics.shape import RadiomicsShape

        read_s, case = timed(lambda: read_case(case_dir), 1)
        resample_s, ct = timed(case.ct_on_pet_grid, args.repeat)
        both = RadiomicsExtractor()
        pet_only = RadiomicsExtractor(pet_only_params(tmp))

        figures = {}
        for label, extractor in (("PET+CT", both), ("PET only", pet_only)):
            naive_s, naive = timed(lambda e=extractor: e.extract_naive(case), 1)
            serial_s, fast = timed(lambda e=extractor: e.extract_case(case, ct_on_pet_grid=ct), args.repeat)
            parallel_s, fast2 = timed(lambda e=extractor: e.extract_case(case, workers=2, ct_on_pet_grid=ct),
                                      args.repeat)
            a, b = naive.drop(columns="segment").to_numpy(), fast.drop(columns="segment").to_numpy()
            identical = np.array_equal(a, b, equal_nan=True) and fast.equals(fast2)
            figures[label] = (naive_s, serial_s, parallel_s, identical, fast.shape[1] - 1)

        largest = max(case.segments, key=lambda s: s.n_voxels)
        box = tuple(slice(lo, hi + 1) for lo, hi in mask_bounds(largest.mask))
        image = sitk.GetImageFromArray(case.pet_array[box])
        image.SetSpacing(case.pet.GetSpacing())
        mask = sitk.GetImageFromArray(largest.mask[box].astype(np.uint8))
        mask.CopyInformation(image)
        shape_s, _ = timed(lambda: RadiomicsShape(image, mask).execute(), args.repeat)

        width = float(pet_only.params["pet"]["setting"]["binWidth"])
        levels = {s.name: int(case.pet_array[s.mask].max() // width - case.pet_array[s.mask].min() // width) + 1
                  for s in case.segments}
        most = max(levels, key=levels.get)
        size = case.pet.GetSize()
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

        print(f"case: PET {size[0]}x{size[1]}x{size[2]} at 4 mm, CT, {len(case.segments)} segments; "
              f"largest {largest.name} {largest.n_voxels * case.voxel_volume_ml:.0f} mL")
        print(f"imports (fresh process): numpy+pandas+SimpleITK {import_base:.2f} s, "
              f"+ pyradiomics {import_radiomics:.2f} s")
        print(f"read case {read_s:.2f} s; CT onto the PET grid {resample_s:.2f} s (shared with the uptake features)")
        for label, (naive_s, serial_s, parallel_s, identical, n_features) in figures.items():
            print(f"{label} ({n_features} features/segment): naive {naive_s:.2f} s | fast serial {serial_s:.2f} s "
                  f"(x{naive_s / serial_s:.1f}) | fast 2 workers {parallel_s:.2f} s (x{naive_s / parallel_s:.1f}) | "
                  f"identical to naive: {'yes' if identical else 'NO'}")
        print(f"pyradiomics shape class on {largest.name}: {shape_s * 1000:.0f} ms")
        print(f"PET grey levels at binWidth {width:g} SUV: max {levels[most]} ({most}), "
              f"median {statistics.median(levels.values()):.0f}")
        print(f"peak RSS {peak_mb:.0f} MB (this process)")


if __name__ == "__main__":
    main()
