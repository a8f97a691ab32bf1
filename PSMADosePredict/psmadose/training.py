"""Training and patient-grouped cross-validation of the dose models, producing a model set and its card."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.model_selection import GroupKFold

from .domain import uptake_scale_reference
from .errors import CancelledError, InputError
from .files import read_json
from .intervals import calibrate, interval_bounds, level_key, row_strata
from .metrics import coverage, dose_metrics
from .model import (
    BASELINES,
    CANDIDATES,
    GROUP_STRUCTURE_TYPES,
    INTERVAL_LEVELS,
    DoseModel,
    DoseModelSet,
    radiomics_columns,
    select_group,
    training_domain,
)
from .provenance import library_versions

log = logging.getLogger(__name__)

INTENDED_USE = ("Research and teaching; trained on virtual patients; not clinically validated. "
                "Not for treatment decisions.")


def out_of_fold(rows: pd.DataFrame, group: str, candidate: str, n_splits: int,
                feature_set: str = "uptake") -> np.ndarray:
    """Patient-grouped out-of-fold predictions (Gy/GBq) of one candidate on one feature set."""
    groups = rows["case_id"].to_numpy()
    y = rows["reference_gy_per_gbq"].to_numpy(dtype=float)
    predictions = np.empty(len(rows))
    for train_idx, test_idx in GroupKFold(n_splits=n_splits).split(rows, y, groups):
        assert not set(groups[train_idx]) & set(groups[test_idx])  # no patient on both sides
        model = DoseModel(group, candidate, feature_set).fit(rows.iloc[train_idx], y[train_idx],
                                                             groups=groups[train_idx])
        predictions[test_idx] = model.predict(rows.iloc[test_idx])
    return predictions


def _runs(candidates, feature_sets) -> list[tuple[str, str, str]]:
    """(key, candidate, feature set): the baseline once, every learned candidate on every feature set."""
    runs = []
    for feature_set in feature_sets:
        for candidate in candidates:
            if candidate in BASELINES and feature_set != feature_sets[0]:
                continue
            key = candidate if feature_set == "uptake" else f"{candidate}+{feature_set}"
            runs.append((key, candidate, feature_set))
    return runs


def _out_of_fold_task(rows_by_group: dict, run: tuple) -> np.ndarray:
    """One candidate's patient-grouped cross-validation (all its folds) on one group: one task of an executor."""
    group, candidate, n_splits, feature_set = run
    return out_of_fold(rows_by_group[group], group, candidate, n_splits, feature_set)


def _labelled_rows(table: pd.DataFrame, group: str) -> pd.DataFrame:
    rows = select_group(table, group)
    return rows[rows["reference_gy_per_gbq"].notna()].reset_index(drop=True)


