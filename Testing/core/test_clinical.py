"""Tests of the clinical.json contract (psmadose.clinical): validation, unit hints, JSON Schema, file reading.

Expected keys and the valid example come from the "Data contracts" section of DESIGN.md; the plausible ranges
and unit hints from the docstring of psmadose.clinical (a value outside a wide physiological range is a unit
mistake, and the message says which unit was expected).
"""

from __future__ import annotations

import copy
import json
import math

import jsonschema
import pytest
from psmadose.clinical import json_schema, read_clinical, validate_clinical
from psmadose.errors import InputError

# The contract example of DESIGN.md ("clinical.json keys"), tracer chosen from the listed alternatives.
EXAMPLE = {"age_years": 71, "weight_kg": 82, "height_cm": 176,
           "egfr_ml_min_1_73m2": 75, "psa_ng_ml": 120, "alp_u_l": 140, "ldh_u_l": 250, "hemoglobin_g_dl": 12.1,
           "prior_taxane_lines": 1, "prior_arpi": True,
           "pet_tracer": "18F-DCFPyL", "pet_uptake_time_min": 120,
           "planned_activity_gbq": 7.4, "planned_cycles": 4}
CONTRACT_KEYS = set(EXAMPLE)  # DESIGN.md: every key of the example is part of the contract
TRACERS = ("18F-DCFPyL", "18F-PSMA-1007", "68Ga-PSMA-11")  # DESIGN.md


def _invalid(**changes):
    data = copy.deepcopy(EXAMPLE)
    data.update(changes)
    return data


def _raises(data) -> str:
    """Validate ``data``, expect InputError, check the input is left untouched; return the message."""
    before = copy.deepcopy(data)
    with pytest.raises(InputError) as info:
        validate_clinical(data)
    message = str(info.value)
    assert "\n" not in message, "InputError messages are one line (printed by the CLI as 'error: ...')"
    # NaN != NaN, so compare the JSON text (allow_nan keeps NaN as the token 'NaN').
    assert json.dumps(data, sort_keys=True) == json.dumps(before, sort_keys=True), "input dict was modified"
    return message


def test_contract_example_is_valid():
    data = copy.deepcopy(EXAMPLE)
    clinical, warnings = validate_clinical(data)
    assert warnings == []
    assert data == EXAMPLE  # not modified
    # Every value comes back unchanged, under its contract key.
    assert clinical.to_dict() == EXAMPLE
    # Du Bois & Du Bois 1916: BSA = 0.007184 W^0.425 H^0.725 (W kg, H cm); 82 kg, 176 cm -> 1.99 m^2.
    assert clinical.bsa_m2 == pytest.approx(0.007184 * 82**0.425 * 176**0.725, rel=1e-12)
    assert clinical.bsa_m2 == pytest.approx(1.99, abs=0.01)
    assert clinical.bmi_kg_m2 == pytest.approx(82 / 1.76**2, rel=1e-12)  # 26.5 kg/m^2


@pytest.mark.parametrize("tracer", TRACERS)
def test_every_contract_tracer_is_accepted(tracer):
    clinical, _ = validate_clinical(_invalid(pet_tracer=tracer))
    assert clinical.pet_tracer == tracer


@pytest.mark.parametrize("key, value, hint", [
    ("weight_kg", 0, "kilogram"),
    # 75 mL/min/1.73 m^2 is 1.25 mL/s: a value around 1 is the SI unit, the message must say so.
    ("egfr_ml_min_1_73m2", 1.2, "mL/s"),
    ("height_cm", 1.76, "cm"),  # metres instead of centimetres
    ("hemoglobin_g_dl", 121, "g/L"),  # 12.1 g/dL = 121 g/L
    ("planned_activity_gbq", 7400, "MBq"),  # MBq instead of GBq
    ("alp_u_l", 2.3, "ukat/L"),
])
def test_out_of_range_value_names_key_and_unit(key, value, hint):
    message = _raises(_invalid(**{key: value}))
    assert key in message
    assert hint in message
    assert repr(value) in message  # the offending value is shown


