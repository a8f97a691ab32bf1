"""Build the bundled model deterministically: simulate the virtual training and validation cohorts (randomised
sites), train, evaluate on the held-out cohort, measure robustness (``psmadose robustness``), install into
psmadose/models/ and pin its sha256 in psmadose/modelfile.py.

    python tools/build_bundled_model.py [--workers 2] [--keep DIR] [--no-install]

Same code, library versions and CPU features -> the same model.skops bytes; elsewhere the same selected models,
metrics and predictions to floating-point precision (Testing/model/test_bundled_reproducible.py).
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import shutil
import tempfile
from pathlib import Path

from psmadose.evaluation import evaluate_command
from psmadose.modelfile import BUNDLED_MODEL_NAME, CARD_FILE, write_card
from psmadose.robustness import run_robustness
from psmadose.simulate.cohort import PRESETS, simulate_cohort
from psmadose.training import train_command

ROOT = Path(__file__).resolve().parents[1]
MODELS = ROOT / "PSMADosePredict" / "psmadose" / "models"
MODELFILE = ROOT / "PSMADosePredict" / "psmadose" / "modelfile.py"
COMMAND = "python tools/build_bundled_model.py"
ROBUSTNESS_PATIENTS = 20


def build(workdir: Path, workers: int) -> dict:
    training = workdir / "training"
    validation = workdir / "validation"
    for directory, preset in ((training, "training"), (validation, "validation")):
        if not (directory / "cohort.json").is_file():  # --keep DIR reuses cohorts simulated before
            simulate_cohort(directory, preset, workers=workers)
    model_dir = workdir / "model"
    for stale in (model_dir, workdir / "evaluation"):
        if stale.exists():
            shutil.rmtree(stale)
    card = train_command(training, model_dir, workers=workers, name=BUNDLED_MODEL_NAME)
    card["model_id"] = f"{BUNDLED_MODEL_NAME}-{card['sha256'][:12]}"
    card["build_command"] = COMMAND
    card["trained_on"]["presets"] = {"training": PRESETS["training"].__dict__ | {},
                                     "validation": PRESETS["validation"].__dict__ | {}}
    # Pin first so evaluate can load it as the bundled model would be loaded (trust is explicit here).
    metrics = evaluate_command(validation, workdir / "evaluation", model_path=model_dir, trust_model=True,
                               workers=workers)
    card["validation"] = {
        "measured_on": f"held-out virtual cohort (preset 'validation', seed {PRESETS['validation'].seed}, "
                       f"{PRESETS['validation'].n_patients} patients never used in training)",
        "metrics": metrics,
    }
    robustness = run_robustness(model_path=model_dir, trust_model=True, n_patients=ROBUSTNESS_PATIENTS,
                                workers=workers)
    card["robustness"] = {k: v for k, v in robustness.items() if k != "phantoms"}
    card["robustness"]["phantoms"] = {key: block["organs"] for key, block in robustness["phantoms"].items()}
    card["build_platform"] = build_platform()
    return write_card(model_dir, card)


def build_platform() -> dict:
    """What floating-point results can depend on besides library versions: CPU architecture and SIMD features."""
    from numpy._core._multiarray_umath import __cpu_features__

    return {"machine": platform.machine(), "cpu_features": sorted(k for k, v in __cpu_features__.items() if v)}


def install(model_dir: Path, sha256: str, card_sha256: str) -> None:
    target = MODELS / BUNDLED_MODEL_NAME
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    for name in ("model.skops", CARD_FILE):
        shutil.copy2(model_dir / name, target / name)
    source = MODELFILE.read_text(encoding="utf-8")
    source, n = re.subn(r'^BUNDLED_MODEL_SHA256 = ".*"$', f'BUNDLED_MODEL_SHA256 = "{sha256}"', source,
                        flags=re.MULTILINE)
    source, m = re.subn(r'^BUNDLED_CARD_SHA256 = ".*"$', f'BUNDLED_CARD_SHA256 = "{card_sha256}"', source,
                        flags=re.MULTILINE)
    if n != 1 or m != 1:
        raise SystemExit("could not pin the sha256 values in modelfile.py")
    MODELFILE.write_text(source, encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--keep", type=Path, default=None, help="keep cohorts and evaluation in this folder")
    parser.add_argument("--no-install", action="store_true", help="build and report, do not install")
    args = parser.parse_args()
    workdir = args.keep or Path(tempfile.mkdtemp(prefix="psmadose-build-"))
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        card = build(workdir, args.workers)
        if not args.no_install:
            install(workdir / "model", card["sha256"], card["card_sha256"])
        print(json.dumps({"sha256": card["sha256"], "model_id": card["model_id"],
                          "cv": {g: {k: m[k] for k in ("selected", "mape", "baseline_mape", "r2")}
                                 for g, m in card["metrics"].items()}}, indent=2))
    finally:
        if args.keep is None:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
