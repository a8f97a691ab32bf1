"""Evaluation of a model on a cohort with reference doses: metrics.json and report.html.

Metrics are keyed by structure type and by model group; fractions, not percent. ``baseline_mape`` is the
population-mean baseline (the training mean of the structure type, from the model). Every figure is
measured on the cohort given and the report says so.

Uncertainty of the figures themselves: ``*_ci95`` are patient-level bootstrap 95 % percentile intervals
(patients resampled with replacement, fixed seed), because lesions of one patient are not independent.
``bland_altman`` gives bias and 95 % limits of agreement on log(predicted/reference) and on Gy/GBq.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

from .domain import MULTIVARIATE_REASON
from .features.table import available_workers, features_for_cases, list_cases
from .metrics import bland_altman, bootstrap_dose_metrics, coverage, dose_metrics
from .model import GROUP_STRUCTURE_TYPES
from .modelfile import load_model
from .outputs import atomic_output_dir, check_output_dir, write_csv_table

BOOTSTRAP_RESAMPLES = 1000
BOOTSTRAP_SEED = 20260607


def evaluation_metrics(predicted: pd.DataFrame, population_means: dict, *, n_resamples: int = BOOTSTRAP_RESAMPLES,
                       seed: int = BOOTSTRAP_SEED) -> dict:
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
        if "physics_gy_per_gbq" in rows and np.isfinite(rows["physics_gy_per_gbq"].to_numpy(dtype=float)).all():
            physics = rows["physics_gy_per_gbq"].to_numpy(dtype=float)
            entry["physics_mape"] = float(np.mean(np.abs(physics - ref) / ref))
        for level in ("80", "90"):
            entry[f"coverage_{level}"] = coverage(ref, rows[f"interval_{level}_low_gy_per_gbq"].to_numpy(),
                                                  rows[f"interval_{level}_high_gy_per_gbq"].to_numpy())
        if "interval_stratum" in rows and rows["interval_stratum"].nunique() > 1:
            entry["coverage_by_stratum"] = _coverage_by_stratum(rows)
        entry["out_of_domain_fraction"] = float(1 - rows["in_domain"].mean())
        if "domain_warnings" in rows:
            entry["multivariate_out_of_domain_fraction"] = float(
                rows["domain_warnings"].str.contains(MULTIVARIATE_REASON, regex=False).mean())
        if "oracle_gy_per_gbq" in rows and rows["oracle_gy_per_gbq"].notna().all():
            entry["oracle_mape"] = dose_metrics(ref, rows["oracle_gy_per_gbq"].to_numpy(dtype=float))["mape"]
        entry.update(bootstrap_dose_metrics(ref, pred, rows["case_id"].to_numpy(), n_resamples=n_resamples,
                                            seed=seed, baseline=baseline if np.isfinite(baseline).all() else None))
        entry["bland_altman"] = bland_altman(ref, pred)
        metrics[key] = entry
    return metrics


def _coverage_by_stratum(rows: pd.DataFrame) -> dict:
    """Interval coverage within each calibration stratum (e.g. tumour volume terciles): conditional coverage."""
    out = {}
    for stratum, subset in rows.groupby("interval_stratum", sort=True):
        ref = subset["reference_gy_per_gbq"].to_numpy(dtype=float)
        out[str(stratum)] = {"n": int(len(subset)), **{
            f"coverage_{level}": coverage(ref, subset[f"interval_{level}_low_gy_per_gbq"].to_numpy(),
                                          subset[f"interval_{level}_high_gy_per_gbq"].to_numpy())
            for level in ("80", "90")}}
    return out


def _plain_log_axes(axes, y: bool = True) -> None:
    """Log axes labelled 0.2, 0.5, 1, 2 ... rather than overlapping 2x10^-1 minor labels."""
    from matplotlib.ticker import FormatStrFormatter, LogLocator, NullFormatter

    for axis in (axes.xaxis, axes.yaxis) if y else (axes.xaxis,):
        axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        axis.set_major_formatter(FormatStrFormatter("%g"))
        axis.set_minor_formatter(NullFormatter())


def _scatter_png(path: Path, predicted: pd.DataFrame) -> None:
    """Predicted vs reference per model group, log axes, one colour per structure type, identity line."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    groups = _model_groups(predicted)
    figure = Figure(figsize=(4.2 * len(groups), 4.2), dpi=90)
    FigureCanvasAgg(figure)
    for n, group in enumerate(groups, start=1):
        axes = figure.add_subplot(1, len(groups), n)
        rows = predicted[predicted["structure_type"].isin(GROUP_STRUCTURE_TYPES[group])]
        ref, pred = rows["reference_gy_per_gbq"], rows["predicted_gy_per_gbq"]
        for structure_type in GROUP_STRUCTURE_TYPES[group]:
            subset = rows[rows["structure_type"] == structure_type]
            if not subset.empty:
                axes.loglog(subset["reference_gy_per_gbq"], subset["predicted_gy_per_gbq"], ".", alpha=0.5,
                            markersize=4, label=f"{structure_type} ({len(subset)})")
        low, high = float(min(ref.min(), pred.min())) * 0.8, float(max(ref.max(), pred.max())) * 1.25
        axes.plot([low, high], [low, high], "k--", linewidth=1, label="identity")
        axes.set(xlim=(low, high), ylim=(low, high), xlabel="reference (Gy/GBq)", ylabel="predicted (Gy/GBq)",
                 title=f"{group} (n={len(rows)})")
        _plain_log_axes(axes)
        axes.legend(loc="upper left", fontsize=8)
    figure.tight_layout()
    figure.savefig(path)


