"""Batch prediction over a folder of cases: one output folder per case and a summary CSV.

A case that fails with bad input is reported in the summary and does not stop the others.
"""

from __future__ import annotations

import contextlib
import csv
import shutil
from pathlib import Path

from .errors import InputError
from .features.table import available_workers, list_cases
from .outputs import atomic_output_dir, check_output_dir, csv_cell

_MODELS: dict = {}  # per worker process: a long-lived worker (Dask) loads and verifies a model once


def _model(model_path: str | None, trust: bool):
    from .modelfile import load_model

    place = Path(model_path) if model_path else None
    stamp = None
    if place is not None:  # a model folder changed on disk is loaded (and verified) again
        folder = place if place.is_dir() else place.parent
        stamp = tuple(sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in folder.iterdir()))
    key = (model_path, trust, stamp)
    if key not in _MODELS:
        _MODELS.clear()
        _MODELS[key] = load_model(place, trust=trust)
    return _MODELS[key]


def _predict_one(task: tuple[str, str, str | None, bool]) -> dict:
    import tempfile

    from .case import read_case
    from .predict import predict_case, write_prediction

    case_dir, out_dir, model_path, trust = task
    case_id = Path(case_dir).name
    staging = None
    try:
        loaded = _model(model_path, trust)
        case = read_case(Path(case_dir))
        result = predict_case(case, loaded)
        # A staging folder per attempt: a task rerun after its worker died never meets the first attempt's
        # leftovers (and never recreates an output folder that a cancelled run removed).
        staging = Path(tempfile.mkdtemp(prefix=f".{case_id}.partial-", dir=Path(out_dir).parent))
        write_prediction(staging, case, result, loaded)
        if Path(out_dir).exists():  # a previous attempt completed but its worker died before reporting
            shutil.rmtree(out_dir)
        staging.rename(out_dir)  # a case folder appears only when complete
        return {"case_id": case_id, "status": "ok", "n_segments": len(result.predictions),
                "message": "; ".join(result.warnings)}
    except InputError as exc:
        return {"case_id": case_id, "status": "error", "n_segments": 0, "message": str(exc)}
    except Exception as exc:  # noqa: BLE001 - one broken case must not stop the cohort
        return {"case_id": case_id, "status": "internal error", "n_segments": 0,
                "message": f"{type(exc).__name__}: {exc}"}
    finally:
        if staging is not None and staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


def lost_case(case_dirs: list[Path]):
    """on_error of the executor: a case whose task could not finish (e.g. it killed every worker it ran on)."""

    def record(index: int, exc: BaseException) -> dict:
        return {"case_id": case_dirs[index].name, "status": "internal error", "n_segments": 0,
                "message": f"the task failed on the cluster ({type(exc).__name__}: {exc}); out of memory on the "
                           "worker? see docs/CLUSTER.md"}

    return record


def remove_partials(directory: Path) -> None:
    """Staging folders left by attempts whose worker was killed (their case was redone elsewhere)."""
    for leftover in Path(directory).glob(".*.partial-*"):
        shutil.rmtree(leftover, ignore_errors=True)


def run_batch(cases: Path, out: Path, *, model_path: Path | None = None, trust_model: bool = False,
              workers: int | None = None, overwrite: bool = False, progress=None, scheduler: str | None = None,
              executor=None) -> dict:
    """Predict every case of ``cases`` into ``out``; ``scheduler`` (or an open ``executor``) runs the cases on a
    Dask cluster (see psmadose.executors), else local processes."""
    from .executors import check_options, open_executor
    from .modelfile import load_model

    check_output_dir(out, overwrite, inputs=(cases,))
    if executor is None:
        check_options(scheduler, workers)
    load_model(model_path, trust=trust_model)  # fail once, early, on a bad model
    case_dirs = list_cases(cases)
    if executor is None and scheduler is None:
        workers = min(available_workers(workers), len(case_dirs))
    with contextlib.ExitStack() as stack:
        tmp = stack.enter_context(atomic_output_dir(out, overwrite, inputs=(cases,)))
        if executor is None:  # entered after the output: on an error its workers stop before the output is removed
            executor = stack.enter_context(open_executor(scheduler, workers))
        inputs = [cases] + ([model_path] if model_path else [])
        executor.check_locality(inputs, tmp)
        tasks = [(str(c.absolute()), str(tmp / c.name), str(Path(model_path).absolute()) if model_path else None,
                  trust_model) for c in case_dirs]
        results = executor.run(_predict_one, tasks, progress=progress, on_error=lost_case(case_dirs),
                               name="predict", names=[c.name for c in case_dirs])
        remove_partials(tmp)
        summary = write_batch_summary(tmp / "batch_summary.csv", results)
    return summary


def failure_line(summary: dict, out: Path, summary_name: str = "batch_summary.csv", nouns=("case(s)", "cases")) -> str:
    """The one 'error:' line of a batch with failed cases (the successful ones are in ``out``)."""
    first = summary["first_failure"]
    message = " ".join(str(first["message"]).split())[:300]
    return (f"error: {summary['failed']} of {summary['succeeded'] + summary['failed']} {nouns[0]} failed (first: "
            f"{first['case_id']}: {message}); the others are in {out}; see {summary_name}, fix those {nouns[1]} "
            "and rerun them")


def write_batch_summary(path: Path, results: list[dict]) -> dict:
    """batch_summary.csv (case_id, status, n_segments, message) and the counts of successes and failures."""
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=["case_id", "status", "n_segments", "message"])
        writer.writeheader()
        writer.writerows({key: csv_cell(value) for key, value in row.items()} for row in results)
    failures = [r for r in results if r["status"] != "ok"]
    return {"succeeded": len(results) - len(failures), "failed": len(failures),
            "first_failure": failures[0] if failures else None}
