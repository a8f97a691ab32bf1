"""Post-therapy 177Lu dosimetry from quantitative SPECT/CT (issue 15): study reading, registration, TAC fits and
time-integrated activity, Lu-177 kernels, absorbed dose, outputs. See docs/DOSIMETRY.md."""

from .run import DOSE_METHODS, DosimetryResult, Settings, compute, run_dosimetry

__all__ = ["DOSE_METHODS", "DosimetryResult", "Settings", "compute", "run_dosimetry"]
