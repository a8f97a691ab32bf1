"""Batch prediction over a folder of cases: one output folder per case and a summary CSV.

A case that fails with bad input is reported in the summary and does not stop the others.
"""

from __future__ import annotations

import contextlib
import csv
import shutil
from pathlib import Path

from .errors import CancelledError, InputError
from .features.table import available_workers, list_cases
from .outputs import atomic_output_dir, check_output_dir, csv_cell
from .parallel import process_pool


def _predict_one(task: tuple[str, str, str | None, bool]) -> dict:
    from .case import read_case
    from .modelfile import load_model
    from .predict import predict_case, write_prediction

    case_dir, out_dir, model_path, trust = task
    case_id = Path(case_dir).name
    staging = Path(out_dir).with_name(f".{case_id}.partial")
    try:
        loaded = load_model(Path(model_path) if model_path else None, trust=trust)
        case = read_case(Path(case_dir))
        result = predict_case(case, loaded)
        staging.mkdir()
        write_prediction(staging, case, result, loaded)
        staging.rename(out_dir)  # a case folder appears only when complete
        return {"case_id": case_id, "status": "ok", "n_segments": len(result.predictions),
                "message": "; ".join(result.warnings)}
    except InputError as exc:
        return {"case_id": case_id, "status": "error", "n_segments": 0, "message": str(exc)}
    except Exception as exc:  # noqa: BLE001 - one broken case must not stop the cohort
        return {"case_id": case_id, "status": "internal error", "n_segments": 0,
                "message": f"{type(exc).__name__}: {exc}"}
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


def run_batch(cases: Path, out: Path, *, model_path: Path | None = None, trust_model: bool = False,
              workers: int | None = None, overwrite: bool = False, progress=None) -> dict:
    from .modelfile import load_model

    check_output_dir(out, overwrite, inputs=(cases,))
    load_model(model_path, trust=trust_model)  # fail once, early, on a bad model
    case_dirs = list_cases(cases)
    workers = min(available_workers(workers), len(case_dirs))
    with atomic_output_dir(out, overwrite, inputs=(cases,)) as tmp:
        tasks = [(str(c), str(tmp / c.name), str(model_path) if model_path else None, trust_model) for c in case_dirs]
        results = []
        with contextlib.ExitStack() as stack:
            if workers <= 1:
                iterator = map(_predict_one, tasks)
            else:
                iterator = stack.enter_context(process_pool(workers)).map(_predict_one, tasks)
            for result in iterator:
                results.append(result)
                if progress and progress(len(results), len(tasks)) is False:
                    raise CancelledError("batch cancelled")
        summary = write_batch_summary(tmp / "batch_summary.csv", results)
    return summary


def failure_line(summary: dict, out: Path) -> str:
    """The one 'error:' line of a batch with failed cases (the successful ones are in ``out``)."""
    first = summary["first_failure"]
    message = " ".join(str(first["message"]).split())[:300]
    return (f"error: {summary['failed']} of {summary['succeeded'] + summary['failed']} case(s) failed (first: "
            f"{first['case_id']}: {message}); the others are in {out}; see batch_summary.csv, fix those cases "
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
