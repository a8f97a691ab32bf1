"""Clinical biomarkers: the ``clinical.json`` contract, its JSON Schema and physiological validation.

Units are in the key names. Plausible ranges are wide physiological limits, not reference intervals: a
value outside them is almost always a typo or a unit mistake, and the message says which unit was expected.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema

from .errors import InputError

TRACERS = ("18F-DCFPyL", "18F-PSMA-1007", "68Ga-PSMA-11")


@dataclass(frozen=True)
class Field:
    key: str
    kind: str  # "number", "integer", "boolean", "tracer"
    minimum: float | None = None
    maximum: float | None = None
    required: bool = True
    unit_hint: str = ""  # shown when the value is out of range: the unit the value is expected in


FIELDS: tuple[Field, ...] = (
    Field("age_years", "number", 18, 110, unit_hint="years"),
    Field("weight_kg", "number", 30, 250, unit_hint="kilograms (a value in pounds or grams is out of range)"),
    Field("height_cm", "number", 120, 230, unit_hint="centimetres (1.76 m is 176 cm)"),
    Field("egfr_ml_min_1_73m2", "number", 5, 200,
          unit_hint="mL/min/1.73 m^2 (a value around 1 looks like mL/s: multiply by 60)"),
    Field("psa_ng_ml", "number", 0, 100000, unit_hint="ng/mL"),
    Field("alp_u_l", "number", 10, 10000, unit_hint="U/L (a value below 10 looks like ukat/L: multiply by 60)"),
    Field("ldh_u_l", "number", 50, 20000, unit_hint="U/L (a value below 50 looks like ukat/L: multiply by 60)"),
    Field("hemoglobin_g_dl", "number", 3, 20, unit_hint="g/dL (a value above 20 looks like g/L: divide by 10)"),
    Field("prior_taxane_lines", "integer", 0, 5),
    Field("prior_arpi", "boolean"),
    Field("pet_tracer", "tracer"),
    Field("pet_uptake_time_min", "number", 30, 240, unit_hint="minutes after injection"),
    Field("planned_activity_gbq", "number", 1.0, 12.0,
          unit_hint="GBq per cycle (7.4 GBq is standard; a value in MBq or mCi is out of range)"),
    Field("planned_cycles", "integer", 1, 10),
    # Optional: reconstructed PET resolution (FWHM) of the site's scanner and protocol, used by the partial-volume
    # model of psmadose.features.concentration; without it a default per tracer is used and reported.
    Field("pet_resolution_mm", "number", 2, 15, required=False,
          unit_hint="millimetres FWHM (whole-body PET is typically 4-9 mm)"),
)
FIELD_BY_KEY = {f.key: f for f in FIELDS}


def json_schema() -> dict[str, Any]:
    """The JSON Schema of clinical.json (draft 2020-12), generated from FIELDS."""
    properties: dict[str, Any] = {}
    for f in FIELDS:
        if f.kind == "tracer":
            properties[f.key] = {"enum": list(TRACERS)}
        elif f.kind == "boolean":
            properties[f.key] = {"type": "boolean"}
        else:
            prop: dict[str, Any] = {"type": f.kind}
            if f.minimum is not None:
                prop["minimum"] = f.minimum
            if f.maximum is not None:
                prop["maximum"] = f.maximum
            properties[f.key] = prop
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "psmadose clinical.json",
        "type": "object",
        "properties": properties,
        "required": [f.key for f in FIELDS if f.required],
    }


@dataclass(frozen=True)
class Clinical:
    age_years: float
    weight_kg: float
    height_cm: float
    egfr_ml_min_1_73m2: float
    psa_ng_ml: float
    alp_u_l: float
    ldh_u_l: float
    hemoglobin_g_dl: float
    prior_taxane_lines: int
    prior_arpi: bool
    pet_tracer: str
    pet_uptake_time_min: float
    planned_activity_gbq: float
    planned_cycles: int
    pet_resolution_mm: float | None = None

    @property
    def bsa_m2(self) -> float:
        """Body surface area, Du Bois & Du Bois 1916."""
        return 0.007184 * self.weight_kg**0.425 * self.height_cm**0.725

    @property
    def bmi_kg_m2(self) -> float:
        return self.weight_kg / (self.height_cm / 100.0) ** 2

    def to_dict(self) -> dict[str, Any]:
        return {f.key: getattr(self, f.key) for f in FIELDS if getattr(self, f.key) is not None}


def _bad_value(key: str, value: Any, source: str) -> InputError:
    f = FIELD_BY_KEY[key]
    if f.kind == "tracer":
        return InputError(f"{source}: pet_tracer {value!r} is not supported; use one of {', '.join(TRACERS)}")
    if f.kind == "boolean":
        return InputError(f"{source}: {key} must be true or false, got {value!r}")
    if f.kind == "integer" and not (isinstance(value, int) and not isinstance(value, bool)):
        return InputError(f"{source}: {key} must be a whole number, got {value!r}")
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
        return InputError(f"{source}: {key} must be a finite number, got {value!r}")
    unit = f" in {f.unit_hint}" if f.unit_hint else ""
    return InputError(
        f"{source}: {key} = {value!r} is outside the plausible range {f.minimum:g}-{f.maximum:g}; "
        f"give it{unit}"
    )


def validate_clinical(data: Any, source: str = "clinical.json") -> tuple[Clinical, list[str]]:
    """Validate a clinical dict; returns the Clinical record and warnings (unknown keys)."""
    if not isinstance(data, dict):
        raise InputError(f"{source}: expected a JSON object of clinical values, got {type(data).__name__}")
    missing = [f.key for f in FIELDS if f.required and f.key not in data]
    if missing:
        raise InputError(f"{source}: missing required key(s) {', '.join(missing)}; see the clinical.json "
                         "contract in the README")
    validator = jsonschema.Draft202012Validator(json_schema())
    for error in sorted(validator.iter_errors(data), key=lambda e: list(e.path)):
        key = error.path[0] if error.path else None
        if key in FIELD_BY_KEY:
            raise _bad_value(key, data[key], source)
        raise InputError(f"{source}: {error.message}")
    # NaN passes JSON Schema's number checks; reject it explicitly.
    for f in FIELDS:
        if f.key not in data:
            continue
        value = data[f.key]
        if f.kind in ("number", "integer") and not math.isfinite(float(value)):
            raise _bad_value(f.key, value, source)
    warnings = [f"{source}: unknown key {k!r} ignored" for k in data if k not in FIELD_BY_KEY]
    values = {f.key: data[f.key] for f in FIELDS if f.key in data}
    return Clinical(**values), warnings


def read_clinical(path: Path) -> tuple[Clinical, list[str]]:
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: clinical.json not found; write the clinical biomarkers there "
                         "(keys listed in the README)")
    from .files import read_json

    data = read_json(path, "clinical.json", max_bytes=1_000_000)
    return validate_clinical(data, source=str(path))


def write_clinical(path: Path, clinical: Clinical) -> None:
    Path(path).write_text(json.dumps(clinical.to_dict(), indent=2) + "\n", encoding="utf-8")
