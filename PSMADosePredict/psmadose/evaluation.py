"""Evaluation of a model on a cohort with reference doses: metrics.json and report.html.

Metrics are keyed by structure type and by model group; fractions, not percent. ``baseline_mape`` is the
population-mean baseline (the training mean of the structure type, from the model). Every figure is
measured on the cohort given and the report says so.

Uncertainty of the figures themselves: ``*_ci95`` are patient-level bootstrap 95 % percentile intervals
(patients resampled with replacement, fixed seed), because lesions of one patient are not independent.
``bland_altman`` gives bias and 95 % limits of agreement on log(predicted/reference) and on Gy/GBq.
"""

from __future__ import annotations

import html
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


def _with_ci(m: dict, key: str, digits: int = 1, percent: bool = False) -> str:
    """A metric with its bootstrap 95% CI, as HTML ("n/a" when missing)."""
    value = m.get(key)
    if value is None or not math.isfinite(value):
        return "n/a"
    scale, unit, dash = (100.0, "%", "–") if percent else (1.0, "", " to ")
    text = f"{scale * value:.{digits}f}{unit}"
    ci = m.get(f"{key}_ci95")
    if ci and all(math.isfinite(c) for c in ci):
        text += f" <span class='ci'>({scale * ci[0]:.{digits}f}{dash}{scale * ci[1]:.{digits}f})</span>"
    return text


def _ood_cell(m: dict) -> str:
    text = f"{100 * m['out_of_domain_fraction']:.1f}%"
    if "multivariate_out_of_domain_fraction" in m:
        text += f" ({100 * m['multivariate_out_of_domain_fraction']:.1f}%)"
    return text


def _report_html(model_id: str, document: dict, metrics: dict) -> str:
    metric_rows = []
    for key, m in metrics.items():
        cells = [html.escape(key), str(m["n"]), str(m.get("n_patients", "")), _with_ci(m, "mape", percent=True),
                 _with_ci(m, "baseline_mape", percent=True), _with_ci(m, "physics_mape", percent=True),
                 _with_ci(m, "mae_gy_per_gbq", 3), _with_ci(m, "r2", 2),
                 _with_ci(m, "spearman", 2), f"{m['coverage_80']:.2f}", f"{m['coverage_90']:.2f}",
                 _with_ci(m, "oracle_mape", percent=True), _ood_cell(m)]
        metric_rows.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    ba_rows = []
    for key in GROUP_STRUCTURE_TYPES:
        if key not in metrics:
            continue
        ba = metrics[key]["bland_altman"]
        log_ratio, absolute = ba["log_ratio"], ba["gy_per_gbq"]
        ba_rows.append(
            f"<tr><td>{html.escape(key)}</td><td>{log_ratio['n']}</td>"
            f"<td>{log_ratio['bias']:.3f} (×{log_ratio['ratio_bias']:.2f})</td>"
            f"<td>{log_ratio['loa_low']:.3f} to {log_ratio['loa_high']:.3f} "
            f"(×{log_ratio['ratio_loa_low']:.2f} to ×{log_ratio['ratio_loa_high']:.2f})</td>"
            f"<td>{absolute['bias']:.3f}</td><td>{absolute['loa_low']:.3f} to {absolute['loa_high']:.3f}</td></tr>")
    stratum_rows = "".join(
        f"<tr><td>{html.escape(key)}</td><td>{html.escape(stratum)}</td><td>{c['n']}</td>"
        f"<td>{c['coverage_80']:.2f}</td><td>{c['coverage_90']:.2f}</td></tr>"
        for key, m in metrics.items() for stratum, c in m.get("coverage_by_stratum", {}).items())
    strata_html = ("<h2>Interval coverage within calibration strata</h2><p>Intervals are calibrated per structure "
                   "type and, for tumours, per volume tercile; coverage within each stratum (conditional "
                   "coverage) should also be near nominal.</p><table border='1' cellspacing='0'><tr><th>structure"
                   "</th><th>stratum</th><th>n</th><th>coverage 80%</th><th>coverage 90%</th></tr>"
                   f"{stratum_rows}</table>") if stratum_rows else ""
    measured = html.escape(document["measured_on"])
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>psmadose evaluation</title>"
        "<style>body{font-family:sans-serif;max-width:70em;margin:1em auto}td,th{padding:3px 6px}"
        ".ci{color:#555;font-size:85%}.banner{background:#fff3cd;border:1px solid #e0b000;padding:.5em}</style>"
        "</head><body>"
        f"<h1>Evaluation of {html.escape(model_id)}</h1>"
        f"<p class='banner'><b>Measured on {measured}.</b> Research and teaching software; "
        "virtual patients are not clinical data; not clinically validated. These figures describe this cohort "
        "only; they are not an accuracy claim for real patients.</p>"
        "<h2>Accuracy</h2>"
        "<p>Per structure type and model group (salivary = parotid + submandibular + lacrimal). In brackets: "
        f"95 % confidence intervals from a patient-level bootstrap ({BOOTSTRAP_RESAMPLES} resamples of patients, "
        f"fixed seed {BOOTSTRAP_SEED}); with few patients they are wide and themselves uncertain. "
        "The population-mean MAPE is the baseline (training mean Gy/GBq of the structure type); the oracle "
        "floor is the error of the simulator's noise-free prediction, where the cohort records it.</p>"
        "<table border='1' cellspacing='0'><tr><th>structure</th><th>n</th><th>patients</th><th>MAPE</th>"
        "<th>population-mean MAPE (baseline)</th><th>physics-baseline MAPE</th><th>MAE Gy/GBq</th><th>R²</th>"
        "<th>Spearman ρ</th>"
        "<th>coverage 80%</th><th>coverage 90%</th><th>oracle floor MAPE</th>"
        "<th>out of domain (of which multivariate)</th></tr>"
        f"{''.join(metric_rows)}</table>"
        f"{strata_html}"
        "<h2>Predicted vs reference</h2>"
        "<p><img src='predicted_vs_reference.png' alt='predicted vs reference Gy/GBq, log axes, identity line'></p>"
        "<h2>Bland-Altman agreement</h2>"
        "<p>Bias and 95 % limits of agreement (bias ± 1.96 SD) per model group, on ln(predicted/reference) "
        "(× = the same as a predicted/reference factor) and on Gy/GBq.</p>"
        "<table border='1' cellspacing='0'><tr><th>group</th><th>n</th><th>bias ln ratio</th>"
        "<th>LoA ln ratio</th><th>bias Gy/GBq</th><th>LoA Gy/GBq</th></tr>"
        f"{''.join(ba_rows)}</table>"
        "<p><img src='bland_altman.png' alt='Bland-Altman plots per model group'></p>"
        f"<p>Model {html.escape(model_id)} (sha256 {html.escape(document['model_sha256'])}); "
        f"cohort {html.escape(document['cohort'])}.</p>"
        "</body></html>\n")
