"""Does a predicted dose depend on how the image was made? Measured, per structure type.

``psmadose robustness`` renders held-out virtual patients (seeds never used for training) once as a reference
(4 mm voxels, the tracer's resolution and noise, exact contours) and again with one thing changed that does not
change any true dose, predicts every rendering with the model, and reports per structure type:

a. **elasticity** of the predicted dose to a PET scale: the whole PET x1.1 (``pet x1.1``) and the structure's own
   uptake x1.1 (the true uptake of every structure of that type raised before image formation): ideal 1;
b. **image formation**: noise x0.5 / x2, resolution 5 / 8 mm FWHM (not stated in clinical.json: the tracer
   default is assumed), voxels 2 / 3 / 5 mm: relative change of the predicted dose, ideal 0;
c. **contours** one voxel loose or tight (organs), lesions thresholded on PET at 42 % of SUVmax;
d. **textbook phantoms** built outside the simulator (``psmadose.phantom``): predicted Gy/GBq per organ over
   blurs 0-10 mm, textures, voxel sizes and noise, and the max/min ratio per organ.

Figures are on virtual patients and phantoms, not on patients. The model card of the bundled model records them.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

from .errors import CancelledError, InputError
from .parallel import process_pool

SCALE = 1.1
VARIANTS: dict[str, dict] = {
    "noise x0.5": {"imaging": {"noise_scale": 0.5}},
    "noise x2": {"imaging": {"noise_scale": 2.0}},
    "PSF 5 mm": {"imaging": {"fwhm_mm": 5.0}},
    "PSF 8 mm": {"imaging": {"fwhm_mm": 8.0}},
    "voxels 2 mm": {"spacing_mm": 2.0},
    "voxels 3 mm": {"spacing_mm": 3.0},
    "voxels 5 mm": {"spacing_mm": 5.0},
    "organs 1 voxel loose": {"imaging": {"organ_contour_voxels": 1}},
    "organs 1 voxel tight": {"imaging": {"organ_contour_voxels": -1}},
    "lesions PET 42 %": {"imaging": {"lesion_threshold": 0.42}},
}
IMAGE_FORMATION = ("noise x0.5", "noise x2", "PSF 5 mm", "PSF 8 mm", "voxels 2 mm", "voxels 3 mm", "voxels 5 mm")
CONTOURS = ("organs 1 voxel loose", "organs 1 voxel tight")
DOSE_TYPES = ("tumour", "kidney", "parotid", "submandibular", "lacrimal")
DEFAULT_SEED = 4242  # never used by a training or validation preset


def _case_from_rendering(patient, rendered, case_id: str):
    import SimpleITK as sitk

    from .case import Case, Segment
    from .clinical import validate_clinical
    from .structures import StructureType

    clinical, _ = validate_clinical(dict(patient.clinical), source=f"{case_id} clinical")
    kinds = {s.name: s.kind for s in patient.structures}
    segments = [Segment(name, StructureType(kinds[name]), mask, (1.0, 0.0, 0.0))
                for name, mask in rendered.masks.items()]
    pet_array = sitk.GetArrayFromImage(rendered.pet)
    return Case(case_id, rendered.pet, pet_array, segments, clinical)


def _predict(model_set, case) -> dict[str, tuple[str, float]]:
    from .features.table import extract_features

    predicted = model_set.predict(extract_features(case))
    return {row.segment: (row.structure_type, float(row.predicted_gy_per_gbq)) for row in predicted.itertuples()}


def _scaled_pet(case, factor: float):
    import SimpleITK as sitk

    array = case.pet_array * np.float32(factor)
    pet = sitk.GetImageFromArray(array)
    pet.CopyInformation(case.pet)
    return replace(case, pet=pet, pet_array=array)


def patient_rows(task: dict) -> list[dict]:
    """Predictions of one virtual patient under every variant (runs in a worker process)."""
    from .modelfile import load_model
    from .simulate.patient import sample_patient
    from .simulate.render import Grid, Imaging, render

    loaded = load_model(task["model_path"], trust=task["trust"])
    seed_seq = np.random.SeedSequence(entropy=task["seed"], spawn_key=(task["index"],))
    patient = sample_patient(seed_seq, f"rb{task['index']:03d}")
    patient.seed = int(seed_seq.generate_state(1)[0])
    truth = {s.name: s.dose_gy_per_gbq for s in patient.structures}

    def run(imaging: Imaging, spacing_mm: float, label: str, source=patient):
        rendered = render(source, pet_grid=Grid.body((spacing_mm,) * 3), imaging=imaging)
        return _case_from_rendering(source, rendered, f"{patient.patient_id}-{label}")

    reference_case = run(Imaging(), 4.0, "reference")
    reference = _predict(loaded.model_set, reference_case)
    rows = []

    def record(variant: str, predictions: dict):
        for segment, (kind, dose) in predictions.items():
            if segment in reference:
                rows.append({"patient": patient.patient_id, "segment": segment, "structure_type": kind,
                             "variant": variant, "reference_gy_per_gbq": reference[segment][1],
                             "predicted_gy_per_gbq": dose, "true_gy_per_gbq": truth.get(segment, math.nan)})

    record("reference", reference)
    record(f"pet x{SCALE:g}", _predict(loaded.model_set, _scaled_pet(reference_case, SCALE)))
    for name, change in VARIANTS.items():
        imaging = Imaging(**change.get("imaging", {}))
        record(name, _predict(loaded.model_set, run(imaging, change.get("spacing_mm", 4.0), name)))
    for kind in DOSE_TYPES:
        scaled = _with_uptake_scaled(patient, kind, SCALE)
        predictions = _predict(loaded.model_set, run(Imaging(), 4.0, f"own-{kind}", scaled))
        record(f"own uptake x{SCALE:g}", {s: v for s, v in predictions.items() if v[0] == kind})
    return rows


def _with_uptake_scaled(patient, kind: str, factor: float):
    import copy

    scaled = copy.deepcopy(patient)
    for s in scaled.structures:
        if s.kind == kind:
            s.pet_suv_true *= factor
    return scaled


def summarise_patients(rows: pd.DataFrame) -> dict:
    """Per structure type: elasticities and relative changes per variant (see the module docstring)."""
    out = {}
    for kind, group in rows.groupby("structure_type"):
        entry = {}
        for variant, sub in group.groupby("variant"):
            if variant == "reference":
                continue
            ratio = sub["predicted_gy_per_gbq"].to_numpy() / sub["reference_gy_per_gbq"].to_numpy()
            if variant.startswith(("pet x", "own uptake x")):
                elasticity = np.log(ratio) / math.log(SCALE)
                entry[variant] = {"n": int(len(ratio)), "elasticity_median": float(np.median(elasticity)),
                                  "elasticity_min": float(elasticity.min()), "elasticity_max": float(elasticity.max())}
            else:
                change = np.abs(ratio - 1.0)
                entry[variant] = {"n": int(len(ratio)), "median_abs_change": float(np.median(change)),
                                  "p90_abs_change": float(np.quantile(change, 0.9)),
                                  "median_signed_change": float(np.median(ratio - 1.0))}
        reference = group[group["variant"] == "reference"]
        truth = reference["true_gy_per_gbq"].to_numpy()
        ok = np.isfinite(truth) & (truth > 0)
        if ok.any():
            entry["reference_mape_vs_truth"] = float(np.mean(
                np.abs(reference["predicted_gy_per_gbq"].to_numpy()[ok] - truth[ok]) / truth[ok]))
        out[str(kind)] = entry
    return out


def phantom_summary(model_set) -> dict:
    """Predicted Gy/GBq per phantom organ over every rendering, resolution unknown and stated."""
    from .phantom import RENDERINGS, build_phantom

    out = {}
    for known in (False, True):
        per_rendering = []
        for rendering in RENDERINGS:
            predictions = _predict(model_set, build_phantom(rendering, resolution_known=known))
            per_rendering.append({"rendering": rendering.label,
                                  "predicted_gy_per_gbq": {s: v[1] for s, v in predictions.items()}})
        organs = {}
        for segment in per_rendering[0]["predicted_gy_per_gbq"]:
            values = np.array([r["predicted_gy_per_gbq"][segment] for r in per_rendering])
            organs[segment] = {"min": float(values.min()), "max": float(values.max()),
                               "max_over_min": float(values.max() / values.min())}
        out["resolution_stated" if known else "resolution_unknown"] = {"organs": organs,
                                                                       "renderings": per_rendering}
    return out


def run_robustness(*, model_path: Path | None = None, trust_model: bool = False, n_patients: int = 20,
                   seed: int = DEFAULT_SEED, workers: int = 1,
                   progress: Callable[[int, int], bool | None] | None = None) -> dict:
    from .modelfile import load_model

    if n_patients < 1 or n_patients > 500:
        raise InputError(f"--patients must be 1-500, got {n_patients}")
    loaded = load_model(model_path, trust=trust_model)  # fail early on a bad model file
    tasks = [{"index": i, "seed": seed, "model_path": str(model_path) if model_path else None, "trust": trust_model}
             for i in range(n_patients)]
    rows: list[dict] = []

    def collect(result, done):
        rows.extend(result)
        if progress and progress(done, len(tasks) + 1) is False:
            raise CancelledError("robustness check cancelled")

    if workers <= 1:
        for n, task in enumerate(tasks, start=1):
            collect(patient_rows(task), n)
    else:
        # Workers predict with the model (OpenMP in scikit-learn's trees): a forked child of a process that has
        # already used OpenMP can deadlock in libgomp, so workers are spawned fresh.
        with process_pool(workers, spawn=True) as pool:
            for n, result in enumerate(pool.map(patient_rows, tasks), start=1):
                collect(result, n)
    table = pd.DataFrame(rows)
    report = {
        "measured_on": f"{n_patients} held-out virtual patients (seed {seed}) and textbook phantoms "
                       "(psmadose.phantom); not clinical data",
        "model_id": loaded.model_id,
        "reference_rendering": "4 mm voxels, the tracer's PSF and noise, exact contours",
        "per_structure_type": summarise_patients(table),
        "phantoms": phantom_summary(loaded.model_set),
    }
    if progress:
        progress(len(tasks) + 1, len(tasks) + 1)
    return report


def summary_lines(report: dict) -> list[str]:
    """A compact text table of the report (the CLI prints it)."""
    lines = [f"Robustness of {report['model_id']} ({report['measured_on']})",
             f"{'structure':<14}{'elast. own':>11}{'elast. PET':>11}"
             + "".join(f"{v[:12]:>13}" for v in IMAGE_FORMATION + CONTOURS)]
    for kind, entry in report["per_structure_type"].items():
        own = entry.get(f"own uptake x{SCALE:g}", {}).get("elasticity_median", math.nan)
        pet = entry.get(f"pet x{SCALE:g}", {}).get("elasticity_median", math.nan)
        cells = "".join(f"{100 * entry[v]['median_abs_change']:6.1f}/{100 * entry[v]['p90_abs_change']:4.1f}%"
                        if v in entry else f"{'':>13}" for v in IMAGE_FORMATION + CONTOURS)
        lines.append(f"{kind:<14}{own:>11.2f}{pet:>11.2f}{cells}")
    lines.append("changes: median/p90 of |predicted / reference - 1|")
    for key, block in report["phantoms"].items():
        organs = ", ".join(f"{s} {o['min']:.2f}-{o['max']:.2f} (x{o['max_over_min']:.2f})"
                           for s, o in block["organs"].items() if not s.startswith("lesion"))
        lines.append(f"phantoms, {key.replace('_', ' ')}: {organs} Gy/GBq")
    return lines


def write_report(report: dict, out: Path, overwrite: bool = False) -> None:
    from .outputs import atomic_output_dir

    with atomic_output_dir(out, overwrite) as tmp:
        (tmp / "robustness.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        (tmp / "robustness.txt").write_text("\n".join(summary_lines(report)) + "\n", encoding="utf-8")