def test_nan_is_rejected():
    nan = json.loads("NaN")  # Python's json accepts the non-standard token
    assert math.isnan(nan)
    message = _raises(_invalid(psa_ng_ml=nan))
    assert "psa_ng_ml" in message
    assert "finite" in message


@pytest.mark.parametrize("key, value", [
    ("weight_kg", "82"),  # a string where a number is expected
    ("age_years", None),
    ("height_cm", True),  # a boolean is not a number in JSON Schema
])
def test_wrong_type_names_key(key, value):
    message = _raises(_invalid(**{key: value}))
    assert key in message
    assert "number" in message


def test_integer_key_rejects_fraction():
    message = _raises(_invalid(prior_taxane_lines=1.5))
    assert "prior_taxane_lines" in message
    assert "whole number" in message


def test_boolean_key_rejects_string():
    message = _raises(_invalid(prior_arpi="yes"))
    assert "prior_arpi" in message
    assert "true or false" in message


def test_unknown_tracer_lists_supported_ones():
    message = _raises(_invalid(pet_tracer="18F-FDG"))
    assert "pet_tracer" in message
    assert "18F-FDG" in message
    for tracer in TRACERS:
        assert tracer in message


def test_missing_keys_are_all_listed():
    data = copy.deepcopy(EXAMPLE)
    del data["egfr_ml_min_1_73m2"]
    del data["planned_cycles"]
    message = _raises(data)
    assert "missing" in message
    assert "egfr_ml_min_1_73m2" in message
    assert "planned_cycles" in message
    assert "weight_kg" not in message  # only the missing ones


def test_not_an_object():
    message = _raises([EXAMPLE])
    assert "JSON object" in message


def test_unknown_key_is_a_warning_not_an_error():
    data = _invalid(shoe_size_eu=44)
    clinical, warnings = validate_clinical(data)
    assert len(warnings) == 1
    assert "shoe_size_eu" in warnings[0]
    assert clinical.weight_kg == 82
    assert "shoe_size_eu" in data  # input not modified


def test_json_schema_is_valid_draft_2020_12_and_matches_contract():
    schema = json_schema()
    jsonschema.Draft202012Validator.check_schema(schema)  # raises SchemaError if invalid
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert set(schema["required"]) == CONTRACT_KEYS
    validator = jsonschema.Draft202012Validator(schema)
    assert list(validator.iter_errors(EXAMPLE)) == []
    # The schema itself catches range, type and enum problems (a second path besides validate_clinical).
    assert not validator.is_valid(_invalid(weight_kg=0))
    assert not validator.is_valid(_invalid(prior_arpi="yes"))
    assert not validator.is_valid(_invalid(pet_tracer="18F-FDG"))
    missing = copy.deepcopy(EXAMPLE)
    del missing["age_years"]
    assert not validator.is_valid(missing)


def test_read_clinical_round_trip(tmp_path):
    path = tmp_path / "clinical.json"
    path.write_text(json.dumps(EXAMPLE), encoding="utf-8")
    clinical, warnings = read_clinical(path)
    assert clinical.to_dict() == EXAMPLE
    assert warnings == []


def test_read_clinical_invalid_json(tmp_path):
    path = tmp_path / "clinical.json"
    text = '{"age_years": 71, "weight_kg": 82,'  # truncated
    path.write_text(text, encoding="utf-8")
    with pytest.raises(InputError) as info:
        read_clinical(path)
    message = str(info.value)
    assert "not valid JSON" in message
    assert str(path) in message
    assert "\n" not in message
    assert path.read_text(encoding="utf-8") == text  # not modified


def test_read_clinical_missing_file(tmp_path):
    with pytest.raises(InputError, match="clinical.json not found"):
        read_clinical(tmp_path / "clinical.json")
    assert not (tmp_path / "clinical.json").exists()


def test_read_clinical_bad_value_names_file_and_key(tmp_path):
    path = tmp_path / "clinical.json"
    path.write_text(json.dumps(_invalid(height_cm=1.76)), encoding="utf-8")
    with pytest.raises(InputError) as info:
        read_clinical(path)
    assert str(path) in str(info.value)
    assert "height_cm" in str(info.value)