def evaluate_command(cohort: Path, out: Path, *, model_path: Path | None = None, trust_model: bool = False,
                     workers: int | None = None, overwrite: bool = False, progress=None,
                     scheduler: str | None = None) -> dict:
    """``scheduler``: the features of each case are computed on a Dask cluster (psmadose.executors); the
    prediction and metrics of the whole table follow here."""
    from .executors import check_options, open_executor

    check_output_dir(out, overwrite, inputs=(cohort,))
    check_options(scheduler, workers)
    loaded = load_model(model_path, trust=trust_model)
    cases = list_cases(cohort)
    with open_executor(scheduler, workers) as executor:
        table = features_for_cases(cases, require_doses=True, workers=available_workers(workers),
                                   progress=progress, radiomics_params=loaded.radiomics_params, executor=executor)
    predicted = loaded.model_set.predict(table)
    keep = ["case_id", "segment", "reference_gy_per_gbq"] + (["oracle_gy_per_gbq"] if "oracle_gy_per_gbq" in table
                                                              else [])
    predicted = predicted.merge(table[keep], on=["case_id", "segment"], how="left")
    predicted = predicted[predicted["reference_gy_per_gbq"].notna()].reset_index(drop=True)
    metrics = evaluation_metrics(predicted, loaded.model_set.population_means)
    document = {"model_id": loaded.model_id, "model_sha256": loaded.sha256, "cohort": str(Path(cohort).name),
                "measured_on": f"cohort {Path(cohort).name} ({predicted['case_id'].nunique()} patients)",
                "metrics": metrics}
    with atomic_output_dir(out, overwrite, inputs=(cohort,)) as tmp:
        (tmp / "metrics.json").write_text(json.dumps({**metrics, "_about": document}, indent=2) + "\n",
                                          encoding="utf-8")
        write_csv_table(predicted, tmp / "predictions.csv")
        _scatter_png(tmp / "predicted_vs_reference.png", predicted)
        _bland_altman_png(tmp / "bland_altman.png", predicted)
        (tmp / "report.html").write_text(_report_html(loaded.model_id, document, metrics), encoding="utf-8")
    return metrics


def _model_groups(predicted: pd.DataFrame) -> list[str]:
    return [g for g in GROUP_STRUCTURE_TYPES if predicted["structure_type"].isin(GROUP_STRUCTURE_TYPES[g]).any()]


