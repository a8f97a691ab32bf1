"""The feature table: one row per recognised segment, identification columns first."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from ..case import Case, read_case
from ..errors import CancelledError, InputError
from ..files import read_json
from .concentration import resolution_mm, tissue_concentration
from .patient import burden_features, clinical_features, ratio_features
from .uptake import segment_uptake

log = logging.getLogger(__name__)

ID_COLUMNS = ("case_id", "segment", "structure_type")
FEATURE_FAMILIES = ("uptake", "patient", "clinical", "radiomics")


def extract_features(case: Case, radiomics_params: Path | str | None = None,
                     radiomics_workers: int | None = None) -> pd.DataFrame:
    """Features of every segment of a case (reference organs included: they describe the patient).

    With ``radiomics_params`` (a pyradiomics settings file), PET/CT radiomics columns are added, computed by
    ``radiomics_workers`` processes (default serial: cohorts are already parallel across cases).
    """
    spacing_kji = tuple(case.pet.GetSpacing()[::-1])
    ct = case.ct_on_pet_grid()
    fwhm_mm, fwhm_source = resolution_mm(case.clinical.pet_tracer, case.clinical.pet_resolution_mm)
    union = np.zeros(case.pet_array.shape, dtype=bool)
    for segment in case.segments:
        union |= segment.mask
    rows = []
    for segment in case.segments:
        row = {"case_id": case.case_id, "segment": segment.name, "structure_type": segment.structure_type.value}
        row.update(segment_uptake(case.pet_array, segment.mask, spacing_kji, ct))
        tissue = tissue_concentration(case.pet_array, segment.mask, spacing_kji, fwhm_mm, union)
        row.update({"suv_tissue": tissue.suv, "uptake_method": tissue.method,
                    # A segment far smaller than what the PET resolves gives a tissue uptake many times its SUVmax:
                    # the domain check compares this ratio with training (not a model input).
                    "suv_tissue_to_max": tissue.suv / row["suv_max"] if row["suv_max"] > 0 else float("nan"),
                    "tissue_volume_ml": tissue.volume_ml, "background_suv": tissue.background_suv,
                    "pet_resolution_mm": fwhm_mm, "pet_resolution_source": fwhm_source})
        rows.append(row)
    burden = burden_features(rows)
    clinical = clinical_features(case.clinical)
    for row in rows:
        row.update(ratio_features(row, burden))
        row.update(burden)
        row.update(clinical)
    table = pd.DataFrame(rows)
    if radiomics_params is not None:
        from .radiomics import RadiomicsExtractor

        radiomics = RadiomicsExtractor(radiomics_params).extract_case(case, workers=radiomics_workers,
                                                                      ct_on_pet_grid=ct)
        table = table.merge(radiomics, on="segment", how="left", validate="one_to_one")
    return table


def _case_features(args: tuple) -> tuple[pd.DataFrame, dict[str, float] | None]:
    directory, require_doses, radiomics_params = args[:3]
    labels = args[3] if len(args) > 3 else True  # False: the features alone (psmadose features over a cohort)
    case = read_case(Path(directory), require_doses=require_doses)
    frame = extract_features(case, radiomics_params)
    if not labels:
        return frame, None
    oracle = simulator_oracle(Path(directory))
    if oracle:
        frame["oracle_gy_per_gbq"] = frame["segment"].map(oracle)
    return frame, case.reference_doses


def simulator_oracle(directory: Path) -> dict[str, float]:
    """Oracle doses of a virtual patient (simulation.json), for judging models against the floor."""
    path = directory / "simulation.json"
    if not path.is_file():
        return {}
    truth = read_json(path, "simulation.json")
    if not isinstance(truth, dict):
        return {}
    return {s["name"]: s["oracle_gy_per_gbq"] for s in truth.get("structures", []) if s.get("oracle_gy_per_gbq")}


def list_cases(cohort: Path) -> list[Path]:
    cohort = Path(cohort)
    if not cohort.is_dir():
        raise InputError(f"{cohort}: cohort directory not found")
    cases = sorted(p for p in cohort.iterdir() if p.is_dir() and (p / "clinical.json").is_file())
    if not cases:
        raise InputError(f"{cohort}: no case directories (folders holding clinical.json) found")
    return cases


def features_for_cases(cases: Sequence[Path], *, require_doses: bool = False, workers: int = 1,
                       progress: Callable[[int, int], bool | None] | None = None,
                       radiomics_params: Path | str | None = None, executor=None, labels: bool = True) -> pd.DataFrame:
    """Feature table of many cases, with a ``reference_gy_per_gbq`` column when doses are present (``labels``).

    One task per case on ``executor`` (psmadose.executors: a Dask cluster), else ``workers`` local processes; the
    rows are in case order whatever order the cases complete in.
    """
    from ..executors import LocalExecutor

    params = str(Path(radiomics_params).absolute()) if radiomics_params is not None else None
    tasks = [(str(Path(c).absolute()), require_doses, params, labels) for c in cases]
    if executor is None:
        executor = LocalExecutor(workers if len(tasks) > 1 else 1)
    executor.check_locality([Path(c) for c in cases] + ([Path(params)] if params else []))
    frames = []
    for frame, doses in executor.run(_case_features, tasks, progress=_cancellable(progress), name="features",
                                     names=[Path(c).name for c in cases]):
        if doses is not None:
            frame["reference_gy_per_gbq"] = frame["segment"].map(doses)
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def _cancellable(progress):
    if progress is None:
        return None

    def call(done: int, total: int):
        if progress(done, total) is False:
            raise CancelledError("feature extraction cancelled")
        return True

    return call


def available_workers(requested: int | None) -> int:
    if requested is not None and requested < 1:
        raise InputError(f"--workers must be >= 1, got {requested}")
    return requested or os.cpu_count() or 1


def radiomics_params_if_available(requested: bool = True) -> Path | None:
    """The default radiomics settings when radiomics are wanted and pyradiomics is installed, else None."""
    if not requested:
        return None
    from .radiomics import DEFAULT_PARAMS_PATH, available

    if not available():
        log.warning("pyradiomics is not installed: uptake, patient and clinical features only "
                    "(pip install psmadose[radiomics] adds PET/CT radiomics)")
        return None
    return DEFAULT_PARAMS_PATH
