"""Benchmark the tissue-uptake measurement (psmadose.features.concentration) on a whole-body virtual patient
(PET 200x200x250 at 4 mm, ~20 segments): the implementation (distance transforms and blur on each segment's
padded bounding box) against the naive one (the same operations on the whole volume for every segment).

    python tools/benchmark_concentration.py [--repeat 3]

Figures, not asserts; the two must agree to floating-point precision (checked and printed).
"""

from __future__ import annotations

import argparse
import statistics
import time
from unittest import mock

import numpy as np


def main() -> None:
    from psmadose.features import concentration
    from psmadose.simulate.patient import sample_patient
    from psmadose.simulate.render import Grid, render

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    patient = sample_patient(np.random.SeedSequence(2024), "bench", n_lesions=10, tracer="18F-DCFPyL")
    grid = Grid.body((4.0, 4.0, 4.0), (800.0, 800.0, 1000.0))
    rendered = render(patient, pet_grid=grid)
    import SimpleITK as sitk

    pet = sitk.GetArrayFromImage(rendered.pet)
    union = np.zeros(pet.shape, dtype=bool)
    for mask in rendered.masks.values():
        union |= mask

    def run() -> list[float]:
        return [concentration.tissue_concentration(pet, m, (4.0, 4.0, 4.0), 6.5, union & ~m).suv
                for m in rendered.masks.values()]

    def timed(repeat: int) -> tuple[float, list[float]]:
        times, values = [], []
        for _ in range(repeat):
            start = time.perf_counter()
            values = run()
            times.append(time.perf_counter() - start)
        return statistics.median(times), values

    boxed, values = timed(args.repeat)
    whole = tuple(slice(0, n) for n in pet.shape)
    with mock.patch.object(concentration, "padded_bounds", lambda mask, pad: whole):
        naive, naive_values = timed(1)  # slow: once
    difference = float(np.max(np.abs(np.subtract(values, naive_values))))
    print(f"{len(rendered.masks)} segments on {pet.shape} voxels: bounding boxes {boxed:.2f} s, whole volume "
          f"{naive:.2f} s ({naive / boxed:.0f}x); largest difference {difference:.2g} SUV")


if __name__ == "__main__":
    main()
