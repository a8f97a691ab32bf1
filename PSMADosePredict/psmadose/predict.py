"""Prediction for one case: features -> dose models -> doses.csv/json, dose-coloured segmentation, report."""

from __future__ import annotations

import csv
import json
import logging
import math
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from . import __version__
from .case import Case, read_case, sha256_file
from .errors import InputError
from .features import FEATURE_FAMILIES, extract_features
from .modelfile import LoadedModel, load_model
from .outputs import atomic_output_dir, csv_cell
from .provenance import library_versions
from .segmentation import SegmentToWrite, write_segmentation

log = logging.getLogger(__name__)

CSV_COLUMNS = ("segment", "structure_type", "volume_ml", "suv_mean", "suv_max", "suv_tissue", "uptake_method",
               "predicted_gy_per_gbq", "physics_gy_per_gbq", "population_mean_gy_per_gbq", "predicted_gy",
               "predicted_gy_cumulative", "interval_80_low_gy_per_gbq", "interval_80_high_gy_per_gbq",
               "interval_90_low_gy_per_gbq", "interval_90_high_gy_per_gbq", "in_domain", "warnings")
REFERENCE_ORGAN_COLOR = (0.6, 0.6, 0.6)
ACTIVITY_RANGE_GBQ = (1.0, 12.0)


@dataclass(frozen=True)
class DosePrediction:
    segment: str
    structure_type: str
    volume_ml: float
    suv_mean: float
    suv_max: float
    suv_tissue: float  # tissue concentration used by the physics baseline (psmadose.features.concentration)
    uptake_method: str  # how suv_tissue was measured: "extent" (resolved structure) or "activity" (small)
    predicted_gy_per_gbq: float
    physics_gy_per_gbq: float  # the physics baseline alone (psmadose.physics), beside the model
    population_mean_gy_per_gbq: float  # the training mean of the structure type, beside the model
    predicted_gy: float  # per cycle, at the planned activity
    predicted_gy_cumulative: float  # over the planned cycles, assuming cycle-1 kinetics repeat
    interval_80_low_gy_per_gbq: float
    interval_80_high_gy_per_gbq: float
    interval_90_low_gy_per_gbq: float
    interval_90_high_gy_per_gbq: float
    in_domain: bool
    warnings: str
    interval_stratum: str = ""  # calibration stratum of the intervals (psmadose.intervals), in doses.json only


@dataclass
class PredictionResult:
    case_id: str
    predictions: list[DosePrediction]
    activity_gbq: float
    cycles: int
    provenance: dict
    warnings: list[str] = field(default_factory=list)
    planning: dict = field(default_factory=dict)  # psmadose.planning.planning_summary
    explanations: dict = field(default_factory=dict)  # segment -> psmadose.explain contributors

    def rows(self) -> list[dict]:
        return [asdict(p) for p in self.predictions]


def check_activity(activity_gbq: float) -> float:
    low, high = ACTIVITY_RANGE_GBQ
    if not isinstance(activity_gbq, (int, float)) or not math.isfinite(activity_gbq) or activity_gbq <= 0:
        raise InputError(f"planned activity {activity_gbq!r} GBq must be a positive number (7.4 GBq is standard)")
    if not low <= activity_gbq <= high:
        raise InputError(f"planned activity {activity_gbq:g} GBq is outside {low:g}-{high:g} GBq per cycle; give it "
                         "in GBq (7.4 GBq = 200 mCi = 7400 MBq)")
    return float(activity_gbq)


