"""The report's figures: the coronal PET MIP with dose-coloured segments (following the PET's direction) and the
organ-at-risk / tumour doses against published references. PNGs, written atomically, at most MAX_PNG_BYTES."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import (
    FixedFormatter,
    FixedLocator,
    FuncFormatter,
    LogLocator,
    NullFormatter,
    NullLocator,
)

from .dose_colors import add_dose_colorbar, dose_to_rgb, save_figure_atomic
from .dose_references import (
    DOSE_LIMITS,
    ORGAN_AT_RISK_TYPES,
    TUMOUR_DOSE_REFERENCES,
    TUMOUR_TYPE,
    _structure_key,
)
from .html import finite_float, fmt

logger = logging.getLogger(__name__)

MIP_FIGURE_FILENAME = "figure_mip.png"
DOSE_LIMITS_FIGURE_FILENAME = "figure_dose_limits.png"
LEGEND_FILENAME = "dose_legend.png"
MAX_PNG_BYTES = 200_000
_LOG_TICKS = (0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0, 300.0, 1000.0)
FIGURE_DPI = 100


_float = finite_float


_fmt = fmt


def _mpl_text(text: str) -> str:
    """Text shown literally by matplotlib (a '$' would otherwise start mathtext)."""
    return text.replace("$", r"\$")


def _save_png(fig: Figure, path: Path, dpi: float = FIGURE_DPI) -> Path:
    """Save a figure, lowering the resolution if the PNG would exceed ``MAX_PNG_BYTES``."""
    for _ in range(4):
        save_figure_atomic(fig, path, dpi=dpi)
        size = path.stat().st_size
        if size <= MAX_PNG_BYTES:
            break
        logger.debug("%s is %d bytes at %g dpi; saving at a lower resolution", path.name, size, dpi)
        dpi *= 0.8
    return path


# ------------------------------------------------------------------------------------------------ figure: MIP


def _erode(mask: np.ndarray) -> np.ndarray:
    """4-neighbour binary erosion of a 2-D mask (pixels outside the array count as background)."""
    padded = np.pad(mask, 1, constant_values=False)
    return padded[1:-1, 1:-1] & padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]


def _lps_axes(direction: Sequence[float] | None) -> tuple[tuple[int, int, int], tuple[bool, bool, bool], list[str]]:
    """For each patient axis S, P, L (array order k, j, i of an LPS image): the array axis that runs along it and
    whether it runs backwards. Handles flipped and permuted (e.g. sagittally stored) grids; an oblique grid is
    drawn along its nearest patient axes, with a note."""
    if direction is None:
        return (0, 1, 2), (False, False, False), []
    matrix = np.asarray(direction, dtype=float).reshape(3, 3)  # column c: image axis c (i, j, k) in L, P, S
    notes = []
    if not np.allclose(np.abs(matrix), np.round(np.abs(matrix)), atol=1e-3):
        notes.append("The PET grid is oblique to the patient axes; the MIP is drawn along the nearest patient axes.")
    nearest = np.argmax(np.abs(matrix), axis=0)  # patient axis (0 L, 1 P, 2 S) of image axes i, j, k
    if sorted(nearest.tolist()) != [0, 1, 2]:
        return (0, 1, 2), (False, False, False), notes + ["The PET grid's axes are degenerate; drawn as stored."]
    order, backwards = [], []
    for patient_axis in (2, 1, 0):  # S, P, L -> array axes 0, 1, 2 of an LPS (k, j, i) array
        image_axis = int(np.flatnonzero(nearest == patient_axis)[0])
        order.append(2 - image_axis)  # image axis i is array axis 2, k is array axis 0
        backwards.append(bool(matrix[patient_axis, image_axis] < 0))
    return tuple(order), tuple(backwards), notes


def _orient_lps(array: np.ndarray, direction: Sequence[float] | None) -> tuple[np.ndarray, list[str]]:
    """The (k, j, i) array re-ordered and flipped so that its axes run along S, P, L (increasing)."""
    order, backwards, notes = _lps_axes(direction)
    array = np.transpose(array, order)
    for axis, flip in enumerate(backwards):
        if flip:
            array = np.flip(array, axis=axis)
    return array, notes


def _lps_spacing(spacing_mm: Sequence[float], direction: Sequence[float] | None) -> tuple[float, float, float]:
    """(i, j, k) spacing of the re-oriented array (``_orient_lps``)."""
    order, _, _ = _lps_axes(direction)
    by_array_axis = [float(s) for s in reversed(list(spacing_mm))]  # array axes k, j, i
    k, j, i = (by_array_axis[a] for a in order)
    return i, j, k


def write_mip_figure(
    path: Path | str,
    pet_array: np.ndarray,
    spacing_mm: Sequence[float],
    masks: dict[str, np.ndarray],
    rows: list[dict],
    *,
    direction: Sequence[float] | None = None,
    suv_window_max: float | None = None,
) -> tuple[Path, str, list[str]]:
    """Coronal PET maximum-intensity projection with each predicted segment in its dose colour.

    ``pet_array`` is (k, j, i) SUV on an LPS grid (SimpleITK order), ``spacing_mm`` the (i, j, k) spacing.
    Without ``direction`` (SimpleITK's 9-tuple) the grid is taken as axis-aligned LPS (identity direction).
    The projection runs along j (anterior-posterior); the head is at the top and the patient's right on the
    left of the image (anterior view, radiological convention).

    Returns the PNG path, a caption and notes about segments that could not be drawn.
    """
    path = Path(path)
    pet = np.asarray(pet_array, dtype=np.float32)
    if pet.ndim != 3:
        raise ValueError(f"pet_array must be 3-D (k, j, i), got shape {pet.shape}")
    spacing_i, _spacing_j, spacing_k = _lps_spacing(spacing_mm, direction)
    notes: list[str] = []
    pet, orient_notes = _orient_lps(pet, direction)
    notes.extend(orient_notes)

    mip = np.nan_to_num(pet, nan=0.0).max(axis=1)  # (k, i)
    n_k, n_i = mip.shape
    if suv_window_max is None:
        robust = float(np.percentile(mip, 99.5)) if mip.size else 0.0
        suv_window_max = min(10.0, robust) if robust > 0 else 1.0

    # Display pixels per voxel, to draw outlines at least ~2 display pixels wide.
    width_mm, height_mm = n_i * spacing_i, n_k * spacing_k
    img_h_in = 6.5
    img_w_in = float(np.clip(img_h_in * width_mm / height_mm, 2.5, 10.0))
    img_h_in = min(img_h_in, img_w_in * height_mm / width_mm)
    px_per_voxel = FIGURE_DPI * min(img_w_in / n_i, img_h_in / n_k)
    outline_voxels = max(1, math.ceil(2.0 / max(px_per_voxel, 1e-6)))

    # Overlay RGBA: translucent fill, opaque outline; large segments first so small ones stay visible.
    overlay = np.zeros((n_k, n_i, 4), dtype=np.float32)
    drawn: list[tuple[int, str, float, float]] = []  # (number, name, k centre, i centre)
    projected = []
    for number, row in enumerate(rows, start=1):
        name = str(row.get("segment", ""))
        mask = masks.get(name)
        if mask is None:
            notes.append(f"No mask for segment {name!r}; not shown on the MIP.")
            continue
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != pet_array.shape:
            notes.append(
                f"Mask of segment {name!r} has shape {mask.shape}, PET {pet_array.shape}; "
                "not shown on the MIP."
            )
            continue
        mask, _ = _orient_lps(mask, direction)
        proj = mask.any(axis=1)
        if not proj.any():
            notes.append(f"Segment {name!r} is empty; not shown on the MIP.")
            continue
        projected.append((int(proj.sum()), number, name, proj, _float(row.get("predicted_gy_per_gbq"))))
    projected.sort(key=lambda item: -item[0])
    for _area, number, name, proj, dose in projected:
        rgb = dose_to_rgb(dose if dose is not None else math.nan)
        inner = proj
        for _ in range(outline_voxels):
            inner = _erode(inner)
        outline = proj & ~inner
        overlay[inner] = (*rgb, 0.35)
        overlay[outline] = (*rgb, 1.0)
        ks, is_ = np.nonzero(proj)
        drawn.append((number, name, float(ks.mean()), float(is_.mean())))

    # Layout in inches: colour bar (with its label) at the bottom, image above it, title on top.
    fig_w_in = max(img_w_in + 0.4, 4.6)
    fig_h_in = img_h_in + 1.5
    fig = Figure(figsize=(fig_w_in, fig_h_in))
    ax = fig.add_axes(
        ((fig_w_in - img_w_in) / 2 / fig_w_in, 1.1 / fig_h_in, img_w_in / fig_w_in, img_h_in / fig_h_in)
    )
    extent = (0.0, width_mm, 0.0, height_mm)  # x: i (patient right -> left), y: k (feet -> head)
    ax.imshow(
        mip,
        cmap="gray_r",
        vmin=0.0,
        vmax=suv_window_max,
        origin="lower",
        extent=extent,
        interpolation="antialiased",
        aspect="equal",
    )
    ax.imshow(overlay, origin="lower", extent=extent, interpolation="nearest", aspect="equal")
    for number, _name, k_centre, i_centre in drawn:
        ax.annotate(
            str(number),
            xy=((i_centre + 0.5) * spacing_i, (k_centre + 0.5) * spacing_k),
            xytext=(6, 6),
            textcoords="offset points",
            fontsize=7,
            color="black",
            bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none", "alpha": 0.75},
        )
    for x, ha, text in ((0.01, "left", "R"), (0.99, "right", "L")):
        ax.text(
            x,
            0.99,
            text,
            transform=ax.transAxes,
            ha=ha,
            va="top",
            fontsize=12,
            fontweight="bold",
            color="black",
        )
    ax.text(0.5, 0.99, "S", transform=ax.transAxes, ha="center", va="top", fontsize=10, color="0.3")
    ax.text(0.5, 0.01, "I", transform=ax.transAxes, ha="center", va="bottom", fontsize=10, color="0.3")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(f"Coronal PET MIP (SUV 0–{suv_window_max:.3g}), segments in dose colour", fontsize=10)
    bar_w_in = min(fig_w_in - 0.6, 5.0)
    cax = fig.add_axes(
        ((fig_w_in - bar_w_in) / 2 / fig_w_in, 0.5 / fig_h_in, bar_w_in / fig_w_in, 0.2 / fig_h_in)
    )
    add_dose_colorbar(fig, cax, label="Predicted dose (Gy/GBq, log scale)")
    _save_png(fig, path)

    caption = (
        f"Coronal maximum-intensity projection of the PET (anterior view; inverted grey, SUV window "
        f"0–{suv_window_max:.3g}), head at the top and the patient's right on the left of the image "
        f"(radiological convention; R/L marked). Each predicted segment is outlined and lightly filled in "
        f"its dose colour; numbers refer to the table. Pixels are drawn to scale "
        f"({spacing_i:.3g} × {spacing_k:.3g} mm)."
    )
    return path, caption, notes


# ----------------------------------------------------------------------------------- figure: dose vs limits


def _bar_panel(
    ax, names, values, lows80, highs80, lows90, highs90, colours, *, per_cycle=None, left: float = 0.0
) -> None:
    y = np.arange(len(names))
    widths = [v - left for v in values]
    ax.barh(y, widths, left=left, color=colours, edgecolor="0.25", linewidth=0.6, height=0.6, zorder=2)
    for idx in range(len(names)):
        if lows90[idx] is not None and highs90[idx] is not None:
            ax.plot([lows90[idx], highs90[idx]], [y[idx], y[idx]], color="black", lw=1.0, zorder=3)
            for x in (lows90[idx], highs90[idx]):
                ax.plot([x, x], [y[idx] - 0.15, y[idx] + 0.15], color="black", lw=1.0, zorder=3)
        if lows80[idx] is not None and highs80[idx] is not None:
            ax.plot(
                [lows80[idx], highs80[idx]],
                [y[idx], y[idx]],
                color="black",
                lw=3.2,
                zorder=3,
                solid_capstyle="butt",
            )
        if per_cycle is not None and per_cycle[idx] is not None:
            ax.plot(per_cycle[idx], y[idx], marker="D", ms=5, mfc="white", mec="black", zorder=4)
    ax.set_yticks(y)
    ax.set_yticklabels(names, fontsize=8)
    ax.set_ylim(len(names) - 0.5, -0.5)
    ax.grid(axis="x", color="0.85", lw=0.6, zorder=0)
    ax.tick_params(axis="x", labelsize=8)


def write_dose_limits_figure(
    path: Path | str,
    rows: list[dict],
    *,
    planned_activity_gbq: float | None,
    planned_cycles: int | None,
) -> tuple[Path, str]:
    """Organ-at-risk cumulative doses against ``DOSE_LIMITS`` and tumour Gy/GBq against published references.

    Bars: predicted dose, coloured by the dose colormap; thick/thin whiskers: 80 %/90 % prediction intervals;
    diamonds: dose per cycle. Returns the PNG path and a caption.
    """
    path = Path(path)
    activity = _float(planned_activity_gbq)
    cycles = int(planned_cycles) if planned_cycles else None
    scale_cycle = activity
    scale_cumulative = activity * cycles if activity is not None and cycles else None

    numbered = list(enumerate(rows, start=1))
    order = {t: n for n, t in enumerate(ORGAN_AT_RISK_TYPES)}
    oars = [(n, r) for n, r in numbered if _structure_key(r.get("structure_type")) in order]
    oars.sort(key=lambda nr: (order[_structure_key(nr[1].get("structure_type"))], str(nr[1].get("segment"))))
    tumours = [(n, r) for n, r in numbered if _structure_key(r.get("structure_type")) == TUMOUR_TYPE]

    def scaled(row, key, scale):
        value = _float(row.get(key))
        return value * scale if value is not None and scale is not None else None

    heights = []
    if oars:
        heights.append(1.3 + 0.32 * len(oars))
    if tumours:
        heights.append(1.3 + 0.26 * len(tumours))
    if not heights:
        heights = [1.2]
    fig = Figure(figsize=(8.0, sum(heights) + 0.6 * len(heights) + 0.3), layout="constrained")
    axes = fig.subplots(len(heights), 1, gridspec_kw={"height_ratios": heights}, squeeze=False)[:, 0]
    caption_parts = []
    panel = 0

    if oars:
        ax = axes[panel]
        panel += 1
        names = [_mpl_text(f"{n}. {r.get('segment', '')}") for n, r in oars]
        colours = [dose_to_rgb(_float(r.get("predicted_gy_per_gbq")) or math.nan) for _, r in oars]
        if scale_cumulative is not None:
            values = [
                _float(r.get("predicted_gy_cumulative"))
                or scaled(r, "predicted_gy_per_gbq", scale_cumulative)
                for _, r in oars
            ]
            per_cycle = [
                _float(r.get("predicted_gy")) or scaled(r, "predicted_gy_per_gbq", scale_cycle)
                for _, r in oars
            ]
            scale, unit = scale_cumulative, "Gy"
            ax.set_xlabel(
                f"Predicted absorbed dose (Gy), cumulative over {cycles} cycles of {activity:.3g} GBq; "
                f"◇ = per cycle",
                fontsize=9,
            )
        else:
            values = [_float(r.get("predicted_gy_per_gbq")) for _, r in oars]
            per_cycle = None
            scale, unit = 1.0, "Gy/GBq"
            ax.set_xlabel(
                "Predicted absorbed dose per injected activity (Gy/GBq); planned activity unknown", fontsize=9
            )
        values_plot = [v if v is not None else 0.0 for v in values]
        bounds = {
            key: [scaled(r, key, scale) for _, r in oars]
            for key in (
                "interval_80_low_gy_per_gbq",
                "interval_80_high_gy_per_gbq",
                "interval_90_low_gy_per_gbq",
                "interval_90_high_gy_per_gbq",
            )
        }
        _bar_panel(
            ax,
            names,
            values_plot,
            bounds["interval_80_low_gy_per_gbq"],
            bounds["interval_80_high_gy_per_gbq"],
            bounds["interval_90_low_gy_per_gbq"],
            bounds["interval_90_high_gy_per_gbq"],
            colours,
            per_cycle=per_cycle,
        )
        x_max = max(
            [v for v in values_plot] + [b for b in bounds["interval_90_high_gy_per_gbq"] if b] + [0.0]
        )
        drawn_limits = []
        if unit == "Gy":
            for limit in DOSE_LIMITS:
                idx = [
                    i
                    for i, (_, r) in enumerate(oars)
                    if _structure_key(r.get("structure_type")) == limit.structure_type
                ]
                if not idx:
                    continue
                ax.plot(
                    [limit.value, limit.value],
                    [min(idx) - 0.45, max(idx) + 0.45],
                    color="#c0392b",
                    lw=1.8,
                    ls="--",
                    zorder=5,
                )
                ax.annotate(
                    limit.label,
                    xy=(limit.value, min(idx) - 0.45),
                    xytext=(3, -2),
                    textcoords="offset points",
                    fontsize=7.5,
                    color="#c0392b",
                    va="top",
                    annotation_clip=False,
                )
                x_max = max(x_max, limit.value)
                drawn_limits.append(limit)
        ax.set_xlim(0, x_max * 1.35 if x_max > 0 else 1.0)
        ax.set_title("Organs at risk", fontsize=10, loc="left")
        handles = [
            Line2D([], [], color="black", lw=3.2, label="80 % interval"),
            Line2D([], [], color="black", lw=1.0, label="90 % interval"),
        ]
        if per_cycle is not None:
            handles.append(
                Line2D([], [], ls="none", marker="D", ms=5, mfc="white", mec="black", label="per cycle")
            )
        if drawn_limits:
            handles.append(
                Line2D(
                    [], [], color="#c0392b", lw=1.8, ls="--", label="reference limit (external-beam-derived)"
                )
            )
        ax.legend(
            handles=handles,
            fontsize=7.5,
            loc="lower right",
            bbox_to_anchor=(1.0, 1.0),
            ncol=len(handles),
            frameon=False,
            borderaxespad=0.2,
            handlelength=1.8,
            columnspacing=1.0,
        )
        caption_parts.append(
            "Organs at risk: predicted cumulative absorbed dose over the planned cycles (bars), 80 % and "
            "90 % prediction intervals (thick and thin whiskers) and dose per cycle (diamonds). "
            "Dashed lines: reference limits from external-beam radiotherapy (kidney 23 Gy, Fendler; "
            "parotid 25 Gy mean dose, QUANTEC), not 177Lu-specific thresholds; none is drawn for "
            "submandibular or lacrimal glands, for which no sourced limit exists."
            if unit == "Gy"
            else "Organs at risk: predicted dose per injected activity; the planned activity is unknown, "
            "so no comparison with cumulative limits is possible."
        )

    if tumours:
        ax = axes[panel]
        panel += 1
        names = [_mpl_text(f"{n}. {r.get('segment', '')}") for n, r in tumours]
        values = [_float(r.get("predicted_gy_per_gbq")) for _, r in tumours]
        colours = [dose_to_rgb(v if v is not None else math.nan) for v in values]
        keys = (
            "interval_80_low_gy_per_gbq",
            "interval_80_high_gy_per_gbq",
            "interval_90_low_gy_per_gbq",
            "interval_90_high_gy_per_gbq",
        )
        bounds = [[_float(r.get(k)) for _, r in tumours] for k in keys]
        positive = [v for v in values + bounds[2] + bounds[3] if v is not None and v > 0]
        low = min(positive + [1.0]) / 1.6
        high = max(positive + [r.value_gy_per_gbq for r in TUMOUR_DOSE_REFERENCES]) * 1.6
        values_plot = [v if v is not None and v > 0 else low for v in values]
        bounds = [[b if b is not None and b > 0 else None for b in col] for col in bounds]
        ax.set_xscale("log")
        _bar_panel(ax, names, values_plot, *bounds, colours, left=low)  # log axis: bars start at its edge
        ax.set_xlim(low, high)
        for ref in TUMOUR_DOSE_REFERENCES:
            ax.axvline(ref.value_gy_per_gbq, color="0.35", lw=1.2, ls=":", zorder=5)
        ax.xaxis.set_major_locator(FixedLocator([t for t in _LOG_TICKS if low <= t <= high]))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _pos: f"{value:g}"))
        ax.xaxis.set_minor_locator(LogLocator(subs=np.arange(2, 10)))
        ax.xaxis.set_minor_formatter(NullFormatter())
        # The published references are labelled on a top axis, clear of the bars.
        top = ax.secondary_xaxis("top")
        top.xaxis.set_major_locator(FixedLocator([r.value_gy_per_gbq for r in TUMOUR_DOSE_REFERENCES]))
        top.xaxis.set_major_formatter(FixedFormatter([r.short_label for r in TUMOUR_DOSE_REFERENCES]))
        top.xaxis.set_minor_locator(NullLocator())
        top.tick_params(labelsize=7.5, colors="0.3", length=3)
        ax.set_xlabel("Predicted tumour absorbed dose per injected activity (Gy/GBq, log scale)", fontsize=9)
        ax.set_title(
            "Tumours (dotted: Volter 2021 mean Gy/GBq of responders / non-responders)",
            fontsize=10,
            loc="left",
        )
        caption_parts.append(
            "Tumours: predicted dose per injected activity with 80 %/90 % intervals; dotted lines mark the "
            "mean tumour doses of responders (10.2 Gy/GBq) and non-responders (4.0 Gy/GBq) reported by "
            "Volter et al. 2021 — published group means for orientation, not response thresholds."
        )

    if not oars and not tumours:
        axes[0].axis("off")
        axes[0].text(0.5, 0.5, "No predicted segments", ha="center", va="center", fontsize=11)
        caption_parts.append("No predicted segments.")
    _save_png(fig, path)
    return path, " ".join(caption_parts)


