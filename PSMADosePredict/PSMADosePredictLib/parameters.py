"""State of the module that is not widgets: clinical values <-> parameters, the model choice and its trust, the
settings of the post-therapy dosimetry section.

Pure Python; psmadose is imported inside the functions that need it, so the module file can import the
constants here (for its parameter node class) before the core's dependencies are installed.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Mapping, Sequence
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



# -------------------------------------------------------------------------------- post-therapy dosimetry

class CoreChoices(Sequence):
    """The allowed values of a parameter, read from a constant of the core (``module.attribute``) on first use.

    The module file declares its parameter node class (``Choice(...)``) before the core's Python dependencies may
    be installed, so the core is not imported here: the list is imported the first time it is iterated, indexed or
    searched, which happens when the parameter node is created or its GUI connected (after installation). The
    lists are the core's, never copies: a method added to the core appears in the combo box.
    """

    def __init__(self, module: str, attribute: str) -> None:
        self.module, self.attribute = module, attribute
        self._values: tuple | None = None

    def values(self) -> tuple:
        if self._values is None:
            self._values = tuple(getattr(importlib.import_module(self.module), self.attribute))
        return self._values

    def __getitem__(self, index):
        return self.values()[index]

    def __len__(self) -> int:
        return len(self.values())

    def __contains__(self, value) -> bool:
        return value in self.values()

    def __iter__(self):
        return iter(self.values())

    def __repr__(self) -> str:  # no import just to describe it (parameterNodeWrapper logs validators)
        loaded = "" if self._values is None else f" = {list(self._values)}"
        return f"{self.module}.{self.attribute}{loaded}"


DOSE_METHOD_CHOICES = CoreChoices("psmadose.dosimetry", "DOSE_METHODS")  # vsv, lde, sphere
DOSE_FIT_CHOICES = CoreChoices("psmadose.dosimetry.kinetics", "METHODS")  # auto, mono, bi, trapezoid, ...

# Parameter field -> keyword argument of PSMADosePredictLib.dosimetry.runDosimetry.
DOSIMETRY_PARAMETERS = {
    "dosimetryStudyDir": "studyDir", "dosimetryOutDir": "outDir", "dosimetryMethod": "method",
    "dosimetryFit": "fit", "dosimetryRegister": "register", "dosimetryIntoCase": "into",
    "dosimetryOverwrite": "overwrite",
}


def optionalPath(value: str | os.PathLike | None) -> Path | None:
    """A folder chosen in a path field, or None when none was chosen.

    An empty ``pathlib.Path`` parameter stores and reads back "." (``Path("")`` is ``Path(".")``), which is what an
    empty ctkPathLineEdit gives: it means "not set", never the working directory.
    """
    text = "" if value is None else os.fspath(value).strip()
    if text in ("", "."):
        return None
    return Path(text).expanduser()


def dosimetryReady(values: Mapping[str, Any]) -> bool:
    """Whether the dosimetry can run: a study folder and an output folder are set."""
    return optionalPath(values.get("dosimetryStudyDir")) is not None and \
        optionalPath(values.get("dosimetryOutDir")) is not None


def dosimetryArguments(values: Mapping[str, Any]) -> dict[str, Any]:
    """Keyword arguments of ``runDosimetry`` from the dosimetry parameter values (``DOSIMETRY_PARAMETERS``).

    Raises ``psmadose.errors.InputError`` (one line, said to the user) when the study or output folder is not set
    or a method/fit is not one of the core's. Everything else (missing files, an existing output folder without
    overwrite, an output inside the study) is checked by the core, before any work.
    """
    from psmadose.errors import InputError

    study, out = optionalPath(values.get("dosimetryStudyDir")), optionalPath(values.get("dosimetryOutDir"))
    if study is None:
        raise InputError("no study folder chosen: choose the folder with the spect_<HOURS>h time points")
    if out is None:
        raise InputError("no output folder chosen: choose a new folder for the dosimetry results")
    method, fit = str(values.get("dosimetryMethod", "vsv")), str(values.get("dosimetryFit", "auto"))
    if method not in DOSE_METHOD_CHOICES:
        raise InputError(f"dose method {method!r} is not one of {', '.join(DOSE_METHOD_CHOICES)}")
    if fit not in DOSE_FIT_CHOICES:
        raise InputError(f"fit {fit!r} is not one of {', '.join(DOSE_FIT_CHOICES)}")
    return {"studyDir": study, "outDir": out, "method": method, "fit": fit,
            "register": bool(values.get("dosimetryRegister", False)),
            "into": optionalPath(values.get("dosimetryIntoCase")),
            "overwrite": bool(values.get("dosimetryOverwrite", False))}
