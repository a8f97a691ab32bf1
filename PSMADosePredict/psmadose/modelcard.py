"""The model card: its schema (checked when a card is written and when a model is loaded) and the one reader that
turns it into what people see (the HTML report, the Slicer panel, the terminal).

Accuracy figures always say what they were measured on: ``metrics`` are patient-grouped cross-validation on the
training cohort (``metrics_note``; interval coverage ``coverage_80_cv``/``coverage_90_cv``), ``validation`` a
held-out cohort (``validation.measured_on``; coverage ``coverage_80``/``coverage_90``). Both are shown together.
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import InputError
from .html import finite_float

_NUMBER = {"type": "number"}
_GROUP_METRICS = {
    "type": "object",
    "required": ["n", "mape", "baseline_mape"],
    "properties": {"n": {"type": "integer", "minimum": 0}, "mape": _NUMBER, "baseline_mape": _NUMBER,
                   "physics_mape": _NUMBER, "oracle_mape": _NUMBER, "mae_gy_per_gbq": _NUMBER, "r2": _NUMBER,
                   "coverage_80_cv": _NUMBER, "coverage_90_cv": _NUMBER, "coverage_80": _NUMBER,
                   "coverage_90": _NUMBER, "selected": {"type": "string"}},
}
CARD_SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "psmadose model card",
    "type": "object",
    "required": ["model_id", "name", "sha256", "card_sha256", "model_file", "format", "intended_use", "trained_on",
                 "metrics", "metrics_note", "selected", "feature_families", "library_versions"],
    "properties": {
        "model_id": {"type": "string", "minLength": 13},
        "name": {"type": "string", "minLength": 1},
        "sha256": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
        "card_sha256": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
        "model_file": {"const": "model.skops"},
        "format": {"type": "string"},
        "intended_use": {"type": "string", "minLength": 1},
        "description": {"type": "string"},
        "model_form": {"type": "string"},
        "trained_on": {"type": "object", "required": ["n_patients", "data"],
                       "properties": {"n_patients": {"type": "integer", "minimum": 1}, "data": {"type": "string"},
                                      "preset": {"type": ["string", "null"]}, "note": {"type": ["string", "null"]},
                                      "n_segments": {"type": "object",
                                                     "additionalProperties": {"type": "integer"}}}},
        "metrics": {"type": "object", "minProperties": 1, "additionalProperties": _GROUP_METRICS},
        "metrics_note": {"type": "string"},
        "selected": {"type": "object", "additionalProperties": {"type": "string"}},
        "feature_families": {"type": "array", "items": {"enum": ["uptake", "patient", "clinical", "radiomics"]}},
        "features": {"type": "object", "additionalProperties": {"type": "array", "items": {"type": "string"}}},
        "library_versions": {"type": "object", "additionalProperties": {"type": "string"}},
        "validation": {"type": "object", "required": ["measured_on", "metrics"],
                       "properties": {"measured_on": {"type": "string"},
                                      "metrics": {"type": "object", "additionalProperties": {"type": "object"}}}},
        "radiomics_settings": {"type": "object", "required": ["file", "sha256"]},
    },
}


def validate_card(card, where) -> dict:
    """The card if it follows ``CARD_SCHEMA``; else one-line InputError naming the first wrong field."""
    import jsonschema

    errors = sorted(jsonschema.Draft202012Validator(CARD_SCHEMA).iter_errors(card), key=lambda e: list(e.path))
    if errors:
        error = errors[0]
        field = ".".join(str(p) for p in error.path) or "(card)"
        raise InputError(f"{where}: model card field {field}: {error.message[:200]}; the model folder was not "
                         "written by this psmadose — retrain the model")
    return card


@dataclass(frozen=True)
class MetricsRow:
    group: str
    method: str
    n: int | None
    mape: float | None
    baseline_mape: float | None
    physics_mape: float | None
    mae_gy_per_gbq: float | None
    r2: float | None
    coverage_80: float | None
    coverage_90: float | None
    oracle_mape: float | None


@dataclass(frozen=True)
class CardSummary:
    model_id: str
    sha256: str
    intended_use: str
    trained_on: str
    cv_measured_on: str
    cv_rows: list[MetricsRow]
    heldout_measured_on: str | None
    heldout_rows: list[MetricsRow]


def _model_of(group: str, selected: dict) -> str:
    """The selected method of a model group, or of the group a structure type belongs to (held-out rows are per
    structure type: parotid is predicted by the salivary model)."""
    from .structures import GROUP_STRUCTURE_TYPES

    for model_group, types in GROUP_STRUCTURE_TYPES.items():
        if group == model_group or group in types:
            return str(selected.get(model_group, "?"))
    return "?"


def _rows(metrics: dict, selected: dict, cv: bool) -> list[MetricsRow]:
    rows = []
    for group, m in (metrics or {}).items():
        if not isinstance(m, dict):
            continue
        suffix = "_cv" if cv else ""
        n = m.get("n")
        rows.append(MetricsRow(
            group=str(group), method=str(m.get("selected") or _model_of(str(group), selected)),
            n=int(n) if isinstance(n, (int, float)) else None, mape=finite_float(m.get("mape")),
            baseline_mape=finite_float(m.get("baseline_mape")), physics_mape=finite_float(m.get("physics_mape")),
            mae_gy_per_gbq=finite_float(m.get("mae_gy_per_gbq")), r2=finite_float(m.get("r2")),
            coverage_80=finite_float(m.get("coverage_80" + suffix)),
            coverage_90=finite_float(m.get("coverage_90" + suffix)),
            oracle_mape=finite_float(m.get("oracle_mape"))))
    return rows


def trained_on_text(trained) -> str:
    if not isinstance(trained, dict) or not trained:
        return str(trained or "not recorded")
    text = f"{trained.get('n_patients', '?')} patients, {trained.get('data', 'data not described')}"
    details = [f"preset '{trained['preset']}'" if trained.get("preset") else "",
               f"cohort folder '{trained['directory']}'" if trained.get("directory") else "",
               str(trained.get("note") or "")]
    details = [d for d in details if d]
    return text + (f" ({'; '.join(details)})" if details else "")


def summarize(card: dict) -> CardSummary:
    """What every view of a card shows, read in one place."""
    card = card if isinstance(card, dict) else {}
    selected = card.get("selected") if isinstance(card.get("selected"), dict) else {}
    validation = card.get("validation") if isinstance(card.get("validation"), dict) else {}
    trained = trained_on_text(card.get("trained_on"))
    return CardSummary(
        model_id=str(card.get("model_id") or "unknown"), sha256=str(card.get("sha256") or ""),
        intended_use=str(card.get("intended_use") or "not recorded"), trained_on=trained,
        cv_measured_on=str(card.get("metrics_note") or f"cross-validation on the training cohort ({trained})"),
        cv_rows=_rows(card.get("metrics"), selected, cv=True),
        heldout_measured_on=str(validation["measured_on"]) if validation.get("measured_on") else None,
        heldout_rows=_rows(validation.get("metrics"), selected, cv=False))


def _percent(value: float | None) -> str:
    return "?" if value is None else f"{100 * value:.0f}%"


def summary_text(card: dict, origin: str) -> str:
    """Plain-text summary (Slicer panel, terminal): id, use, training data, then accuracy on held-out data and in
    cross-validation, each with what it was measured on."""
    s = summarize(card)
    lines = [f"Model: {s.model_id} ({origin})", f"Intended use: {s.intended_use}", f"Trained on: {s.trained_on}"]
    for title, measured_on, rows in (("Held-out accuracy", s.heldout_measured_on, s.heldout_rows),
                                     ("Cross-validation accuracy", s.cv_measured_on, s.cv_rows)):
        if not rows:
            continue
        lines.append(f"{title}, measured on: {measured_on}")
        for r in rows:
            lines.append(f"  {r.group} ({r.method}): MAPE {_percent(r.mape)} vs population mean "
                         f"{_percent(r.baseline_mape)}; 80% interval coverage {_percent(r.coverage_80)}")
    return "\n".join(lines)
