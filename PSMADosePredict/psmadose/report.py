"""HTML report of one prediction: dose table, dose-coloured MIP, doses against reference limits, model card.

``write_report`` writes into an output directory::

    report.html                 self-contained (inline CSS, no scripts, no network)
    figure_mip.png              coronal PET MIP with the segments in their dose colour
    figure_dose_limits.png      organ-at-risk doses vs reference limits; tumour doses vs published references
    dose_legend.png             the dose colour bar (see ``psmadose.dose_colors``)

Every file is written under a temporary name and renamed into place, so a partial report never appears.

Reference limits and tumour dose figures live in ``dose_references``, the figures in ``figures``, the HTML in
``templates/prediction.html.j2`` (rendered by ``psmadose.html``).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.colors import to_hex

from . import BANNER
from .dose_colors import colormap_description, dose_to_rgb, write_legend_png
from .dose_references import DOSE_LIMITS, TUMOUR_DOSE_REFERENCES, _structure_key, dose_limit_for
from .figures import (  # noqa: F401  (the file names and writers are part of this module's interface)
    DOSE_LIMITS_FIGURE_FILENAME,
    FIGURE_DPI,
    LEGEND_FILENAME,
    MAX_PNG_BYTES,
    MIP_FIGURE_FILENAME,
    _float,
    write_dose_limits_figure,
    write_mip_figure,
)
from .html import fmt, percent, render
from .outputs import atomic_output_file

logger = logging.getLogger(__name__)

REPORT_FILENAME = "report.html"
BANNER_TEXT = BANNER
_fmt = fmt
_percent = percent


# ----------------------------------------------------------------------------------------------- helpers


def _fmt_interval(low, high, sig: int = 3) -> str:
    if _float(low) is None and _float(high) is None:
        return "–"
    return f"{_fmt(low, sig)}–{_fmt(high, sig)}"


def _planned_activity_and_cycles(clinical: dict, rows: list[dict]) -> tuple[float | None, int | None]:
    """Planned activity per cycle (GBq) and number of cycles from clinical.json, else from the rows."""
    activity = _float((clinical or {}).get("planned_activity_gbq"))
    cycles_value = _float((clinical or {}).get("planned_cycles"))
    cycles = round(cycles_value) if cycles_value is not None and cycles_value > 0 else None
    for row in rows:
        per_gbq = _float(row.get("predicted_gy_per_gbq"))
        if not per_gbq:
            continue
        per_cycle = _float(row.get("predicted_gy"))
        if activity is None and per_cycle is not None:
            activity = per_cycle / per_gbq
        cumulative = _float(row.get("predicted_gy_cumulative"))
        if cycles is None and cumulative is not None and per_cycle:
            cycles = round(cumulative / per_cycle)
    return activity, cycles


def _atomic_write_text(path: Path, text: str) -> None:
    with atomic_output_file(path, overwrite=True) as tmp:
        tmp.write_text(text, encoding="utf-8")


# ------------------------------------------------------------------------------------------------------ HTML



def _limit_status(row: dict, activity: float | None, cycles: int | None) -> tuple[str, bool]:
    """Text comparing a row's cumulative dose with its reference limit, and whether to highlight the row."""
    limit = dose_limit_for(row.get("structure_type"))
    if limit is None:
        return "–", False
    cumulative = _float(row.get("predicted_gy_cumulative"))
    high90 = _float(row.get("interval_90_high_gy_per_gbq"))
    if cumulative is None and activity is not None and cycles:
        per_gbq = _float(row.get("predicted_gy_per_gbq"))
        cumulative = per_gbq * activity * cycles if per_gbq is not None else None
    if cumulative is None:
        return f"{limit.value:g} {limit.unit}", False
    high90_cumulative = high90 * activity * cycles if high90 is not None and activity and cycles else None
    text = f"{limit.value:g} {limit.unit}: "
    if cumulative >= limit.value:
        return text + "predicted dose above", True
    if high90_cumulative is not None and high90_cumulative >= limit.value:
        return text + "90 % interval reaches it", True
    return text + "below", False


