"""Presets and cohort generation: latent patients -> images -> case directories, in parallel."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..case import write_case
from ..clinical import validate_clinical
from ..errors import InputError
from ..outputs import atomic_output_dir
from ..segmentation import STRUCTURE_COLORS, SegmentToWrite
from .patient import VirtualPatient, lesion_counts_for_total, sample_patient
from .render import Grid, draw_imaging, render

RESOLUTION_RECORDED_P = 0.5  # share of randomised sites that state pet_resolution_mm in clinical.json

log = logging.getLogger(__name__)

Progress = Callable[[int, int], "bool | None"]  # (done, total) -> False to cancel


@dataclass(frozen=True)
class Preset:
    name: str
    description: str
    n_patients: int
    seed: int
    include_lacrimal: bool = True
    tracer: str | None = None  # None: drawn per patient from the tracer mix
    total_lesions: int | None = None  # exact number of tumours over the cohort
    pet_spacing_mm: tuple[float, float, float] = (4.0, 4.0, 4.0)
    ct_spacing_mm: tuple[float, float, float] | None = None  # None: CT on the PET grid
    fixed_patients: bool = False  # the number of patients is part of the preset
    # Domain randomisation (issue 11): each patient gets a random site's resolution, noise, voxel size, organ
    # heterogeneity and contouring habits (render.draw_imaging, ranges in parameters.IMAGING_RANGES).
    randomise_imaging: bool = False


PRESETS: dict[str, Preset] = {
    "demo": Preset("demo", "one virtual patient for the demo (18F-DCFPyL, CT on its own 3 mm grid)", 1, 20261124,
                   tracer="18F-DCFPyL", ct_spacing_mm=(3.0, 3.0, 5.0)),
    "southampton-poc": Preset(
        "southampton-poc", "the size of the Southampton proof of concept (SNMMI 2026): 9 patients, 57 tumours, "
        "36 salivary glands, 18 kidneys", 9, 2026, include_lacrimal=False, tracer="18F-DCFPyL", total_lesions=57,
        ct_spacing_mm=(3.0, 3.0, 5.0), fixed_patients=True),
    "training": Preset("training", "training cohort for the bundled model: mixed tracers, randomised sites, "
                       "400 patients", 400, 1, randomise_imaging=True),
    "validation": Preset("validation", "held-out cohort (seeds never used in training), randomised sites", 100, 9001,
                         randomise_imaging=True),
}


def _case_segments(patient: VirtualPatient, masks: dict[str, np.ndarray]) -> list[SegmentToWrite]:
    kinds = {s.name: s.kind for s in patient.structures}
    return [SegmentToWrite(name, mask, STRUCTURE_COLORS[kinds[name]], kinds[name]) for name, mask in masks.items()]


def truth_record(patient: VirtualPatient) -> dict:
    """The simulator's ground truth for one patient (simulation.json): never read by predict."""
    record = patient.to_dict()
    for structure, s in zip(record["structures"], patient.structures):
        structure["volume_ml"] = s.volume_ml
    return record


def build_case(task: dict) -> dict:
    """Worker: sample, render and write one patient; returns a summary (runs in a child process)."""
    preset = PRESETS[task["preset"]]
    seed_seq = np.random.SeedSequence(entropy=task["seed"], spawn_key=(task["index"],))
    patient = sample_patient(seed_seq, task["patient_id"], n_lesions=task.get("n_lesions"), tracer=preset.tracer,
                             include_lacrimal=preset.include_lacrimal)
    patient.seed = int(seed_seq.generate_state(1)[0])
    imaging, pet_spacing = None, preset.pet_spacing_mm
    if preset.randomise_imaging:
        site_rng = np.random.default_rng([patient.seed, 11])
        imaging, pet_spacing = draw_imaging(site_rng)
        if site_rng.random() < RESOLUTION_RECORDED_P:
            patient.clinical["pet_resolution_mm"] = round(imaging.fwhm_mm, 1)
    pet_grid = Grid.body(pet_spacing)
    ct_grid = Grid.body(preset.ct_spacing_mm) if preset.ct_spacing_mm else None
    rendered = render(patient, pet_grid=pet_grid, ct_grid=ct_grid, spect_times_h=task.get("spect_times_h"),
                      imaging=imaging)
    clinical, _ = validate_clinical(patient.clinical, source=f"{task['patient_id']} clinical")
    segments = _case_segments(patient, rendered.masks)
    doses = {s.name: s.dose_gy_per_gbq for s in patient.structures if s.segmented and s.dose_gy_per_gbq > 0
             and s.name in rendered.masks}
    extra = {f"spect_{int(round(t)):03d}h": image for t, image in rendered.spect.items()}
    # Written into a staging folder of this attempt, renamed into place when complete: a task rerun after its
    # worker died (Dask) never meets the first attempt's files, and a removed output is never recreated.
    final = Path(task["out"]) / task["patient_id"]
    directory = Path(tempfile.mkdtemp(prefix=f".{task['patient_id']}.partial-", dir=task["out"]))
    write_case(directory, pet=rendered.pet, ct=rendered.ct, segments=segments, clinical=clinical, doses=doses,
               extra_images=extra)
    truth = truth_record(patient)
    if imaging is not None:
        truth["imaging"] = {**imaging.to_dict(), "pet_spacing_mm": list(pet_spacing)}
    if rendered.spect:
        truth["spect"] = {"times_h": sorted(rendered.spect), "units": "Bq/mL",
                          "injected_activity_gbq": patient.clinical["planned_activity_gbq"]}
    (directory / "simulation.json").write_text(json.dumps(truth, indent=1) + "\n", encoding="utf-8")
    os.chmod(directory, 0o755)  # as a folder made by mkdir, not mkdtemp's 0700
    if final.exists():  # a previous attempt completed but its worker died before reporting
        shutil.rmtree(final)
    directory.rename(final)
    return {"patient_id": task["patient_id"], "n_lesions": len(patient.lesions),
            "n_segments": len(segments)}