def _bland_altman_png(path: Path, predicted: pd.DataFrame) -> None:
    """Per model group: log ratio (top) and Gy/GBq difference (bottom) against the mean, with bias and LoA."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    groups = _model_groups(predicted)
    figure = Figure(figsize=(4.2 * len(groups), 7.6), dpi=90)
    FigureCanvasAgg(figure)
    for n, group in enumerate(groups):
        rows = predicted[predicted["structure_type"].isin(GROUP_STRUCTURE_TYPES[group])]
        ref = rows["reference_gy_per_gbq"].to_numpy(dtype=float)
        pred = rows["predicted_gy_per_gbq"].to_numpy(dtype=float)
        agreement = bland_altman(ref, pred)
        panels = (("log_ratio", np.sqrt(ref * pred), np.log(pred / ref), "geometric mean (Gy/GBq)",
                   "ln(predicted / reference)"),
                  ("gy_per_gbq", (ref + pred) / 2, pred - ref, "mean (Gy/GBq)", "predicted - reference (Gy/GBq)"))
        for row, (key, x, d, xlabel, ylabel) in enumerate(panels):
            axes = figure.add_subplot(2, len(groups), row * len(groups) + n + 1)
            axes.plot(x, d, ".", alpha=0.5, markersize=4)
            if key == "log_ratio":
                axes.set_xscale("log")
                _plain_log_axes(axes, y=False)
            stats = agreement[key]
            axes.axhline(0.0, color="0.6", linewidth=0.8)
            axes.axhline(stats["bias"], color="k", linewidth=1.2, label=f"bias {stats['bias']:.3g}")
            for limit in ("loa_low", "loa_high"):
                axes.axhline(stats[limit], color="k", linestyle="--", linewidth=1)
            axes.set(xlabel=xlabel, ylabel=ylabel,
                     title=f"{group} (n={len(rows)}): LoA {stats['loa_low']:.3g} to {stats['loa_high']:.3g}")
            axes.title.set_fontsize(9)
            axes.legend(loc="best", fontsize=8)
    figure.tight_layout()
    figure.savefig(path)


def _with_ci(m: dict, key: str, digits: int = 1, percent: bool = False) -> dict:
    """A metric and its bootstrap 95% CI as text cells ("n/a" when missing); the template lays them out."""
    value = m.get(key)
    if value is None or not math.isfinite(value):
        return {"text": "n/a", "ci": ""}
    scale, unit, dash = (100.0, "%", "–") if percent else (1.0, "", " to ")
    ci = m.get(f"{key}_ci95")
    shown = f"{scale * ci[0]:.{digits}f}{dash}{scale * ci[1]:.{digits}f}" if ci and all(
        math.isfinite(c) for c in ci) else ""
    return {"text": f"{scale * value:.{digits}f}{unit}", "ci": shown}


def _ood_cell(m: dict) -> str:
    text = f"{100 * m['out_of_domain_fraction']:.1f}%"
    if "multivariate_out_of_domain_fraction" in m:
        text += f" ({100 * m['multivariate_out_of_domain_fraction']:.1f}%)"
    return text


def _report_html(model_id: str, document: dict, metrics: dict) -> str:
    from .html import render

    metric_rows = [{
        "key": key, "n": m["n"], "patients": m.get("n_patients", ""),
        "cells": [_with_ci(m, "mape", percent=True), _with_ci(m, "baseline_mape", percent=True),
                  _with_ci(m, "physics_mape", percent=True), _with_ci(m, "mae_gy_per_gbq", 3), _with_ci(m, "r2", 2),
                  _with_ci(m, "spearman", 2)],
        "coverage_80": f"{m['coverage_80']:.2f}", "coverage_90": f"{m['coverage_90']:.2f}",
        "oracle": _with_ci(m, "oracle_mape", percent=True), "ood": _ood_cell(m)} for key, m in metrics.items()]
    strata = [{"key": key, "stratum": stratum, **c} for key, m in metrics.items()
              for stratum, c in m.get("coverage_by_stratum", {}).items()]
    bland_altman = [{"key": key, "log": metrics[key]["bland_altman"]["log_ratio"],
                     "abs": metrics[key]["bland_altman"]["gy_per_gbq"]}
                    for key in GROUP_STRUCTURE_TYPES if key in metrics]
    return render("evaluation.html.j2", title=f"psmadose evaluation — {model_id}", model_id=model_id,
                  measured_on=document["measured_on"], resamples=BOOTSTRAP_RESAMPLES, seed=BOOTSTRAP_SEED,
                  metric_rows=metric_rows, strata=strata, bland_altman=bland_altman,
                  model_sha256=document["model_sha256"], cohort=document["cohort"])