def _display_rows(rows: list[dict], activity: float | None, cycles: int | None) -> list[dict]:
    """The dose table's cells as text (the template lays them out and escapes them)."""
    shown = []
    for row in rows:
        dose = _float(row.get("predicted_gy_per_gbq"))
        status, flagged = _limit_status(row, activity, cycles)
        shown.append({
            "segment": str(row.get("segment", "")), "type": _structure_key(row.get("structure_type")),
            "volume": _fmt(row.get("volume_ml")), "suv_mean": _fmt(row.get("suv_mean")),
            "suv_max": _fmt(row.get("suv_max")), "colour": to_hex(dose_to_rgb(dose if dose is not None else math.nan)),
            "dose": _fmt(dose),
            "interval_80": _fmt_interval(row.get("interval_80_low_gy_per_gbq"), row.get("interval_80_high_gy_per_gbq")),
            "interval_90": _fmt_interval(row.get("interval_90_low_gy_per_gbq"), row.get("interval_90_high_gy_per_gbq")),
            "per_cycle": _fmt(row.get("predicted_gy")), "cumulative": _fmt(row.get("predicted_gy_cumulative")),
            "status": status, "flagged": flagged, "in_domain": row.get("in_domain"),
            "warnings": str(row.get("warnings") or "")})
    return shown




def write_report(
    out_dir: Path,
    *,
    case_id: str,
    rows: list[dict],
    pet_array: np.ndarray,
    spacing_mm: tuple[float, float, float],
    masks: dict[str, np.ndarray],
    clinical: dict,
    model_card: dict,
    provenance: dict,
    warnings: list[str],
    direction: Sequence[float] | None = None,
    planning: dict | None = None,
    explanations: dict | None = None,
) -> Path:
    """Write ``report.html`` with its PNG figures into ``out_dir`` and return the path of the HTML file.

    ``rows``: one dict per predicted segment (keys as in doses.csv). ``pet_array``: SUV, (k, j, i) on an LPS
    grid; ``spacing_mm``: (i, j, k) as SimpleITK's GetSpacing(); ``masks``: segment name -> bool (k, j, i).
    ``direction``: optional SimpleITK direction (9 values); without it the grid is taken as axis-aligned LPS.
    ``planning`` / ``explanations``: optional sections (``psmadose.planning``, ``psmadose.explain``).
    """
    from .explain import explanations_html
    from .planning import planning_html

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = list(rows or [])
    clinical = dict(clinical or {})
    activity, cycles = _planned_activity_and_cycles(clinical, rows)

    _, mip_caption, mip_notes = write_mip_figure(
        out_dir / MIP_FIGURE_FILENAME, pet_array, spacing_mm, masks or {}, rows, direction=direction
    )
    _, limits_caption = write_dose_limits_figure(
        out_dir / DOSE_LIMITS_FIGURE_FILENAME, rows, planned_activity_gbq=activity, planned_cycles=cycles
    )
    write_legend_png(out_dir / LEGEND_FILENAME, dpi=FIGURE_DPI)

    all_warnings = [str(w) for w in (warnings or [])] + mip_notes
    for row in rows:
        if row.get("warnings"):
            all_warnings.append(f"{row.get('segment', '')}: {row['warnings']}")
        if row.get("in_domain") is False:
            all_warnings.append(f"{row.get('segment', '')}: outside the model's training domain")
    from markupsafe import Markup

    from .modelcard import summarize

    card = model_card or {}
    features = card.get("features") if isinstance(card.get("features"), dict) else {}
    document = render(
        "prediction.html.j2", title=f"PSMADosePredict report — {case_id}", case_id=case_id,
        activity_text=f"{activity:.3g} GBq per cycle" if activity is not None else "not given",
        cycles_text=str(cycles) if cycles else "not given",
        total_text=f" (total {activity * cycles:.3g} GBq)" if activity is not None and cycles else "",
        activity_short=f"{activity:.3g} GBq" if activity is not None else "planned activity",
        cycles_short=f"{cycles} cycles" if cycles else "planned cycles",
        tracer=clinical.get("pet_tracer", "not given"), card=summarize(card), colormap=colormap_description(),
        rows=_display_rows(rows, activity, cycles),
        planning_section=Markup(planning_html(planning)),  # built (and escaped) by psmadose.planning
        explanations_section=Markup(explanations_html(explanations)),  # built (and escaped) by psmadose.explain
        warnings=all_warnings, mip_file=MIP_FIGURE_FILENAME, mip_caption=mip_caption,
        limits_file=DOSE_LIMITS_FIGURE_FILENAME, limits_caption=limits_caption, legend_file=LEGEND_FILENAME,
        dose_limits=DOSE_LIMITS, tumour_references=TUMOUR_DOSE_REFERENCES,
        features={str(g): [str(n) for n in (v if isinstance(v, (list, tuple)) else [v])] for g, v in features.items()},
        clinical=clinical, provenance_json=json.dumps(provenance or {}, indent=2, sort_keys=True, default=str))
    report_path = out_dir / REPORT_FILENAME
    _atomic_write_text(report_path, document)
    logger.info("wrote report %s", report_path)
    return report_path
