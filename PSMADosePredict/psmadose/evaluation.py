"""Evaluation of a model on a cohort with reference doses: metrics.json and report.html.

Metrics are keyed by structure type and by model group; fractions, not percent. ``baseline_mape`` is the
population-mean baseline (the training mean of the structure type, from the model). Every figure is
measured on the cohort given and the report says so.
"""

from __future__ import annotations

import html
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

from .features.table import available_workers, features_for_cases, list_cases
from .metrics import coverage, dose_metrics
from .model import GROUP_STRUCTURE_TYPES
from .modelfile import load_model
from .outputs import atomic_output_dir, check_output_dir


def evaluation_metrics(predicted: pd.DataFrame, population_means: dict) -> dict:
    metrics = {}
    keys = [(t, predicted["structure_type"] == t) for t in sorted(predicted["structure_type"].unique())]
    keys += [(g, predicted["structure_type"].isin(types)) for g, types in GROUP_STRUCTURE_TYPES.items()
             if len(types) > 1]
    for key, selection in keys:
        rows = predicted[selection]
        if rows.empty:
            continue
        ref = rows["reference_gy_per_gbq"].to_numpy(dtype=float)
        pred = rows["predicted_gy_per_gbq"].to_numpy(dtype=float)
        entry = dose_metrics(ref, pred)
        entry["n_patients"] = int(rows["case_id"].nunique())
        baseline = rows["structure_type"].map(population_means).to_numpy(dtype=float)
        entry["baseline_mape"] = float(np.mean(np.abs(baseline - ref) / ref)) if np.isfinite(baseline).all() \
            else math.nan
        for level in ("80", "90"):
            entry[f"coverage_{level}"] = coverage(ref, rows[f"interval_{level}_low_gy_per_gbq"].to_numpy(),
                                                  rows[f"interval_{level}_high_gy_per_gbq"].to_numpy())
        entry["out_of_domain_fraction"] = float(1 - rows["in_domain"].mean())
        if "oracle_gy_per_gbq" in rows and rows["oracle_gy_per_gbq"].notna().all():
            entry["oracle_mape"] = dose_metrics(ref, rows["oracle_gy_per_gbq"].to_numpy(dtype=float))["mape"]
        metrics[key] = entry
    return metrics


def _scatter_png(path: Path, predicted: pd.DataFrame) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    groups = [g for g in GROUP_STRUCTURE_TYPES if predicted["structure_type"].isin(GROUP_STRUCTURE_TYPES[g]).any()]
    figure = Figure(figsize=(4.2 * len(groups), 4.0), dpi=90)
    FigureCanvasAgg(figure)
    for n, group in enumerate(groups, start=1):
        axes = figure.add_subplot(1, len(groups), n)
        rows = predicted[predicted["structure_type"].isin(GROUP_STRUCTURE_TYPES[group])]
        ref, pred = rows["reference_gy_per_gbq"], rows["predicted_gy_per_gbq"]
        axes.loglog(ref, pred, ".", alpha=0.5, markersize=4)
        low, high = float(min(ref.min(), pred.min())) * 0.8, float(max(ref.max(), pred.max())) * 1.25
        axes.plot([low, high], [low, high], "k--", linewidth=1)
        axes.set(xlim=(low, high), ylim=(low, high), xlabel="reference (Gy/GBq)", ylabel="predicted (Gy/GBq)",
                 title=f"{group} (n={len(rows)})")
    figure.tight_layout()
    figure.savefig(path)


def evaluate_command(cohort: Path, out: Path, *, model_path: Path | None = None, trust_model: bool = False,
                     workers: int | None = None, overwrite: bool = False, progress=None) -> dict:
    check_output_dir(out, overwrite)
    loaded = load_model(model_path, trust=trust_model)
    table = features_for_cases(list_cases(cohort), require_doses=True, workers=available_workers(workers),
                               progress=progress, radiomics_params=loaded.radiomics_params)
    predicted = loaded.model_set.predict(table)
    keep = ["case_id", "segment", "reference_gy_per_gbq"] + (["oracle_gy_per_gbq"] if "oracle_gy_per_gbq" in table
                                                              else [])
    predicted = predicted.merge(table[keep], on=["case_id", "segment"], how="left")
    predicted = predicted[predicted["reference_gy_per_gbq"].notna()].reset_index(drop=True)
    metrics = evaluation_metrics(predicted, loaded.model_set.population_means)
    document = {"model_id": loaded.model_id, "model_sha256": loaded.sha256, "cohort": str(Path(cohort).name),
                "measured_on": f"cohort {Path(cohort).name} ({predicted['case_id'].nunique()} patients)",
                "metrics": metrics}
    with atomic_output_dir(out, overwrite) as tmp:
        (tmp / "metrics.json").write_text(json.dumps({**metrics, "_about": document}, indent=2) + "\n",
                                          encoding="utf-8")
        predicted.to_csv(tmp / "predictions.csv", index=False, float_format="%.6g")
        _scatter_png(tmp / "predicted_vs_reference.png", predicted)
        rows = "".join(
            f"<tr><td>{html.escape(k)}</td><td>{m['n']}</td><td>{100 * m['mape']:.1f}%</td>"
            f"<td>{100 * m['baseline_mape']:.1f}%</td><td>{m['mae_gy_per_gbq']:.3f}</td><td>{m['r2']:.2f}</td>"
            f"<td>{m['coverage_80']:.2f}</td><td>{m['coverage_90']:.2f}</td>"
            f"<td>{100 * m['oracle_mape']:.1f}%</td></tr>" if "oracle_mape" in m else
            f"<tr><td>{html.escape(k)}</td><td>{m['n']}</td><td>{100 * m['mape']:.1f}%</td>"
            f"<td>{100 * m['baseline_mape']:.1f}%</td><td>{m['mae_gy_per_gbq']:.3f}</td><td>{m['r2']:.2f}</td>"
            f"<td>{m['coverage_80']:.2f}</td><td>{m['coverage_90']:.2f}</td><td>n/a</td></tr>"
            for k, m in metrics.items())
        (tmp / "report.html").write_text(
            "<!doctype html><html><head><meta charset='utf-8'><title>psmadose evaluation</title></head><body>"
            f"<h1>Evaluation of {html.escape(loaded.model_id)}</h1>"
            f"<p><b>Measured on {html.escape(document['measured_on'])}.</b> Research and teaching software; "
            "virtual patients are not clinical data; not clinically validated.</p>"
            "<table border='1' cellpadding='4'><tr><th>structure</th><th>n</th><th>MAPE</th>"
            "<th>population-mean MAPE</th><th>MAE Gy/GBq</th><th>R²</th><th>coverage 80%</th><th>coverage 90%</th>"
            f"<th>oracle floor MAPE</th></tr>{rows}</table>"
            "<p><img src='predicted_vs_reference.png' alt='predicted vs reference'></p></body></html>\n",
            encoding="utf-8")
    return metrics