def predict_case(case: Case, loaded: LoadedModel, activity_gbq: float | None = None) -> PredictionResult:
    missing = [f for f in loaded.card.get("feature_families", []) if f not in FEATURE_FAMILIES]
    if missing:
        raise InputError(f"model {loaded.model_id} needs feature families {missing} that this installation cannot "
                         "compute; install the matching extra or use the bundled model")
    if loaded.radiomics_params is not None:
        from .features.radiomics import available

        if not available():
            raise InputError(f"model {loaded.model_id} uses radiomics features but pyradiomics is not installed; "
                             "pip install psmadose[radiomics] (in Slicer: slicer.util.pip_install"
                             "('pyradiomics-bhklab')), or use a model trained without radiomics")
    predicted_types = {t for g in loaded.model_set.models for t in _types(g)}
    if not any(s.structure_type.value in predicted_types for s in case.segments):
        raise InputError(f"{case.case_id}: no segment of a structure type the model predicts "
                         f"({', '.join(sorted(predicted_types))}); name segments kidney*, parotid*, "
                         "submandibular*, lesion* ... or set their types")
    activity = check_activity(activity_gbq if activity_gbq is not None else case.clinical.planned_activity_gbq)
    cycles = case.clinical.planned_cycles
    table = extract_features(case, loaded.radiomics_params)
    predicted = loaded.model_set.predict(table)
    features = table.set_index("segment")
    predictions = []
    for _, row in predicted.iterrows():
        f = features.loc[row["segment"]]
        dose = float(row["predicted_gy_per_gbq"])
        predictions.append(DosePrediction(
            segment=row["segment"], structure_type=row["structure_type"], volume_ml=float(f["volume_ml"]),
            suv_mean=float(f["suv_mean"]), suv_max=float(f["suv_max"]), suv_tissue=float(f["suv_tissue"]),
            uptake_method=str(f["uptake_method"]), predicted_gy_per_gbq=dose,
            physics_gy_per_gbq=float(row.get("physics_gy_per_gbq", math.nan)),
            population_mean_gy_per_gbq=float(row.get("population_mean_gy_per_gbq", math.nan)),
            predicted_gy=dose * activity, predicted_gy_cumulative=dose * activity * cycles,
            interval_80_low_gy_per_gbq=float(row["interval_80_low_gy_per_gbq"]),
            interval_80_high_gy_per_gbq=float(row["interval_80_high_gy_per_gbq"]),
            interval_90_low_gy_per_gbq=float(row["interval_90_low_gy_per_gbq"]),
            interval_90_high_gy_per_gbq=float(row["interval_90_high_gy_per_gbq"]),
            in_domain=bool(row["in_domain"]), warnings=str(row["domain_warnings"]),
            interval_stratum=str(row["interval_stratum"]),
        ))
    order = {name: i for i, name in enumerate(s.name for s in case.segments)}
    predictions.sort(key=lambda p: order[p.segment])
    provenance = {
        "psmadose_version": __version__,
        "model_id": loaded.model_id,
        "model_sha256": loaded.sha256,
        "model_bundled": loaded.bundled,
        "model_intended_use": loaded.card.get("intended_use"),
        "library_versions": library_versions(),
        "settings": {"activity_gbq": activity, "cycles": cycles,
                     "activity_source": "--activity-gbq" if activity_gbq is not None else "clinical.json",
                     "pet_resolution_mm": float(table["pet_resolution_mm"].iloc[0]),
                     "pet_resolution_source": str(table["pet_resolution_source"].iloc[0])},
        "input_sha256": {k: sha256_file(v) for k, v in case.input_files.items()},
        "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    warnings = list(case.warnings)
    from .domain import uptake_scale_reason

    scale = uptake_scale_reason(getattr(loaded.model_set, "uptake_reference", {}), table)
    if scale:  # the whole PET's scale, not one segment: said once for the case, and on the terminal
        warnings.append(f"{case.case_id}: {scale}; organ doses are flagged out of domain")
        log.warning("%s: %s; organ doses are flagged out of domain", case.case_id, scale)
    result = PredictionResult(case.case_id, predictions, activity, cycles, provenance, warnings)
    from .explain import explain_predictions
    from .planning import planning_summary

    result.planning = planning_summary(result.rows(), activity, cycles)
    result.explanations = explain_predictions(loaded.model_set, table)
    return result


def _types(group: str) -> tuple[str, ...]:
    from .model import GROUP_STRUCTURE_TYPES

    return GROUP_STRUCTURE_TYPES[group]


def _fmt(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def write_doses_csv(path: Path, result: PredictionResult) -> None:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(CSV_COLUMNS)
        for row in result.rows():
            writer.writerow([csv_cell(_fmt(row[c])) for c in CSV_COLUMNS])


def write_doses_json(path: Path, result: PredictionResult, colormap: str) -> None:
    document = {"case_id": result.case_id, "activity_gbq": result.activity_gbq, "cycles": result.cycles,
                "units": {"predicted_gy_per_gbq": "Gy/GBq", "predicted_gy": "Gy per cycle at activity_gbq",
                          "predicted_gy_cumulative": "Gy over the planned cycles (cycle-1 kinetics assumed)"},
                "segments": result.rows(), "warnings": result.warnings, "dose_colormap": colormap,
                "planning": result.planning, "explanations": result.explanations, "provenance": result.provenance}
    path.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")


def write_dose_segmentation(path: Path, case: Case, result: PredictionResult) -> None:
    from .dose_colors import dose_to_rgb

    doses = {p.segment: p.predicted_gy_per_gbq for p in result.predictions}
    segments = []
    for segment in case.segments:
        dose = doses.get(segment.name)
        color = dose_to_rgb(dose) if dose is not None else REFERENCE_ORGAN_COLOR
        segments.append(SegmentToWrite(segment.name, segment.mask, color, segment.structure_type.value))
    write_segmentation(path, case.pet, segments)


def write_prediction(out_dir: Path, case: Case, result: PredictionResult, loaded: LoadedModel) -> None:
    """Write all outputs into ``out_dir`` (a fresh temporary directory)."""
    from .dose_colors import colormap_description
    from .report import write_report

    write_doses_csv(out_dir / "doses.csv", result)
    write_doses_json(out_dir / "doses.json", result, colormap_description())
    write_dose_segmentation(out_dir / "dose_segmentation.seg.nrrd", case, result)
    masks = {s.name: s.mask for s in case.segments}
    write_report(out_dir, case_id=case.case_id, rows=result.rows(), pet_array=case.pet_array,
                 spacing_mm=tuple(case.pet.GetSpacing()), direction=case.pet.GetDirection(), masks=masks,
                 clinical=case.clinical.to_dict(),
                 model_card=loaded.card, provenance=result.provenance, warnings=result.warnings,
                 planning=result.planning, explanations=result.explanations)


def run_predict(case_dir: Path, out: Path, *, activity_gbq: float | None = None, model_path: Path | None = None,
                trust_model: bool = False, overwrite: bool = False) -> PredictionResult:
    from .outputs import check_output_dir

    check_output_dir(out, overwrite, inputs=(case_dir,))
    if activity_gbq is not None:
        check_activity(activity_gbq)
    case = read_case(case_dir)  # the case first: its mistakes are the common ones, and reading it is quick
    loaded = load_model(model_path, trust=trust_model)
    result = predict_case(case, loaded, activity_gbq)
    with atomic_output_dir(out, overwrite, inputs=(case_dir,)) as tmp:
        write_prediction(tmp, case, result, loaded)
    return result


def results_table(result: PredictionResult) -> pd.DataFrame:
    return pd.DataFrame(result.rows())
