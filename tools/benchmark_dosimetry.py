"""Benchmark and validate ``psmadose dosimetry`` (issue 15). Figures, not asserts.

    python tools/benchmark_dosimetry.py speed [--repeat 3] [--keep DIR]   # whole-body 3-time-point study, 256^2x200
    python tools/benchmark_dosimetry.py cohort COHORT [--methods lde,vsv,sphere] [--no-recovery]
                                                                  # bias/spread vs the simulator's true doses

``speed`` renders one virtual patient (psmadose simulator, ~20 segments) with post-therapy SPECT at 4/24/96 h on a
256 x 256 x 200 grid (2.0 x 2.0 x 4.1 mm), writes it as a STUDY, and times ``run_dosimetry`` end to end (reading,
segment TACs with partial-volume recovery, voxel TIA, VSV convolution, all outputs) and, on the same TIA map, the
voxel S-value convolution by FFT against the direct convolution (scipy.ndimage.convolve); peak memory from
getrusage. ``cohort`` runs every case of a ``psmadose simulate --spect-times`` cohort and prints, per structure
type, the mean and SD of (computed / true - 1) of the dose per GBq.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np


def _write_whole_body_study(folder: Path) -> Path:
    from psmadose.images import write_image
    from psmadose.segmentation import STRUCTURE_COLORS, SegmentToWrite, write_segmentation
    from psmadose.simulate.patient import sample_patient
    from psmadose.simulate.render import Grid, render

    patient = sample_patient(np.random.SeedSequence(2026), "bench", n_lesions=10, tracer="18F-DCFPyL")
    grid = Grid.body((2.0, 2.0, 4.1), (512.0, 512.0, 820.0))
    rendered = render(patient, pet_grid=grid, spect_times_h=[4, 24, 96])
    folder.mkdir(parents=True)
    for t, image in rendered.spect.items():
        write_image(image, folder / f"spect_{t:g}h.nrrd")
    kinds = {s.name: s.kind for s in patient.structures}
    segments = [SegmentToWrite(n, m, STRUCTURE_COLORS[kinds[n]], kinds[n]) for n, m in rendered.masks.items()]
    write_segmentation(folder / "segmentation.seg.nrrd", rendered.pet, segments)
    (folder / "administration.json").write_text(json.dumps(
        {"activity_gbq": patient.clinical["planned_activity_gbq"], "radiopharmaceutical": "177Lu-PSMA-617"}))
    return folder


def speed(repeat: int, keep: Path | None = None) -> None:
    from psmadose.dosimetry import Settings, run_dosimetry
    from psmadose.dosimetry import kernel as kernels
    from psmadose.dosimetry.run import voxel_tia_bq_s
    from psmadose.dosimetry.study import read_study

    with tempfile.TemporaryDirectory() as tmp:
        study = _write_whole_body_study(Path(keep) if keep else Path(tmp) / "study")
        shape = read_study(study).time_points[0].spect.GetSize()[::-1]
        print(f"study: 3 time points, grid {shape[2]} x {shape[1]} x {shape[0]} (i x j x k), "
              "spacing 2.0 x 2.0 x 4.1 mm")
        times = []
        for n in range(repeat):
            start = time.perf_counter()
            result = run_dosimetry(study, Path(tmp) / f"out{n}", Settings(method="vsv"))
            times.append(time.perf_counter() - start)
            print(f"run {n + 1}: {times[-1]:.1f} s total; stages {result.timings_s}; {len(result.segments)} segments")
        print(f"end to end (in-process, after imports): median {statistics.median(times):.1f} s")
        st = read_study(study)
        import SimpleITK as sitk

        arrays = [sitk.GetArrayFromImage(tp.spect) for tp in st.time_points]
        tia = voxel_tia_bq_s(arrays, st.times_h).astype(np.float64) * (2.0 * 2.0 * 4.1 / 1000) * 3600
        spacing = (4.1, 2.0, 2.0)
        kernel = kernels.voxel_s_values(spacing, 1.04)
        print(f"kernel {kernel.shape} for spacing {spacing} mm (k, j, i)")
        for method in ("fft", "direct"):
            runs = []
            for _ in range(repeat):
                start = time.perf_counter()
                out = kernels.convolve(tia, kernel, method)
                runs.append(time.perf_counter() - start)
            print(f"convolution {method}: median {statistics.median(runs):.2f} s")
            if method == "fft":
                reference = out
        print(f"fft vs direct max relative difference: {np.abs(out - reference).max() / np.abs(out).max():.2e}")
        # a wider kernel (1 mm voxels) is where FFT wins: time both on a 128^3 block
        fine = kernels.voxel_s_values((1.0, 1.0, 1.0), 1.04)
        block = tia[:128, :128, :128]
        for method in ("fft", "direct"):
            start = time.perf_counter()
            kernels.convolve(block, fine, method)
            print(f"1 mm kernel {fine.shape} on 128^3 block, {method}: {time.perf_counter() - start:.2f} s")
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak memory (max RSS): {peak_mb:.0f} MB")


def cohort(directory: Path, methods: list[str], recovery: bool) -> None:
    import pandas as pd
    from psmadose.case import read_doses
    from psmadose.dosimetry import Settings, compute
    from psmadose.dosimetry.run import doses_table

    cases = sorted(p for p in Path(directory).iterdir() if p.is_dir() and list(p.glob("spect_*h.nrrd")))
    for method in methods:
        rows = []
        for case in cases:
            result = compute(case, Settings(method=method, recovery=recovery))
            table = doses_table(result).set_index("segment")
            truth = read_doses(case / "doses.csv")
            for name, value in truth.items():
                if name in table.index:
                    rows.append({"case": case.name, "segment": name, "type": table.loc[name, "structure_type"],
                                 "error": table.loc[name, "reference_gy_per_gbq"] / value - 1,
                                 "map_error": table.loc[name, "dose_map_mean_gy"] / result.study.activity_gbq
                                 / value - 1})
        frame = pd.DataFrame(rows)
        summary = frame.groupby("type")[["error", "map_error"]].agg(["mean", "std", "count"]).round(3)
        print(f"\nmethod {method}, recovery {'on' if recovery else 'off'}, {len(cases)} virtual patients "
              "(error = computed / true - 1 of Gy/GBq; map_error: dose-map mean, no recovery)")
        print(summary.to_string())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="what", required=True)
    p = sub.add_parser("speed")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--keep", type=Path, default=None, help="write the study to this new folder and keep it (to time "
                   "the command line on it: /usr/bin/time -v psmadose dosimetry FOLDER --out OUT)")
    p = sub.add_parser("cohort")
    p.add_argument("cohort", type=Path)
    p.add_argument("--methods", default="lde,vsv,sphere")
    p.add_argument("--no-recovery", action="store_true")
    args = parser.parse_args()
    if args.what == "speed":
        speed(args.repeat, args.keep)
    else:
        cohort(args.cohort, args.methods.split(","), not args.no_recovery)


if __name__ == "__main__":
    main()
