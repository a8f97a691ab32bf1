"""Post-therapy dosimetry of a folder of studies: one task per study (local processes or a Dask cluster, as
``psmadose batch``), OUT/<study>/ as for one study, ``dosimetry_summary.csv`` and ``reference_doses.csv``.

A study that fails with bad input is reported in the summary and does not stop the others (exit 2 with one
``error:`` line naming the first, as batch). ``into``: a cohort of cases; every study's reference doses go into
the case folder of the same name (``CASE/doses.csv``), so ``psmadose train`` / ``evaluate`` can use them.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from dataclasses import asdict
from pathlib import Path

from ..errors import InputError
from .run import Settings, check_into, compute, reference_doses, write_into_case, write_outputs
from .study import looks_like_study

SUMMARY = "dosimetry_summary.csv"
REFERENCE_TABLE = "reference_doses.csv"


def list_studies(folder: Path) -> list[Path]:
    """The study folders of a cohort folder (sub-folders holding spect_<HOURS>h time points), sorted by name."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{folder}: not a directory; give a STUDY folder or a folder of study folders")
    studies = sorted(p for p in folder.iterdir() if p.is_dir() and looks_like_study(p))
    for study in studies:
        if study.name in (SUMMARY, REFERENCE_TABLE) or study.name.startswith("."):
            raise InputError(f"{study}: a study folder may not be named {study.name!r} (an output file of the "
                             "cohort has that name, or it is hidden); rename the folder")
    if not studies:
        raise InputError(f"{folder}: no study folders (sub-folders holding spect_<HOURS>h time points); give a "
                         "STUDY folder or a folder of them")
    return studies


def is_cohort(folder: Path) -> bool:
    """A folder of studies rather than one study."""
    folder = Path(folder)
    if not folder.is_dir() or looks_like_study(folder):
        return False
    return any(p.is_dir() and looks_like_study(p) for p in folder.iterdir())


def _study_one(task: tuple[str, str, dict]) -> dict:
    study_dir, out_dir, settings = task
    study_id = Path(study_dir).name
    row = {"case_id": study_id, "status": "ok", "n_segments": 0, "message": "", "doses": [], "activity_gbq": None}
    staging = None
    try:
        result = compute(Path(study_dir), Settings(**settings))
        # A staging folder per attempt (as batch): a task rerun after its worker died never meets leftovers.
        staging = Path(tempfile.mkdtemp(prefix=f".{study_id}.partial-", dir=Path(out_dir).parent))
        write_outputs(result, staging)
        if Path(out_dir).exists():  # a previous attempt completed but its worker died before reporting
            shutil.rmtree(out_dir)
        staging.rename(out_dir)
        row["n_segments"] = len(result.segments)
        row["activity_gbq"] = result.study.activity_gbq
        row["doses"] = [(s.name, s.structure_type, s.absorbed_dose_gy, s.dose_sd_gy, s.tia.model)
                        for s in result.segments]
        row["reference"] = reference_doses(result)
        return row
    except InputError as exc:
        return {**row, "status": "error", "message": str(exc)}
    except Exception as exc:  # noqa: BLE001 - one broken study must not stop the cohort
        return {**row, "status": "internal error", "message": f"{type(exc).__name__}: {exc}"}
    finally:
        if staging is not None and staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


def _check_cases(studies: list[Path], into: Path, overwrite: bool) -> dict[str, Path]:
    into = Path(into)
    if not into.is_dir():
        raise InputError(f"--into {into}: not a cohort directory; give the folder of case folders")
    cases = {}
    for study in studies:
        case = into / study.name
        if not (case / "clinical.json").is_file():
            raise InputError(f"--into {into}: no case folder {study.name}/ (with clinical.json) for study "
                             f"{study}; name each study as its case, or leave out --into")
        cases[study.name] = check_into(case, overwrite)
    return cases


def _write_reference_table(path: Path, rows: list[dict]) -> None:
    import pandas as pd

    from ..outputs import write_csv_table

    records = [{"case_id": r["case_id"], "segment": name, "structure_type": stype,
                "reference_gy_per_gbq": dose / r["activity_gbq"], "absorbed_dose_gy": dose, "uncertainty_gy": sd,
                "fit_model": model, "activity_gbq": r["activity_gbq"]}
               for r in rows if r["status"] == "ok" for name, stype, dose, sd, model in r["doses"]]
    columns = ["case_id", "segment", "structure_type", "reference_gy_per_gbq", "absorbed_dose_gy", "uncertainty_gy",
               "fit_model", "activity_gbq"]
    write_csv_table(pd.DataFrame(records, columns=columns), path)


def run_dosimetry_cohort(folder: Path, out: Path, settings: Settings | None = None, *, into: Path | None = None,
                         overwrite: bool = False, workers: int | None = None, scheduler: str | None = None,
                         executor=None, progress=None) -> dict:
    """Dosimetry of every study of ``folder`` into ``out``; returns the summary counts (as ``batch``)."""
    from ..batch import lost_case, remove_partials, write_batch_summary
    from ..executors import check_options, open_executor
    from ..features.table import available_workers
    from ..outputs import atomic_output_dir, check_output_dir

    settings = settings or Settings()
    settings.check()
    inputs = (folder,) + ((into,) if into else ())
    check_output_dir(Path(out), overwrite, inputs=inputs)
    if executor is None:
        check_options(scheduler, workers)
    studies = list_studies(folder)
    cases = _check_cases(studies, into, overwrite) if into is not None else {}
    if executor is None and scheduler is None:
        workers = min(available_workers(workers), len(studies))
    with contextlib.ExitStack() as stack:
        tmp = stack.enter_context(atomic_output_dir(Path(out), overwrite, inputs=inputs))
        if executor is None:  # entered after the output: on an error its workers stop before the output is removed
            executor = stack.enter_context(open_executor(scheduler, workers))
        executor.check_locality([Path(folder)], tmp)
        tasks = [(str(s.absolute()), str(tmp / s.name), asdict(settings)) for s in studies]
        rows = executor.run(_study_one, tasks, progress=progress, on_error=lost_case(studies), name="dosimetry",
                            names=[s.name for s in studies])
        remove_partials(tmp)
        summary = write_batch_summary(tmp / SUMMARY, [{k: r[k] for k in ("case_id", "status", "n_segments", "message")}
                                                      for r in rows])
        _write_reference_table(tmp / REFERENCE_TABLE, rows)
        for row in rows:
            if row["status"] == "ok" and row["case_id"] in cases:
                write_into_case(row["reference"], cases[row["case_id"]], overwrite)
    summary["written_into"] = sum(1 for r in rows if r["status"] == "ok" and r["case_id"] in cases)
    return summary
