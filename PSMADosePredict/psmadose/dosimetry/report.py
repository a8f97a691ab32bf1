"""TAC plots (matplotlib, Agg) and the HTML report of one dosimetry run (templates/dosimetry.html.j2, through
psmadose.html: autoescaped, the shared stylesheet and banner)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from ..provenance import library_versions


def write_tac_plots(result, out: Path) -> dict[str, str]:
    """One PNG per segment in out/tacs/ (numbered file names: segment names may hold any character)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder = out / "tacs"
    folder.mkdir()
    plots = {}
    t_last = max(result.study.times_h)
    grid = np.linspace(0.0, max(t_last * 1.5, 168.0), 300)
    for n, s in enumerate(result.segments, start=1):
        fig, ax = plt.subplots(figsize=(4.2, 3.0), dpi=90)
        ax.plot(s.times_h, s.activity_mbq, "o", color="black", label="measured (PV-recovered)")
        curve = s.tia.curve(grid)
        if np.isfinite(curve).all():
            ax.plot(grid, curve, "-", color="tab:blue", label=f"{s.tia.model} fit")
        elif s.tia.model == "trapezoid":
            t = [0.0] + list(s.times_h)
            a = [s.activity_mbq[0]] + list(s.activity_mbq)
            ax.plot(t, a, "-", color="tab:blue", label="trapezoid")
            tail = grid[grid >= s.times_h[-1]]
            lam = math.log(2) / result_half_life()
            ax.plot(tail, s.activity_mbq[-1] * np.exp(-lam * (tail - s.times_h[-1])), "--", color="tab:blue",
                    label="physical tail")
        ax.set_xlabel("time after injection (h)")
        ax.set_ylabel("activity (MBq)")
        ax.set_title(f"{s.name} ({s.structure_type})", fontsize=9)
        ax.legend(fontsize=7)
        fig.tight_layout()
        name = f"tac_{n:03d}.png"
        fig.savefig(folder / name)
        plt.close(fig)
        plots[s.name] = f"tacs/{name}"
    return plots


def write_dvh_plot(result, out: Path) -> str | None:
    """Cumulative DVH of the dose map, one curve per segment (organs labelled, lesions in grey)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves = [s for s in result.segments if s.dvh]
    if not curves:
        return None
    fig, ax = plt.subplots(figsize=(6.0, 3.8), dpi=90)
    for s in curves:
        values = s.dvh["values"]
        fraction = 1.0 - np.arange(len(values)) / len(values)
        if s.structure_type == "tumour":
            ax.plot(values, fraction, color="0.6", lw=0.8)
        else:
            ax.plot(values, fraction, lw=1.4, label=s.name)
    ax.set_xlabel("absorbed dose (Gy), dose map")
    ax.set_ylabel("volume fraction")
    ax.set_title("cumulative DVH (tumours in grey)", fontsize=9)
    if any(s.structure_type != "tumour" for s in curves):
        ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(out / "dvh.png")
    plt.close(fig)
    return "dvh.png"


def result_half_life() -> float:
    from ..lu177 import decay_data

    return decay_data().half_life_h


def _cell(value) -> dict:
    if isinstance(value, float):
        return {"text": "" if not math.isfinite(value) else f"{value:.4g}", "num": True}
    return {"text": str(value), "num": isinstance(value, int)}


def write_report(result, table, plots: dict[str, str], path: Path, dvh_png: str | None = None) -> None:
    """report.html from the shared templates (psmadose.html: autoescaped, one stylesheet, the banner)."""
    from ..html import render

    study = result.study
    columns = ["segment", "structure_type", "volume_ml", "fit_model", "effective_half_life_h", "tia_mbq_h",
               "absorbed_dose_gy", "uncertainty_gy", "reference_gy_per_gbq", "dose_map_mean_gy", "dose_map_d2_gy"]
    rows = [[_cell(row[c]) for c in columns] for _, row in table.iterrows()]
    text = render("dosimetry.html.j2", title=f"psmadose post-therapy dosimetry — {study.directory.name}",
                  study_name=str(study.directory.name), activity_gbq=study.activity_gbq,
                  radiopharmaceutical=study.radiopharmaceutical, times=", ".join(f"{t:g} h" for t in study.times_h),
                  method=result.settings.method, fit=result.settings.fit, fwhm_mm=result.settings.fwhm_mm,
                  recovery=result.settings.recovery, n_registrations=len(result.registrations or []),
                  columns=columns, rows=rows, dvh_png=dvh_png, plots=dict(plots),
                  versions=library_versions())
    path.write_text(text, encoding="utf-8")