def plan_cohort(preset_name: str, n_patients: int | None, seed: int | None) -> list[dict]:
    if preset_name not in PRESETS:
        raise InputError(f"unknown preset {preset_name!r}; use one of: {', '.join(PRESETS)}")
    preset = PRESETS[preset_name]
    if n_patients is not None and n_patients <= 0:
        raise InputError(f"--patients must be a positive number, got {n_patients}")
    if preset.fixed_patients and n_patients not in (None, preset.n_patients):
        raise InputError(f"preset {preset_name} has exactly {preset.n_patients} patients; drop --patients")
    if n_patients is not None and n_patients > 5000:
        raise InputError(f"--patients {n_patients} is more than 5000; generate cohorts in parts")
    if seed is not None and seed < 0:
        raise InputError(f"--seed must be >= 0, got {seed}")
    n = n_patients or preset.n_patients
    seed = preset.seed if seed is None else seed
    counts: list[int | None] = [None] * n
    if preset.total_lesions is not None:
        counts = lesion_counts_for_total(np.random.default_rng([seed, 57]), n, preset.total_lesions)
    width = max(3, len(str(n)))
    return [{"preset": preset_name, "seed": seed, "index": i, "patient_id": f"vp{i + 1:0{width}d}",
             "n_lesions": counts[i]} for i in range(n)]


def simulate_cohort(out: Path, preset_name: str = "demo", *, n_patients: int | None = None, seed: int | None = None,
                    spect_times_h: list[float] | None = None, workers: int | None = None, overwrite: bool = False,
                    progress: Progress | None = None, scheduler: str | None = None, executor=None) -> Path:
    """Write one case directory per virtual patient into ``out`` (atomically) and a cohort.json; ``scheduler``
    (or an open ``executor``) runs the patients on a Dask cluster (psmadose.executors), else local processes."""
    from ..executors import check_options, open_executor

    if executor is None:
        check_options(scheduler, workers)
    tasks = plan_cohort(preset_name, n_patients, seed)
    if spect_times_h is not None:
        if not spect_times_h or any(not (0 < t <= 2000) for t in spect_times_h):
            raise InputError("--spect-times must be hours after injection in (0, 2000], e.g. 4,24,96")
    from .. import __version__
    from ..features.table import available_workers

    with contextlib.ExitStack() as stack:
        tmp = stack.enter_context(atomic_output_dir(out, overwrite))
        if executor is None:
            if scheduler is None:
                workers = min(available_workers(workers), len(tasks))  # refuses --workers 0 or negative
            executor = stack.enter_context(open_executor(scheduler, workers))
        executor.check_locality((), tmp)
        for task in tasks:
            task["out"] = str(tmp)
            task["spect_times_h"] = spect_times_h
        results = executor.run(build_case, tasks, progress=progress, name="simulate",
                               names=[t["patient_id"] for t in tasks])
        for leftover in tmp.glob(".*.partial-*"):  # attempts whose worker was killed (redone elsewhere)
            shutil.rmtree(leftover, ignore_errors=True)
        preset = PRESETS[preset_name]
        cohort = {"preset": asdict(preset), "n_patients": len(tasks), "seed": tasks[0]["seed"],
                  "n_tumours": sum(r["n_lesions"] for r in results), "psmadose_version": __version__,
                  "spect_times_h": spect_times_h,
                  "note": "virtual patients from the psmadose simulator; not clinical data"}
        (tmp / "cohort.json").write_text(json.dumps(cohort, indent=2) + "\n", encoding="utf-8")
    return Path(out)
