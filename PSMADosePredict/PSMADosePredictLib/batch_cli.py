"""Headless batch prediction through the MRML adapter (the same code path as the Slicer module).

    Slicer --no-main-window --python-script PSMADosePredictLib/batch_cli.py -- --cases CASES --out OUT

Every case folder of CASES (a folder holding clinical.json) is loaded as MRML nodes with Slicer's own storage
nodes, converted by ``caseFromNodes``, predicted with the bundled (or a trusted) model and written to
OUT/<case>/ (doses.csv, doses.json, dose_segmentation.seg.nrrd, report.html) plus OUT/batch_summary.csv.
OUT appears only when complete. A case with bad input is reported in the summary and does not stop the
others. Exit codes: 0 all cases predicted; 2 bad usage/input or some case failed; 1 internal error.

Also runs on the PyPI package slicer-core (``python batch_cli.py --cases ... --out ...`` or ``main(argv)``).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script (Slicer --python-script): make the package importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

log = logging.getLogger("PSMADosePredictLib.batch_cli")

_KEEP_ALIVE: list = []  # application logic and module logics created for a bare slicer-core scene


def _ensureScene():
    """slicer.mrmlScene, or a minimal scene with the module logics the adapter needs (bare slicer-core)."""
    import slicer

    scene = getattr(slicer, "mrmlScene", None)
    if scene is not None:
        return scene
    appLogic = slicer.vtkSlicerApplicationLogic()
    scene = slicer.vtkMRMLScene()
    appLogic.SetMRMLScene(scene)
    logics = []
    for name, className in (("Colors", "vtkSlicerColorLogic"), ("Volumes", "vtkSlicerVolumesLogic"),
                            ("Segmentations", "vtkSlicerSegmentationsModuleLogic")):
        logic = getattr(slicer, className)()
        logic.SetMRMLApplicationLogic(appLogic)  # application logic before the scene
        logic.SetMRMLScene(scene)
        appLogic.SetModuleLogic(name, logic)
        logics.append(logic)
    appLogic.SetColorLogic(logics[0])
    _KEEP_ALIVE.extend([appLogic, *logics])
    slicer.mrmlScene = scene
    return scene


def parseArgs(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="batch_cli.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", required=True, type=Path, help="folder of case folders (each with clinical.json)")
    parser.add_argument("--out", required=True, type=Path, help="output folder (created; must not exist or be empty)")
    parser.add_argument("--model", type=Path, help="model folder (default: the bundled model)")
    parser.add_argument("--trust-model", action="store_true", help="required to load a model other than the bundled")
    parser.add_argument("--activity-gbq", type=float, help="planned activity per cycle (default: from clinical.json)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing non-empty --out as a whole")
    return parser.parse_args(argv)


def run(args: argparse.Namespace, logCallback=None) -> dict:
    from psmadose.batch import write_batch_summary
    from psmadose.errors import InputError
    from psmadose.features.table import list_cases
    from psmadose.outputs import atomic_output_dir, check_output_dir
    from psmadose.predict import write_prediction

    from PSMADosePredictLib.logic import DosePredictLogic

    scene = _ensureScene()
    logic = DosePredictLogic(logCallback=logCallback)
    check_output_dir(args.out, args.overwrite, inputs=(args.cases,))
    logic.loadModel(args.model, trust=args.trust_model)  # fail once, early, on a bad model
    caseDirs = list_cases(args.cases)
    results = []
    with atomic_output_dir(args.out, args.overwrite, inputs=(args.cases,)) as tmp:
        for number, caseDir in enumerate(caseDirs, start=1):
            logic.log(f"[{number}/{len(caseDirs)}] {caseDir.name}")
            nodes = []
            try:
                loaded = logic.loadCase(caseDir, scene)
                nodes = [n for n in (loaded.petNode, loaded.ctNode, loaded.segmentationNode) if n is not None]
                result = logic.predict(loaded.petNode, loaded.segmentationNode, loaded.clinical, loaded.ctNode,
                                       activityGbq=args.activity_gbq, modelPath=args.model,
                                       trustModel=args.trust_model, writeBack=False)
                logic.lastCase.case_id = caseDir.name
                result.case_id = caseDir.name
                staging = tmp / f".{caseDir.name}.partial"
                staging.mkdir()
                write_prediction(staging, logic.lastCase, result, logic.lastModel)
                staging.rename(tmp / caseDir.name)  # a case folder appears only when complete
                results.append({"case_id": caseDir.name, "status": "ok", "n_segments": len(result.predictions),
                                "message": "; ".join(result.warnings)})
            except InputError as exc:
                results.append({"case_id": caseDir.name, "status": "error", "n_segments": 0, "message": str(exc)})
                logic.log(f"error: {caseDir.name}: {exc}")
            except Exception as exc:  # noqa: BLE001 - one broken case must not stop the cohort
                log.exception("internal error on %s", caseDir.name)
                results.append({"case_id": caseDir.name, "status": "internal error", "n_segments": 0,
                                "message": f"{type(exc).__name__}: {exc}"})
            finally:
                for node in nodes:  # keep memory flat over a cohort
                    for i in range(node.GetNumberOfDisplayNodes()):
                        scene.RemoveNode(node.GetNthDisplayNode(i))
                    scene.RemoveNode(node.GetStorageNode())
                    scene.RemoveNode(node)
        summary = write_batch_summary(tmp / "batch_summary.csv", results)
    return summary


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--"]:  # Slicer passes the script's arguments after "--"
        argv = argv[1:]
    from PSMADosePredictLib.dependencies import REQUIREMENTS_FILE, checkRequirements

    missing = checkRequirements()
    if missing:  # a stock Slicer: say what to install instead of failing on the first import
        sys.stderr.write(f"error: missing Python packages {', '.join(m.requirement for m in missing)}; install them "
                         f"once into this Python: in Slicer open the PSMA Dose Predict module, or run "
                         f"slicer.util.pip_install(['-r', r'{REQUIREMENTS_FILE}']) in its Python console\n")
        return 2
    from psmadose.errors import InputError

    try:
        args = parseArgs(argv)
    except SystemExit as exc:  # argparse already printed the usage line
        return int(exc.code or 0) and 2
    try:
        summary = run(args, logCallback=lambda message: sys.stdout.write(message + "\n"))
    except InputError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 2
    except Exception:  # noqa: BLE001
        log.exception("internal error")
        return 1
    sys.stdout.write(f"{summary['succeeded']} case(s) predicted, {summary['failed']} failed; "
                     f"see {args.out / 'batch_summary.csv'}\n")
    if summary["failed"]:
        from psmadose.batch import failure_line

        sys.stderr.write(failure_line(summary, args.out) + "\n")
    return 0 if summary["failed"] == 0 else 2


if __name__ == "__main__":
    status = main()
    try:
        import slicer

        if hasattr(slicer, "app") and hasattr(slicer.util, "exit"):
            slicer.util.exit(status)  # a Slicer started with --python-script keeps running otherwise
    except ImportError:
        pass
    sys.exit(status)
