"""The documented dose colormap of PSMADosePredict.

Predicted absorbed dose per injected activity (Gy/GBq) is coloured with matplotlib's "turbo" colormap on a
logarithmic scale over the fixed range ``DOSE_COLOR_RANGE_GY_PER_GBQ`` = 0.1-30 Gy/GBq; values outside the
range are clipped to its ends. The range is fixed (not scaled to the patient) so that a colour means the same
dose in every case, every report and every Slicer scene: 0.1 Gy/GBq (dark blue) covers the lowest organ doses
(e.g. bone marrow ~0.02-0.03, kidney ~0.5 Gy/GBq) and 30 Gy/GBq (dark red) the highest tumour doses.

The same mapping colours the dose segmentation (``dose_segmentation.seg.nrrd``), the report figures and the
legend PNG, so a segment's colour can be read back against the legend.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.cm import ScalarMappable
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure
from matplotlib.ticker import FixedLocator, NullLocator

logger = logging.getLogger(__name__)

DOSE_COLOR_RANGE_GY_PER_GBQ: tuple[float, float] = (0.1, 30.0)
"""Dose range (Gy/GBq) spanned by the colormap; doses outside are clipped to its ends."""

DOSE_COLORMAP_NAME = "turbo"
"""matplotlib colormap used for doses."""

LEGEND_TICKS_GY_PER_GBQ: tuple[float, ...] = (0.1, 0.3, 1.0, 3.0, 10.0, 30.0)
"""Tick positions of the legend colour bar (Gy/GBq)."""

NO_DOSE_RGB: tuple[float, float, float] = (0.6, 0.6, 0.6)
"""Colour of segments without a usable dose (missing, NaN or infinite prediction)."""


def _norm() -> LogNorm:
    low, high = DOSE_COLOR_RANGE_GY_PER_GBQ
    return LogNorm(vmin=low, vmax=high, clip=True)


def dose_to_fraction(dose_gy_per_gbq: float) -> float:
    """Position (0-1) of a dose on the log-scale colour bar; clipped; NaN for a non-finite dose."""
    try:
        dose = float(dose_gy_per_gbq)
    except (TypeError, ValueError):
        return math.nan
    if not math.isfinite(dose):
        return math.nan
    low, high = DOSE_COLOR_RANGE_GY_PER_GBQ
    dose = min(max(dose, low), high)  # also maps zero and negative doses to the low end
    return (math.log10(dose) - math.log10(low)) / (math.log10(high) - math.log10(low))


def dose_to_rgb(dose_gy_per_gbq: float) -> tuple[float, float, float]:
    """Colour (r, g, b), floats 0-1, of a predicted dose in Gy/GBq.

    Log scale over ``DOSE_COLOR_RANGE_GY_PER_GBQ``, clipped at both ends (zero and negative doses take the
    low-end colour). A missing or non-finite dose gets the neutral ``NO_DOSE_RGB``.
    """
    fraction = dose_to_fraction(dose_gy_per_gbq)
    if math.isnan(fraction):
        return NO_DOSE_RGB
    r, g, b, _ = colormaps[DOSE_COLORMAP_NAME](fraction)
    return (float(r), float(g), float(b))


def doses_to_rgb(doses_gy_per_gbq) -> np.ndarray:
    """Vectorised ``dose_to_rgb``: an (n, 3) float array for n doses."""
    return np.array([dose_to_rgb(d) for d in np.ravel(np.asarray(doses_gy_per_gbq, dtype=float))]).reshape(
        -1, 3
    )


def colormap_description() -> str:
    """One sentence describing the dose colormap, for the README, the report and the JSON output."""
    low, high = DOSE_COLOR_RANGE_GY_PER_GBQ
    return (
        f"Segments are coloured by predicted absorbed dose per injected activity with the matplotlib "
        f"'{DOSE_COLORMAP_NAME}' colormap on a log scale from {low:g} to {high:g} Gy/GBq "
        f"(blue = low, red = high), values outside the range clipped to its ends."
    )


def _draw_colorbar(fig: Figure, cax, *, label: str | None = None) -> None:
    mappable = ScalarMappable(norm=_norm(), cmap=colormaps[DOSE_COLORMAP_NAME])
    bar = fig.colorbar(mappable, cax=cax, orientation="horizontal", extend="both")
    bar.ax.xaxis.set_major_locator(FixedLocator(LEGEND_TICKS_GY_PER_GBQ))
    bar.ax.xaxis.set_minor_locator(NullLocator())
    bar.ax.set_xticklabels([f"{t:g}" for t in LEGEND_TICKS_GY_PER_GBQ])
    bar.ax.tick_params(labelsize=9)
    bar.set_label(label or "Predicted absorbed dose per injected activity (Gy/GBq, log scale)", fontsize=9)


def add_dose_colorbar(fig: Figure, cax, *, label: str | None = None) -> None:
    """Draw the documented dose colour bar into the axes ``cax`` of ``fig`` (used by the report figures)."""
    _draw_colorbar(fig, cax, label=label)


def save_figure_atomic(fig: Figure, path: Path | str, *, dpi: float = 100) -> Path:
    """Render ``fig`` with the Agg canvas to a temporary file beside ``path`` and rename it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig)
    from .outputs import atomic_output_file

    with atomic_output_file(path, overwrite=True) as tmp, open(tmp, "wb") as handle:
        fig.savefig(handle, format="png", dpi=dpi)
    return path


def write_legend_png(path: Path | str, *, dpi: float = 100) -> Path:
    """Write the dose legend: a horizontal colour bar with ticks at 0.1, 0.3, 1, 3, 10 and 30 Gy/GBq."""
    fig = Figure(figsize=(5.5, 1.1))
    cax = fig.add_axes((0.05, 0.52, 0.9, 0.28))
    _draw_colorbar(fig, cax)
    out = save_figure_atomic(fig, path, dpi=dpi)
    logger.debug("wrote dose legend %s", out)
    return out