def train_models(table: pd.DataFrame, *, n_splits: int = 5, candidates=CANDIDATES, feature_sets=None,
                 progress: Callable[[int, int], bool | None] | None = None,
                 executor=None) -> tuple[DoseModelSet, dict]:
    """Cross-validate every candidate on every feature set per group, keep the lowest grouped-CV MAPE, refit it
    on all patients. Feature sets default to uptake+clinical, plus radiomics when the table has them.

    The cross-validation runs (one per group x candidate x feature set) are tasks of ``executor`` (a Dask cluster,
    psmadose.executors); without one they run here, one after another. The results are the same either way."""
    if feature_sets is None:
        feature_sets = ("uptake", "radiomics") if radiomics_columns(table) else ("uptake",)
    feature_sets = tuple(feature_sets)
    runs = _runs(candidates, feature_sets)
    if "reference_gy_per_gbq" not in table.columns or table["reference_gy_per_gbq"].isna().all():
        raise InputError("the cohort has no reference doses (doses.csv in each case); cannot train")
    n_patients = table["case_id"].nunique()
    if n_patients < n_splits:
        raise InputError(f"the cohort has {n_patients} patients; patient-grouped {n_splits}-fold CV needs at least "
                         f"{n_splits}")
    models, intervals, domain, report = {}, {}, {}, {}
    steps = len(GROUP_STRUCTURE_TYPES) * (len(runs) + 1)
    rows_by_group = {group: _labelled_rows(table, group) for group in GROUP_STRUCTURE_TYPES}
    trained = [g for g, rows in rows_by_group.items() if rows["case_id"].nunique() >= n_splits]
    cv_runs = [(group, candidate, n_splits, feature_set) for group in trained for _, candidate, feature_set in runs]
    skipped = (len(GROUP_STRUCTURE_TYPES) - len(trained)) * (len(runs) + 1)

    def cv_progress(n: int, total: int):
        if progress and progress(skipped + n, steps) is False:
            raise CancelledError("training cancelled")
        return True

    from .executors import LocalExecutor

    executor = executor or LocalExecutor(1)
    oof_all = executor.run(_out_of_fold_task, cv_runs, shared={g: rows_by_group[g] for g in trained},
                           progress=cv_progress, name="cv",
                           names=[f"{g}-{c}-{f}" for g, c, _, f in cv_runs])
    oof_by_run = {(g, c, f): oof for (g, c, _, f), oof in zip(cv_runs, oof_all)}
    done = skipped + len(cv_runs)
    for group in GROUP_STRUCTURE_TYPES:
        rows = rows_by_group[group]
        if group not in trained:
            log.warning("group %s: too few patients with reference doses, no model", group)
            continue
        y = rows["reference_gy_per_gbq"].to_numpy(dtype=float)
        cv, oof = {}, {}
        for key, candidate, feature_set in runs:
            oof[key] = oof_by_run[(group, candidate, feature_set)]
            cv[key] = dose_metrics(y, oof[key])
        # The physics baseline is a candidate like any other: a learned correction is kept only if it beats it.
        winner = min(cv, key=lambda c: cv[c]["mape"])
        log_residual = np.log(y) - np.log(oof[winner])
        intervals[group] = calibrate(rows, log_residual)
        _, winner_candidate, winner_set = next(r for r in runs if r[0] == winner)
        models[group] = DoseModel(group, winner_candidate, winner_set).fit(rows, y,
                                                                           groups=rows["case_id"].to_numpy())
        domain[group] = training_domain(rows, group)
        done += 1
        if progress and progress(done, steps) is False:
            raise CancelledError("training cancelled")
        entry = {"n": len(rows), "n_patients": int(rows["case_id"].nunique()), "selected": winner,
                 "selected_feature_set": winner_set, "cv": cv, **{k: v for k, v in cv[winner].items() if k != "n"},
                 "baseline_mape": cv.get("population_mean", {}).get("mape", math.nan),
                 "physics_mape": cv.get("physics", {}).get("mape", math.nan)}
        for feature_set in feature_sets:
            learned = [cv[k]["mape"] for k, c, f in runs if f == feature_set and c not in BASELINES]
            if learned:
                entry[f"best_mape_{feature_set}"] = min(learned)
        if "oracle_gy_per_gbq" in rows and rows["oracle_gy_per_gbq"].notna().all():
            entry["oracle_mape"] = dose_metrics(y, rows["oracle_gy_per_gbq"].to_numpy(dtype=float))["mape"]
        strata = row_strata(intervals[group], rows)
        for level in INTERVAL_LEVELS:
            key = level_key(level)
            # In-sample for the calibration itself (it is fitted on these residuals): a check, not a measurement.
            low, high = interval_bounds(intervals[group], strata, level)
            entry[f"coverage_{key}_cv"] = coverage(y, oof[winner] * np.exp(low), oof[winner] * np.exp(high))
        report[group] = entry
    if not models:
        raise InputError("no structure group has enough patients with reference doses to train a model")
    labelled = table[table["reference_gy_per_gbq"].notna()]
    means = labelled.groupby("structure_type")["reference_gy_per_gbq"].mean()
    population_means = {t: float(v) for t, v in means.items()
                        if any(t in types for types in GROUP_STRUCTURE_TYPES.values())}
    families = ["uptake", "patient", "clinical"]
    if any(m.feature_set == "radiomics" for m in models.values()):
        families.append("radiomics")
    model_set = DoseModelSet(models, intervals, domain, feature_families=families,
                             population_means=population_means, uptake_reference=uptake_scale_reference(table))
    card = {
        "intended_use": INTENDED_USE,
        "feature_families": model_set.feature_families,
        "feature_sets_compared": list(feature_sets),
        "features": {g: m.feature_names_in_.tolist() for g, m in models.items()},
        "selected": {g: report[g]["selected"] for g in report},
        "metrics": report,
        "metrics_note": (f"patient-grouped {n_splits}-fold cross-validation on the training cohort (virtual "
                         "patients); MAPE/MAE/R2 on Gy/GBq; baseline_mape = population mean, physics_mape = physics "
                         "baseline alone; oracle_mape = accuracy a perfect model could reach given the simulator's "
                         "unobservable PET-to-therapy discordance"),
        "description": (
            "Each predicted dose is a physics baseline times a bounded learned correction. The baseline is MIRD "
            "self-dose of the tissue's measured PET uptake: D/A = R x SUV_tissue / weight x T_eff / ln2 x 0.0853 "
            "g Gy/(MBq h) (ICRP-107 Lu-177 electron energy, full local absorption), with population effective "
            "half-lives (kidney 35.5 h, parotid 42.2 h) and a therapy-to-PET uptake ratio R calibrated per "
            "structure type and tracer on the training cohort. SUV_tissue is activity (summed over the structure "
            "grown by one PET FWHM, above local background) over the structure's volume on the PET, so it does not "
            "follow blur, noise, voxel size or a voxel of contour. The correction uses clinical, tumour-burden and "
            "acquisition features only, is clipped to the range seen in training, and never sees the structure's "
            "own image: the dose is proportional to the structure's uptake (elasticity 1)."),
        "model_form": ("ln D = ln R(structure type, tracer) + ln[SUV_tissue / weight x T_eff / ln2 x S_self] + "
                       "clip(learned correction from clinical, burden and acquisition features); see psmadose.model "
                       "and psmadose.physics"),
        "settings": {"cv": f"GroupKFold(n_splits={n_splits}) by patient", "candidates": list(candidates),
                     "selection": "lowest grouped-CV MAPE; the physics baseline and the population mean compete",
                     "correction_selection": "SelectKBest(f_regression, k=15) inside each fold for the ridge",
                     "target": "log(Gy/GBq), back-transformed (conditional median)",
                     "intervals": "split-conformal on the selected model's patient-grouped out-of-fold log residuals, "
                                  "equal-tailed, Mondrian by structure type (tumours also by volume tercile); "
                                  "see psmadose.intervals",
                     "applicability_domain": "tracer seen in training; features within the training range (5 % "
                                             "margin); Mahalanobis distance per structure type below the 99th "
                                             "percentile of held-out training patients; see psmadose.domain"},
        "library_versions": library_versions(),
        "name": "psmadose-model",  # train_command names the model and describes the cohort
        "trained_on": {"n_patients": int(table["case_id"].nunique()), "data": "a feature table (cohort not described)"},
    }
    return model_set, card


