"""State of the module that is not widgets: clinical values <-> parameters, the model choice and its trust.

Pure Python; psmadose is imported inside the functions that need it, so the module file can import the
constants here (for its parameter node class) before the core's dependencies are installed.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

# Parameter field -> clinical.json key (units are in both names).
CLINICAL_PARAMETERS = {
    "ageYears": "age_years", "weightKg": "weight_kg", "heightCm": "height_cm",
    "egfrMlMin173m2": "egfr_ml_min_1_73m2", "psaNgMl": "psa_ng_ml", "alpUL": "alp_u_l", "ldhUL": "ldh_u_l",
    "hemoglobinGDl": "hemoglobin_g_dl", "priorTaxaneLines": "prior_taxane_lines", "priorArpi": "prior_arpi",
    "petTracer": "pet_tracer", "petUptakeTimeMin": "pet_uptake_time_min",
    "plannedActivityGbq": "planned_activity_gbq", "plannedCycles": "planned_cycles",
    "petResolutionMm": "pet_resolution_mm",
}
# Optional clinical.json keys: the parameter's value when the key is absent, which also means "leave it out".
CLINICAL_OPTIONAL_ABSENT = {"pet_resolution_mm": 0.0}
TRACER_CHOICES = ["18F-DCFPyL", "18F-PSMA-1007", "68Ga-PSMA-11"]  # psmadose.clinical.TRACERS (checked by a test)
# Python type of each parameter (as declared in the module's parameter node class; checked by a test).
CLINICAL_PARAMETER_TYPES = {
    "ageYears": float, "weightKg": float, "heightCm": float, "egfrMlMin173m2": float, "psaNgMl": float,
    "alpUL": float, "ldhUL": float, "hemoglobinGDl": float, "priorTaxaneLines": int, "priorArpi": bool,
    "petTracer": str, "petUptakeTimeMin": float, "plannedActivityGbq": float, "plannedCycles": int,
    "petResolutionMm": float,
}


def clinicalParameterValues(data: Any, source: str = "clinical.json") -> tuple[dict[str, Any], list[str]]:
    """Parameter values (typed as the parameter node expects) from a clinical.json object, and its warnings.

    The object is first validated by the core (``psmadose.clinical.validate_clinical``), so the module accepts
    exactly what ``psmadose predict`` accepts and rejects the rest with the core's one-line message
    (``psmadose.errors.InputError``). Accepted JSON numbers are then converted to the parameter's type: a
    whole number written as ``4.0`` becomes the integer 4. Nothing is set here, so a rejected file cannot leave
    the form half updated.
    """
    from psmadose.clinical import validate_clinical

    clinical, warnings = validate_clinical(data, source)
    values: dict[str, Any] = {}
    for parameter, key in CLINICAL_PARAMETERS.items():
        value = getattr(clinical, key)
        if value is None:
            values[parameter] = CLINICAL_OPTIONAL_ABSENT[key]
            continue
        kind = CLINICAL_PARAMETER_TYPES[parameter]
        if kind is int:
            value = int(round(value))  # the core accepted it as an integer, so it is whole
        elif kind is float:
            value = float(value)
        values[parameter] = value
    return values, warnings


def clinicalFromParameterValues(values: Mapping[str, Any]) -> dict[str, Any]:
    """clinical.json dict from parameter values; optional keys at their "absent" value are left out."""
    clinical = {key: values[parameter] for parameter, key in CLINICAL_PARAMETERS.items()}
    return {key: value for key, value in clinical.items()
            if not (key in CLINICAL_OPTIONAL_ABSENT and value == CLINICAL_OPTIONAL_ABSENT[key])}


# ------------------------------------------------------------------------------------------ model choice

def normalizeModelPath(path: str | os.PathLike | None) -> str:
    """"" for the bundled model, else the absolute folder of the model (a model.skops file -> its folder).

    ``pathlib.Path()`` is ".", which is what a ``pathlib.Path`` parameter stores when it is empty: it means no
    model was chosen, not the current working directory.
    """
    text = "" if path is None else os.fspath(path).strip()
    if text in ("", "."):
        return ""
    folder = Path(text).expanduser()
    if folder.is_file():
        folder = folder.parent
    return str(folder.resolve())


def modelPathKey(path: str | os.PathLike) -> str:
    """Comparison key of a model folder: resolved, case-normalised where the file system ignores case."""
    return os.path.normcase(normalizeModelPath(path))


class ModelChoice:
    """Which model predicts, and which non-bundled model folders the user trusted in this session.

    Trust is deliberately not stored in the scene or the settings: a scene file from elsewhere must not be able
    to make Slicer load a model without asking.
    """

    def __init__(self) -> None:
        self.path = ""  # "" = bundled
        self._trusted: set[str] = set()

    @property
    def isBundled(self) -> bool:
        return self.path == ""

    def needsTrust(self, path: str | os.PathLike | None) -> bool:
        normalized = normalizeModelPath(path)
        return normalized != "" and modelPathKey(normalized) not in self._trusted

    def isTrusted(self, path: str | os.PathLike | None) -> bool:
        return not self.needsTrust(path)

    def trust(self, path: str | os.PathLike) -> None:
        normalized = normalizeModelPath(path)
        if normalized:
            self._trusted.add(modelPathKey(normalized))

    def choose(self, path: str | os.PathLike | None) -> str:
        """Make ``path`` the current model; raises ValueError for a folder that was not trusted first."""
        normalized = normalizeModelPath(path)
        if self.needsTrust(normalized):
            raise ValueError(f"the model in {normalized} is not trusted in this session; choose it again with "
                             "'Use another model...' and confirm that you trust it")
        self.path = normalized
        return normalized

