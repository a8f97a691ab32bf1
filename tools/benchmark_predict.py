"""Benchmark `psmadose predict` on a whole-body-size virtual patient (PET 200x200x250 at 4 mm, ~20 segments).

    python tools/benchmark_predict.py [--repeat 3]

Prints wall time of the whole command (a real process, imports included), its peak memory (max RSS), the
time of each stage in-process, and the feature stage against a naive implementation (SUVpeak by correlating
the full volume once per segment instead of a cropped box). Figures, not asserts.
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
from scipy import ndimage


def make_case(directory: Path) -> Path:
    from psmadose.case import write_case
    from psmadose.clinical import validate_clinical
    from psmadose.segmentation import STRUCTURE_COLORS, SegmentToWrite
    from psmadose.simulate.patient import sample_patient
    from psmadose.simulate.render import Grid, render

    patient = sample_patient(np.random.SeedSequence(2024), "bench", n_lesions=10, tracer="18F-DCFPyL")
    grid = Grid.body((4.0, 4.0, 4.0), (800.0, 800.0, 1000.0))  # 200 x 200 x 250 voxels
    rendered = render(patient, pet_grid=grid)
    kinds = {s.name: s.kind for s in patient.structures}
    segments = [SegmentToWrite(n, m, STRUCTURE_COLORS[kinds[n]], kinds[n]) for n, m in rendered.masks.items()]
    clinical, _ = validate_clinical(patient.clinical)
    case = directory / "bench"
    write_case(case, pet=rendered.pet, ct=rendered.ct, segments=segments, clinical=clinical)
    return case


def naive_features_seconds(case_dir: Path) -> tuple[float, float]:
    from psmadose.case import read_case
    from psmadose.features import extract_features
    from psmadose.features.uptake import peak_kernel

    case = read_case(case_dir)
    start = time.perf_counter()
    extract_features(case)
    ours = time.perf_counter() - start
    spacing = tuple(case.pet.GetSpacing()[::-1])
    start = time.perf_counter()
    for segment in case.segments:  # naive: the whole volume, once per segment
        local = ndimage.correlate(case.pet_array.astype(np.float64), peak_kernel(spacing), mode="constant")
        float(local[segment.mask].max())
        values = case.pet_array[segment.mask]
        values.mean(), values.max(), values.std()
    naive = time.perf_counter() - start
    return ours, naive


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        case = make_case(tmp)
        import SimpleITK as sitk

        size = sitk.ReadImage(str(case / "pet.nrrd")).GetSize()
        n_segments = len(list((case / "clinical.json").parent.glob("*")))
        times = []
        peak_rss_mb = 0.0
        for n in range(args.repeat):
            out = tmp / f"out{n}"
            start = time.perf_counter()
            subprocess.run([sys.executable, "-m", "psmadose.cli", "predict", str(case), "--out", str(out)],
                           check=True, capture_output=True)
            times.append(time.perf_counter() - start)
            peak_rss_mb = max(peak_rss_mb, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024)
        from psmadose.case import read_case
        from psmadose.features import extract_features
        from psmadose.modelfile import load_model
        from psmadose.predict import predict_case, write_prediction

        stages = {}
        start = time.perf_counter()
        loaded = load_model()
        stages["load model"] = time.perf_counter() - start
        start = time.perf_counter()
        c = read_case(case)
        stages["read case"] = time.perf_counter() - start
        start = time.perf_counter()
        extract_features(c)
        stages["features"] = time.perf_counter() - start
        start = time.perf_counter()
        result = predict_case(c, loaded)
        stages["features + predict"] = time.perf_counter() - start
        (tmp / "stage").mkdir()
        start = time.perf_counter()
        write_prediction(tmp / "stage", c, result, loaded)
        stages["write outputs (csv, json, seg.nrrd, report)"] = time.perf_counter() - start
        ours, naive = naive_features_seconds(case)
        print(f"case: PET {size[0]}x{size[1]}x{size[2]} at 4 mm, {len(c.segments)} segments, CT on the PET grid")
        print(f"psmadose predict (whole process): median {statistics.median(times):.2f} s over {args.repeat} runs "
              f"(min {min(times):.2f} s); peak RSS {peak_rss_mb:.0f} MB")
        for name, seconds in stages.items():
            print(f"  {name:<45} {seconds:6.2f} s")
        print(f"feature stage: {ours:.2f} s vs naive full-volume SUVpeak per segment {naive:.2f} s "
              f"(x{naive / ours:.1f})")
        del n_segments


if __name__ == "__main__":
    main()