def cohort_description(cohort: Path) -> dict:
    info = {"directory": Path(cohort).name}
    cohort_json = Path(cohort) / "cohort.json"
    if cohort_json.is_file():
        meta = read_json(cohort_json, "cohort.json")
        meta = meta if isinstance(meta, dict) else {}
        info.update({"preset": meta.get("preset", {}).get("name"), "seed": meta.get("seed"),
                     "simulator_version": meta.get("psmadose_version"), "note": meta.get("note")})
    return info


def train_command(cohort: Path, out: Path, *, workers: int | None = None, overwrite: bool = False,
                  name: str = "psmadose-model", radiomics: bool = False, progress=None,
                  scheduler: str | None = None) -> dict:
    """psmadose train: features of every case, grouped CV, the winners refitted, model + card written.

    With ``radiomics`` (opt-in: radiomics describe image texture, which depends on the scanner) and pyradiomics
    installed, corrections with radiomics are compared too; the settings file travels with the model when a
    winner uses radiomics.
    """
    import shutil

    from .executors import check_options, open_executor
    from .features.table import available_workers, features_for_cases, list_cases, radiomics_params_if_available
    from .modelfile import RADIOMICS_FILE, save_model
    from .outputs import atomic_output_dir, check_output_dir

    check_output_dir(out, overwrite, inputs=(cohort,))
    check_options(scheduler, workers)
    cases = list_cases(cohort)
    params = radiomics_params_if_available(radiomics)
    with open_executor(scheduler, workers) as executor:
        table = features_for_cases(cases, require_doses=True, workers=available_workers(workers), progress=progress,
                                   radiomics_params=params, executor=executor)
        # Cross-validation runs go to the cluster; locally they stay in this process, as before.
        model_set, card = train_models(table, progress=progress, executor=executor if scheduler else None)
    card["name"] = name
    description = cohort_description(cohort)
    description.update({"n_patients": int(table["case_id"].nunique()),
                        "n_segments": {g: int(m["n"]) for g, m in card["metrics"].items()},
                        "data": "virtual patients (psmadose simulator)" if description.get("preset")
                        else "site data (see the cohort)"})
    card["trained_on"] = description
    if params is not None:
        from .features.radiomics import RadiomicsExtractor

        card["radiomics_settings"] = {"file": RADIOMICS_FILE, "sha256": RadiomicsExtractor(params).settings_sha256,
                                      "used_by_model": "radiomics" in model_set.feature_families}
    with atomic_output_dir(out, overwrite, inputs=(cohort,)) as tmp:
        if params is not None and "radiomics" in model_set.feature_families:
            shutil.copyfile(params, tmp / RADIOMICS_FILE)
        card = save_model(model_set, card, tmp)
    return card
