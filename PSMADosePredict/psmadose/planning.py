"""Planning aids derived from one case's predicted doses: decision support, not a prescription.

- Kidneys: the mean absorbed dose of both kidneys together, cumulative over the planned cycles, with the
  prediction intervals; and the activity per cycle that keeps it under the kidney reference limit
  (``report.DOSE_LIMITS``: 23 Gy, Fendler et al. 2016, external-beam-derived), both at the predicted dose
  and, conservatively, at the upper bound of the 80 % interval.
- Tumours: a flag for each tumour whose predicted Gy/GBq is below the mean of non-responders in Volter et al.
  2021 (4.0 Gy/GBq; ``report.TUMOUR_DOSE_REFERENCES``) — a published group mean for orientation, not a
  response threshold.

Cumulative doses assume the cycle-1 dose per GBq repeats in every cycle (as the per-row columns do).
"""

from __future__ import annotations

from .dose_references import TUMOUR_DOSE_REFERENCES, dose_limit_for

DECISION_SUPPORT_NOTE = (
    "Decision support for research and teaching, not a prescription: predictions from a model trained on "
    "virtual patients, not clinically validated. Cumulative doses assume the cycle-1 Gy/GBq repeats in "
    "every cycle."
)
LEVELS = ("80", "90")


def low_tumour_reference():
    """The Volter 2021 non-responder mean tumour dose (Gy/GBq) from the report's reference list."""
    for reference in TUMOUR_DOSE_REFERENCES:
        if "non-responder" in reference.label:
            return reference
    return None


def kidney_summary(rows: list[dict], activity_gbq: float, cycles: int) -> dict | None:
    """Both kidneys as one organ: volume-weighted mean Gy/GBq (= energy over combined mass at equal density).

    The interval of the combined mean is the volume-weighted mean of the segments' bounds: exact when the
    kidneys share one interval factor (one model group), and errs wide otherwise (it assumes their errors
    are fully correlated, which is close to the truth for two kidneys of one patient).
    """
    kidneys = [r for r in rows if r.get("structure_type") == "kidney"]
    if not kidneys:
        return None
    volumes = [float(r["volume_ml"]) for r in kidneys]
    total = sum(volumes)

    def mean_of(key: str) -> float:
        return sum(v * float(r[key]) for v, r in zip(volumes, kidneys)) / total

    flagged = [{"segment": r["segment"], "reasons": str(r.get("warnings", ""))}
               for r in kidneys if not _in_domain(r)]
    if flagged:
        # A dose outside the model's domain is not a number to plan with: say which segment and why.
        return {"segments": [r["segment"] for r in kidneys], "withheld": True, "flagged": flagged,
                "note": "no kidney planning aid: "
                        + "; ".join(f"{f['segment']} is outside the model's domain ({f['reasons']})" for f in flagged)}
    per_gbq = mean_of("predicted_gy_per_gbq")
    scale = activity_gbq * cycles
    summary = {
        "segments": [r["segment"] for r in kidneys],
        "combined_volume_ml": total,
        "mean_gy_per_gbq": per_gbq,
        "cumulative_gy": per_gbq * scale,
    }
    for level in LEVELS:
        summary[f"cumulative_{level}_low_gy"] = mean_of(f"interval_{level}_low_gy_per_gbq") * scale
        summary[f"cumulative_{level}_high_gy"] = mean_of(f"interval_{level}_high_gy_per_gbq") * scale
    limit = dose_limit_for("kidney")
    if limit is not None:
        high80 = mean_of("interval_80_high_gy_per_gbq")
        summary.update({
            "limit_gy": limit.value,
            "limit_source": limit.source,
            "activity_per_cycle_under_limit_gbq": limit.value / (per_gbq * cycles),
            "activity_per_cycle_under_limit_conservative_gbq": limit.value / (high80 * cycles),
            "planned_activity_exceeds_limit_activity": activity_gbq > limit.value / (per_gbq * cycles),
        })
    if len(kidneys) != 2:
        summary["note"] = f"{len(kidneys)} kidney segment(s) found; the summary covers those only"
    return summary


def _in_domain(row: dict) -> bool:
    value = row.get("in_domain", True)
    return value if isinstance(value, bool) else str(value).lower() == "true"


def low_tumour_flags(rows: list[dict]) -> dict | None:
    reference = low_tumour_reference()
    if reference is None:
        return None
    threshold = reference.value_gy_per_gbq
    flagged = [
        {"segment": r["segment"], "predicted_gy_per_gbq": float(r["predicted_gy_per_gbq"]),
         "interval_80_high_gy_per_gbq": float(r["interval_80_high_gy_per_gbq"]),
         "upper_80_below_reference": float(r["interval_80_high_gy_per_gbq"]) < threshold}
        for r in rows if r.get("structure_type") == "tumour" and _in_domain(r)
        and float(r["predicted_gy_per_gbq"]) < threshold
    ]
    withheld = [{"segment": r["segment"], "reasons": str(r.get("warnings", ""))}
                for r in rows if r.get("structure_type") == "tumour" and not _in_domain(r)]
    return {"reference_gy_per_gbq": threshold, "source": reference.source,
            "n_tumours": sum(r.get("structure_type") == "tumour" for r in rows), "low_dose_tumours": flagged,
            "withheld": withheld}


def planning_summary(rows: list[dict], activity_gbq: float, cycles: int) -> dict:
    """The "planning" block of doses.json for one case (rows as in doses.csv)."""
    return {"decision_support_note": DECISION_SUPPORT_NOTE, "activity_gbq": activity_gbq, "cycles": cycles,
            "kidneys": kidney_summary(rows, activity_gbq, cycles), "tumours": low_tumour_flags(rows)}


def planning_html(summary: dict | None) -> str:
    """A short report section (the ``planning`` macro of templates/_sections.html.j2); empty when nothing to show."""
    from .html import environment

    return str(environment().get_template("_sections.html.j2").module.planning(summary))
