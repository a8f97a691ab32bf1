"""The ``psmadose`` command line (the one place that writes to the terminal).

Exit codes: 0 success; 2 bad input or usage (one line ``error: ...`` on stderr); 1 unexpected internal error.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from pathlib import Path

from . import outputs
from .errors import CancelledError, InputError, os_error_message

log = logging.getLogger("psmadose")
from . import BANNER  # noqa: E402


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit 2, as every other bad input
        sys.stderr.write(f"error: {message} (see '{self.prog} --help')\n")
        raise SystemExit(2)


class _HeldWarnings(logging.Handler):
    """Collects log records; ``release_held`` writes them to stderr as 'warning: ...' lines."""

    def __init__(self):
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record):
        if record.levelno < logging.WARNING:  # progress details (-v) are shown at once
            sys.stderr.write(f"{record.levelname.lower()}: {record.getMessage()}\n")
        else:
            self.records.append(record)

    def release_held(self):  # not 'release': that is logging.Handler's lock release, called after every emit
        for record in self.records:
            sys.stderr.write(f"{record.levelname.lower()}: {' '.join(record.getMessage().split())}\n")
        self.records.clear()


class _Progress:
    """tqdm progress bar as a core progress callback (None when output is not a terminal)."""

    def __init__(self, description: str):
        self.description = description
        self.bar = None

    def __call__(self, done: int, total: int):
        check_stop()
        if self.bar is None:
            from tqdm import tqdm

            self.bar = tqdm(total=total, desc=self.description, unit="step", file=sys.stderr, disable=None)
        self.bar.n = done
        self.bar.refresh()
        return True

    def close(self):
        if self.bar is not None:
            self.bar.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    return value


def _hours_list(text: str) -> list[float]:
    try:
        return [float(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of hours, e.g. 4,24,96") from None


def format_table(rows: list[dict], activity_gbq: float, cycles: int) -> str:
    header = (f"{'segment':<22}{'type':<14}{'vol mL':>8}{'SUVmean':>8}{'Gy/GBq':>8}{'Gy/cyc':>8}{'Gy total':>9}"
              f"  {'80% interval Gy/GBq':<20}flag")
    lines = [f"Predicted absorbed doses at {activity_gbq:g} GBq per cycle x {cycles} cycles", header,
             "-" * len(header)]
    for r in rows:
        interval = f"{r['interval_80_low_gy_per_gbq']:.2f}-{r['interval_80_high_gy_per_gbq']:.2f}"
        flag = "" if r["in_domain"] else "out of domain"
        lines.append(f"{r['segment']:<22}{r['structure_type']:<14}{r['volume_ml']:>8.1f}{r['suv_mean']:>8.2f}"
                     f"{r['predicted_gy_per_gbq']:>8.2f}{r['predicted_gy']:>8.2f}{r['predicted_gy_cumulative']:>9.1f}"
                     f"  {interval:<20}{flag}")
    return "\n".join(lines)


def cmd_simulate(args) -> int:
    from .simulate.cohort import simulate_cohort

    with _Progress("simulating") as progress:
        simulate_cohort(args.out, args.preset, n_patients=args.patients, seed=args.seed,
                        spect_times_h=args.spect_times, workers=args.workers, overwrite=args.overwrite,
                        progress=progress, scheduler=args.scheduler)
    print(f"wrote virtual patients to {args.out}")
    return 0


def cmd_calibration(args) -> int:
    from .simulate.calibration import format_calibration, run_calibration

    if args.patients < 50:
        raise InputError("--patients must be at least 50 for a meaningful calibration")
    result = run_calibration(args.patients, args.seed)
    print(format_calibration(result))
    return 0 if all(c.passed for c in result["checks"]) else 1


def cmd_features(args) -> int:
    import multiprocessing
    import os

    from .case import read_case
    from .features import extract_features
    from .features.table import radiomics_params_if_available
    from .outputs import atomic_output_file, check_output_file, write_csv_table

    check_output_file(args.out, args.overwrite, inputs=(args.case,))  # before the work, not after
    case = Path(args.case)
    cohort = case.is_dir() and not (case / "clinical.json").exists() and any(
        (sub / "clinical.json").is_file() for sub in case.iterdir() if sub.is_dir())
    if cohort or args.scheduler is not None or args.workers is not None:
        return _cohort_features(args, cohort)
    # One case: spread its segments over the cores, where forked workers make that pay (not under spawn).
    workers = (os.cpu_count() or 1) if multiprocessing.get_start_method() == "fork" else 1
    table = extract_features(read_case(args.case), radiomics_params_if_available(not args.no_radiomics),
                             radiomics_workers=workers)
    with atomic_output_file(Path(args.out), args.overwrite, inputs=(args.case,)) as tmp:
        write_csv_table(table, tmp)
    print(f"wrote {len(table)} segments x {table.shape[1] - 3} features to {args.out}")
    return 0


def _cohort_features(args, cohort: bool) -> int:
    """features over a cohort (a folder of cases) or with --scheduler: one task per case, one CSV, case order."""
    from .executors import check_options, open_executor
    from .features.table import features_for_cases, list_cases, radiomics_params_if_available
    from .outputs import atomic_output_file, write_csv_table

    check_options(args.scheduler, args.workers)
    cases = list_cases(args.case) if cohort else [args.case]
    params = radiomics_params_if_available(not args.no_radiomics)
    with _Progress("features") as progress, open_executor(args.scheduler, args.workers) as executor:
        table = features_for_cases(cases, progress=progress, radiomics_params=params, executor=executor, labels=False)
    with atomic_output_file(Path(args.out), args.overwrite, inputs=(args.case,)) as tmp:
        write_csv_table(table, tmp)
    print(f"wrote {len(table)} segments of {len(cases)} case(s) x {table.shape[1] - 3} features to {args.out}")
    return 0


def cmd_suv(args) -> int:
    from .dicom.series import read_pet_suv, write_suv
    from .outputs import check_output_file

    check_output_file(args.out, args.overwrite, inputs=(args.pet_dicom_dir,))  # before the work
    suv = read_pet_suv(args.pet_dicom_dir, args.method, keep_identifiers=args.keep_identifiers)
    sidecar = write_suv(suv, args.out, overwrite=args.overwrite, inputs=(args.pet_dicom_dir,))
    factor = suv.record["suv_factor"]
    shown = f"{factor:.6g}" if isinstance(factor, float) else f"{min(factor):.6g}..{max(factor):.6g} (per slice)"
    print(f"wrote {suv.record['method']} ({suv.record['units_out']}) to {args.out}; factor {shown}; "
          f"details in {sidecar}")
    return 0


def _print_prediction(result, out: Path) -> None:
    print(BANNER)
    print(format_table(result.rows(), result.activity_gbq, result.cycles))
    print(f"model {result.provenance['model_id']}; outputs in {out} (doses.csv, doses.json, "
          "dose_segmentation.seg.nrrd, report.html)")


def cmd_predict(args) -> int:
    from .predict import run_predict

    result = run_predict(args.case, args.out, activity_gbq=args.activity_gbq, model_path=args.model,
                         trust_model=args.trust_model, overwrite=args.overwrite)
    _print_prediction(result, args.out)
    return 0


def cmd_demo(args) -> int:
    import shutil
    import tempfile

    from .case import read_case
    from .modelfile import load_model
    from .outputs import atomic_output_dir
    from .predict import predict_case, write_prediction
    from .simulate.cohort import simulate_cohort

    loaded = load_model(None)
    with atomic_output_dir(args.out, args.overwrite) as tmp:
        with tempfile.TemporaryDirectory() as scratch:
            cohort = Path(scratch) / "cohort"
            simulate_cohort(cohort, "demo", workers=1)
            (tmp / "virtual_patient").mkdir()
            case_dir = cohort / "vp001"
            shutil.copytree(case_dir, tmp / "virtual_patient", dirs_exist_ok=True)
        case = read_case(tmp / "virtual_patient")
        result = predict_case(case, loaded)
        (tmp / "prediction").mkdir()
        write_prediction(tmp / "prediction", case, result, loaded)
    _print_prediction(result, Path(args.out) / "prediction")
    reference = case.reference_doses or {}
    if reference:
        print("virtual patient's ground truth (simulator) vs prediction, Gy/GBq:")
        for row in result.rows():
            if row["segment"] in reference:
                ref = reference[row["segment"]]
                print(f"  {row['segment']:<22} truth {ref:6.2f}  predicted {row['predicted_gy_per_gbq']:6.2f}  "
                      f"error {100 * (row['predicted_gy_per_gbq'] - ref) / ref:+5.0f}%")
    return 0


def cmd_train(args) -> int:
    from .training import train_command

    with _Progress("training") as progress:
        card = train_command(args.cohort, args.out, workers=args.workers, overwrite=args.overwrite,
                             name=args.name, radiomics=args.radiomics, progress=progress, scheduler=args.scheduler)
    print(f"model {card['model_id']} written to {args.out}")
    for group, m in card["metrics"].items():
        print(f"  {group:<9} {m['selected']:<26} grouped-CV MAPE {100 * m['mape']:5.1f}%  "
              f"(population mean {100 * m['baseline_mape']:5.1f}%, physics {100 * m['physics_mape']:5.1f}%"
              + (f", oracle floor {100 * m['oracle_mape']:5.1f}%" if "oracle_mape" in m else "") + ")")
    return 0


def cmd_robustness(args) -> int:
    from .features.table import available_workers
    from .outputs import check_output_dir
    from .robustness import run_robustness, summary_lines, write_report

    check_output_dir(args.out, args.overwrite)
    with _Progress("robustness") as progress:
        report = run_robustness(model_path=args.model, trust_model=args.trust_model, n_patients=args.patients,
                                seed=args.seed, workers=available_workers(args.workers), progress=progress)
    write_report(report, args.out, overwrite=args.overwrite)
    print("\n".join(summary_lines(report)))
    print(f"wrote {args.out}/robustness.json and robustness.txt")
    return 0


def cmd_evaluate(args) -> int:
    from .evaluation import evaluate_command

    with _Progress("evaluating") as progress:
        metrics = evaluate_command(args.cohort, args.out, model_path=args.model, trust_model=args.trust_model,
                                   workers=args.workers, overwrite=args.overwrite, progress=progress,
                                   scheduler=args.scheduler)
    for kind, m in metrics.items():
        if isinstance(m, dict) and "mape" in m:
            ci = m.get("mape_ci95") or [float("nan")] * 2
            print(f"  {kind:<14} n={m['n']:<5} MAPE {100 * m['mape']:5.1f}% "
                  f"(95% CI {100 * ci[0]:.1f}-{100 * ci[1]:.1f})  baseline {100 * m['baseline_mape']:5.1f}%"
                  f"  R2 {m['r2']:.2f}  coverage80 {m['coverage_80']:.2f}  coverage90 {m['coverage_90']:.2f}")
    print(f"wrote {args.out}/metrics.json and report.html (measured on the cohort given: {args.cohort})")
    return 0


def cmd_batch(args) -> int:
    from .batch import failure_line, run_batch

    with _Progress("predicting") as progress:
        summary = run_batch(args.cases, args.out, model_path=args.model, trust_model=args.trust_model,
                            workers=args.workers, overwrite=args.overwrite, progress=progress,
                            scheduler=args.scheduler)
    print(f"{summary['succeeded']} case(s) predicted, {summary['failed']} failed; see {args.out}/batch_summary.csv")
    if summary["failed"]:
        sys.stderr.write(failure_line(summary, args.out) + "\n")
    return 0 if summary["failed"] == 0 else 2


def _common_options(parser: argparse.ArgumentParser, *, model: bool, workers: bool) -> None:
    if model:
        parser.add_argument("--model", type=Path, default=None, help="model directory (default: the bundled model)")
        parser.add_argument("--trust-model", action="store_true", help="allow a model other than the bundled one")
    if workers:
        parser.add_argument("--workers", type=int, default=None, help="parallel processes (default: all cores)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output as a whole")


def cmd_dosimetry(args) -> int:
    from .batch import failure_line
    from .dosimetry import Settings, run_dosimetry
    from .dosimetry.cohort import SUMMARY, is_cohort, list_studies, run_dosimetry_cohort
    from .dosimetry.study import looks_like_study

    settings = Settings(method=args.method, fit=args.fit, register=args.register, fwhm_mm=args.fwhm_mm,
                        recovery=not args.no_recovery, density=args.density, activity_cov=args.activity_cov,
                        spill_correction=args.spill_correction)
    if is_cohort(args.study):
        with _Progress("dosimetry") as progress:
            summary = run_dosimetry_cohort(args.study, args.out, settings, into=args.into, overwrite=args.overwrite,
                                           workers=args.workers, scheduler=args.scheduler, progress=progress)
        into = f"; reference doses written into {summary['written_into']} case(s) of {args.into}" if args.into else ""
        print(f"{summary['succeeded']} study(ies) done, {summary['failed']} failed; see {args.out}/{SUMMARY}{into}")
        if summary["failed"]:
            sys.stderr.write(failure_line(summary, args.out, SUMMARY, ("study(ies)", "studies")) + "\n")
        return 0 if summary["failed"] == 0 else 2
    if args.workers is not None or args.scheduler is not None:
        if not looks_like_study(args.study):
            list_studies(args.study)  # raises: names the layout of a folder of studies
        raise InputError(f"{args.study}: one study runs in this process; --workers and --scheduler apply to a folder "
                         "of study folders")
    with _Progress("dosimetry") as progress:
        result = run_dosimetry(args.study, args.out, settings, into=args.into, overwrite=args.overwrite,
                               progress=progress)
    for s in result.segments:
        print(f"{s.name}: {s.absorbed_dose_gy:.3g} Gy ({s.absorbed_dose_gy / result.study.activity_gbq:.3g} Gy/GBq, "
              f"{s.tia.model}, +- {s.dose_sd_gy:.2g} Gy)")
    print(f"wrote {args.out}" + (f" and {args.into / 'doses.csv'}" if args.into else ""))
    return 0


def _scheduler_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--scheduler", default=None, metavar="ADDRESS",
                        help="run the cases on a Dask cluster: tcp://HOST:8786 (a running 'dask scheduler') or "
                        "'local' (a LocalCluster of --workers processes); needs psmadose[distributed]; inputs and "
                        "--out on storage every worker sees (docs/CLUSTER.md)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="psmadose", description="Pre-therapy prediction of 177Lu-PSMA absorbed doses. " + BANNER)
    from . import __version__

    parser.add_argument("--version", action="version", version=f"psmadose {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    parser.add_argument("--debug", action="store_true", help="show tracebacks of internal errors")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("demo", help="virtual sample patient -> prediction -> report (no network)")
    p.add_argument("--out", type=Path, default=Path("psmadose-demo"))
    p.add_argument("--overwrite", action="store_true", help="replace an existing output directory")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("simulate", help="write virtual patients (case directories)")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--preset", default="demo", help="demo, southampton-poc, training, validation")
    p.add_argument("--patients", type=int, default=None)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--spect-times", type=_hours_list, default=None, metavar="H,H,...",
                   help="also write post-therapy SPECT at these hours, e.g. 4,24,96")
    p.add_argument("--workers", type=int, default=None)
    p.add_argument("--overwrite", action="store_true")
    _scheduler_option(p)
    p.set_defaults(func=cmd_simulate)

    p = sub.add_parser("calibration", help="print the simulator's calibration against published figures")
    p.add_argument("--patients", type=int, default=300)
    p.add_argument("--seed", type=int, default=12345)
    p.set_defaults(func=cmd_calibration)

    p = sub.add_parser("suv", help="DICOM PET series -> SUV image (+ JSON sidecar of every value used)")
    p.add_argument("pet_dicom_dir", type=Path, metavar="PET_DICOM_DIR")
    p.add_argument("--out", type=Path, required=True, help="SUV image, e.g. SUV.nrrd (SUV.json is written beside it)")
    p.add_argument("--method", choices=("bw", "lbm", "bsa"), default="bw",
                   help="bw: body weight (g/mL); lbm: SUL, Janmahasatian lean body mass; bsa: Du Bois (cm2/mL)")
    p.add_argument("--keep-identifiers", action="store_true",
                   help="copy patient name/ID/birth date, UIDs and dates into the outputs (default: left out)")
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")
    p.set_defaults(func=cmd_suv)

    p = sub.add_parser("features", help="feature table of one case, or of a cohort (a folder of cases) in one CSV")
    p.add_argument("case", type=Path, metavar="CASE|COHORT")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--no-radiomics", action="store_true", help="uptake, patient and clinical features only "
                   "(also what happens when pyradiomics is not installed)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    p.add_argument("--workers", type=int, default=None, help="parallel processes over the cases of a cohort "
                   "(default: all cores)")
    _scheduler_option(p)
    p.set_defaults(func=cmd_features)

    p = sub.add_parser("predict", help="predict doses for one case")
    p.add_argument("case", type=Path)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--activity-gbq", type=_positive_float, default=None,
                   help="activity per cycle (default: planned_activity_gbq of clinical.json)")
    _common_options(p, model=True, workers=False)
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("train", help="train dose models on a cohort with reference doses")
    p.add_argument("cohort", type=Path)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--name", default="psmadose-model")
    p.add_argument("--radiomics", action="store_true", help="also compare corrections that use PET/CT radiomics "
                   "(texture depends on the scanner: off by default)")
    p.add_argument("--no-radiomics", action="store_true", help="the default; kept for older scripts")
    _common_options(p, model=False, workers=True)
    _scheduler_option(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", help="evaluate a model on a cohort with reference doses")
    p.add_argument("cohort", type=Path)
    p.add_argument("--out", type=Path, required=True)
    _common_options(p, model=True, workers=True)
    _scheduler_option(p)
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("robustness", help="does a predicted dose depend on image formation or contours? "
                       "(held-out virtual patients re-rendered, textbook phantoms)")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--patients", type=int, default=20)
    p.add_argument("--seed", type=int, default=4242)
    _common_options(p, model=True, workers=True)
    p.set_defaults(func=cmd_robustness)

    p = sub.add_parser("batch", help="predict every case of a folder")
    p.add_argument("cases", type=Path)
    p.add_argument("--out", type=Path, required=True)
    _common_options(p, model=True, workers=True)
    _scheduler_option(p)
    p.set_defaults(func=cmd_batch)

    p = sub.add_parser("dosimetry", help="post-therapy 177Lu dosimetry from quantitative SPECT/CT time points (one "
                       "STUDY folder, or a folder of study folders: one OUT/<study>/ each)")
    p.add_argument("study", type=Path, metavar="STUDY")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--method", choices=("vsv", "lde", "sphere"), default="vsv",
                   help="vsv: voxel S-value convolution (default); lde: local energy deposition; sphere: published "
                        "sphere S-values for segment doses")
    p.add_argument("--fit", default="auto",
                   help="auto (AICc), mono, bi, trapezoid, hanscheid or madsen (one time point)")
    p.add_argument("--into", type=Path, default=None, help="also write the reference doses into CASE/doses.csv (for a "
                   "folder of studies: a cohort; each study into the case folder of the same name)")
    p.add_argument("--workers", type=int, default=None, help="parallel processes over a folder of studies")
    p.add_argument("--register", action="store_true", help="rigidly register time points to the reference (SimpleITK)")
    p.add_argument("--fwhm-mm", type=_positive_float, default=12.0, help="SPECT resolution for partial-volume "
                   "recovery (default 12 mm)")
    p.add_argument("--no-recovery", action="store_true", help="plain mean inside the contour (no recovery)")
    p.add_argument("--spill-correction", action="store_true",
                   help="also remove the activity blurred in from neighbouring segments (see docs/DOSIMETRY.md)")
    p.add_argument("--density", choices=("default", "ct"), default="default",
                   help="default: 1.04 g/mL (ICRU 44 soft tissue); ct: from the reference CT")
    p.add_argument("--activity-cov", type=_positive_float, default=0.10,
                   help="relative uncertainty of one SPECT activity (default 0.10)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output (and CASE/doses.csv)")
    _scheduler_option(p)
    p.set_defaults(func=cmd_dosimetry)
    return parser


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP (a closed terminal): unwinds like Ctrl-C so temporary outputs are removed."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


_stop_requested: list[int] = []  # the first signal; later ones must not interrupt the cleanup it started


def _stop_exception(signum: int) -> KeyboardInterrupt:
    return KeyboardInterrupt() if signum == signal.SIGINT else Terminated(signum)


def _on_signal(signum, frame):
    if _stop_requested:
        return
    _stop_requested.append(signum)
    # Python drops an exception raised while it runs fork callbacks (e.g. logging's): the progress callback
    # re-raises from the recorded signal, so a stop is never lost.
    raise _stop_exception(signum)


def check_stop() -> None:
    """Raise the pending stop if a signal arrived but its exception was swallowed."""
    if _stop_requested and not _stop_raised and sys.exc_info()[1] is None:  # not while already unwinding
        _stop_raised.append(True)
        raise _stop_exception(_stop_requested[0])


_stop_raised: list[bool] = []


def _unraisable(unraisable) -> None:
    """A stop raised while Python ran a finalizer or weakref callback is swallowed there ('Exception ignored
    in ...'): keep quiet about it; ``check_stop`` (progress, before any output is committed) raises it again."""
    if isinstance(unraisable.exc_value, KeyboardInterrupt) and _stop_requested:
        return
    sys.__unraisablehook__(unraisable)


def _install_signal_handlers() -> None:
    if threading.current_thread() is not threading.main_thread():
        return
    sys.unraisablehook = _unraisable
    if check_stop not in outputs.before_commit:
        outputs.before_commit.append(check_stop)
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        if signal.getsignal(signum) is not signal.SIG_IGN:  # nohup'ed runs keep ignoring SIGHUP
            signal.signal(signum, _on_signal)


def _stopped(exc: BaseException) -> int:
    _stop_raised.append(True)
    signum = getattr(exc, "signum", signal.SIGINT)
    name = signal.Signals(signum).name if not isinstance(exc, CancelledError) else "cancel"
    sys.stderr.write(f"error: stopped ({name}); temporary outputs removed, nothing was written\n")
    return 128 + int(signum)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _install_signal_handlers()
    # Warnings are held back until the command succeeds: a failing command prints exactly one error line.
    held = _HeldWarnings()
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        handlers=[held])
    try:
        status = args.func(args)
        held.release_held()
        return status
    except InputError as exc:
        sys.stderr.write(f"error: {' '.join(str(exc).split())}\n")
        return 2
    except (CancelledError, KeyboardInterrupt) as exc:
        return _stopped(exc)
    except Exception as exc:
        message = os_error_message(exc)  # full disk, name too long, no permission: the user's to fix
        if message is not None and not args.debug:
            sys.stderr.write(f"error: {' '.join(message.split())}\n")
            return 2
        if args.debug:
            raise
        sys.stderr.write(f"error: internal error ({type(exc).__name__}: {exc}); rerun with --debug and report it\n")
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
