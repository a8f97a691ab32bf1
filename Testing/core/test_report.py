"""Tests of the dose colormap (psmadose.dose_colors) and the HTML report (psmadose.report)."""

from __future__ import annotations

import math
import re

import matplotlib.image as mpimg
import numpy as np
import pytest
from matplotlib import colormaps
from psmadose import dose_colors
from psmadose.dose_colors import (
    DOSE_COLOR_RANGE_GY_PER_GBQ,
    NO_DOSE_RGB,
    colormap_description,
    dose_to_fraction,
    dose_to_rgb,
    write_legend_png,
)
from psmadose.dose_references import DOSE_LIMITS, dose_limit_for
from psmadose.report import (
    BANNER_TEXT,
    DOSE_LIMITS_FIGURE_FILENAME,
    LEGEND_FILENAME,
    MAX_PNG_BYTES,
    MIP_FIGURE_FILENAME,
    REPORT_FILENAME,
    write_report,
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
SHAPE_KJI = (50, 30, 40)  # k: superior, j: posterior, i: patient left
SPACING_IJK = (3.0, 3.0, 5.0)
HOT_DOSE = 20.0  # Gy/GBq, the high-dose lesion near the head on the patient's right
KIDNEY_DOSE = 0.5


def _ball(centre_kji, radius_vox) -> np.ndarray:
    k, j, i = np.indices(SHAPE_KJI)
    ck, cj, ci = centre_kji
    return (k - ck) ** 2 + (j - cj) ** 2 + (i - ci) ** 2 <= radius_vox**2


def _row(name, structure_type, dose, volume_ml, activity=7.4, cycles=4, **extra) -> dict:
    row = {
        "segment": name,
        "structure_type": structure_type,
        "volume_ml": volume_ml,
        "suv_mean": 8.0,
        "suv_max": 14.5,
        "predicted_gy_per_gbq": dose,
        "predicted_gy": dose * activity,
        "predicted_gy_cumulative": dose * activity * cycles,
        "interval_80_low_gy_per_gbq": dose * 0.8,
        "interval_80_high_gy_per_gbq": dose * 1.25,
        "interval_90_low_gy_per_gbq": dose * 0.7,
        "interval_90_high_gy_per_gbq": dose * 1.45,
        "in_domain": True,
        "warnings": "",
    }
    row.update(extra)
    return row


@pytest.fixture
def case():
    """A small synthetic PET (SUV, (k, j, i)) with a hot lesion, a kidney and a parotid gland."""
    rng = np.random.default_rng(0)
    _, j, i = np.indices(SHAPE_KJI)
    body = ((j - 15) / 12.0) ** 2 + ((i - 20) / 17.0) ** 2 <= 1.0
    pet = np.where(body, 1.0, 0.05).astype(np.float32) + rng.normal(0, 0.05, SHAPE_KJI).astype(np.float32)
    masks = {
        # High k = superior (near the head); low i = patient right, drawn on the left of the image.
        "lesion_hot <b>&": _ball((42, 15, 8), 3),
        # kidney_left: patient left = high i, drawn on the right of the image; low in the body.
        "kidney_left": _ball((15, 18, 30), 4),
        "parotid_right": _ball((44, 12, 12), 2),
    }
    pet[masks["lesion_hot <b>&"]] = 25.0
    pet[masks["kidney_left"]] = 18.0
    pet[masks["parotid_right"]] = 9.0
    rows = [
        _row("kidney_left", "kidney", KIDNEY_DOSE, 150.0),
        _row("parotid_right", "parotid", 1.0, 25.0, warnings="gland partly outside the PET field of view"),
        _row("lesion_hot <b>&", "tumour", HOT_DOSE, 12.3, in_domain=False),
    ]
    clinical = {
        "planned_activity_gbq": 7.4,
        "planned_cycles": 4,
        "pet_tracer": "18F-DCFPyL",
        "weight_kg": 82,
        "egfr_ml_min_1_73m2": 75,
    }
    model_card = {
        "model_id": "virtual-cohort-v1",
        "sha256": "0123456789abcdef" * 4,
        "intended_use": "demonstration / research; not clinically validated",
        "trained_on": "virtual cohort (simulated patients)",
        "metrics": {
            "tumour": {"mape": 0.31, "mae_gy_per_gbq": 1.2, "r2": 0.55, "baseline_mape": 0.8, "n": 300},
            "kidney": {"mape": 0.12, "mae_gy_per_gbq": 0.06, "r2": 0.61, "baseline_mape": 0.26, "n": 80},
            "salivary": {"mape": 0.2, "n": 120, "oracle_mape": 0.08},
        },
        "features": {"tumour": ["suv_mean", "volume_ml"], "kidney": ["suv_mean", "egfr_ml_min_1_73m2"]},
    }
    provenance = {
        "psmadose_version": "0.1.0",
        "model": {"id": "virtual-cohort-v1", "sha256": "0123456789abcdef" * 4},
        "input_hashes": {"pet.nrrd": "f" * 64},
    }
    return {
        "case_id": "case<01>",
        "rows": rows,
        "pet_array": pet,
        "spacing_mm": SPACING_IJK,
        "masks": masks,
        "clinical": clinical,
        "model_card": model_card,
        "provenance": provenance,
        "warnings": ["segment 'liver' not predicted (reference organ)"],
    }


def _load_png(path) -> np.ndarray:
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    image = mpimg.imread(path)
    assert image.ndim == 3 and image.shape[0] > 50 and image.shape[1] > 50
    assert float(image[..., :3].std()) > 0.01, "image is uniform"
    return image[..., :3]


def _colour_pixels(image: np.ndarray, rgb, tol: float = 0.03) -> np.ndarray:
    """(row, col) of pixels within ``tol`` of ``rgb`` in every channel."""
    close = np.all(np.abs(image - np.asarray(rgb, dtype=np.float32)) <= tol, axis=-1)
    return np.argwhere(close)


# ------------------------------------------------------------------------------------------ dose colormap


def test_dose_colormap_ends_clip_and_monotonic():
    low, high = DOSE_COLOR_RANGE_GY_PER_GBQ
    assert (low, high) == (0.1, 30.0)
    cmap = colormaps["turbo"]
    assert dose_to_rgb(low) == pytest.approx(cmap(0.0)[:3])
    assert dose_to_rgb(high) == pytest.approx(cmap(1.0)[:3])
    # Clipped outside the range; zero and negative doses take the low end.
    assert dose_to_rgb(0.001) == dose_to_rgb(low) == dose_to_rgb(0.0) == dose_to_rgb(-1.0)
    assert dose_to_rgb(1000.0) == dose_to_rgb(high)
    assert dose_to_rgb(math.nan) == NO_DOSE_RGB
    assert dose_to_rgb(None) == NO_DOSE_RGB
    # Log scale: the geometric midpoint of the range is the middle of the colormap.
    assert dose_to_fraction(math.sqrt(low * high)) == pytest.approx(0.5)
    assert dose_to_rgb(math.sqrt(low * high)) == pytest.approx(cmap(0.5)[:3])
    doses = np.logspace(math.log10(low), math.log10(high), 50)
    fractions = [dose_to_fraction(d) for d in doses]
    assert fractions[0] == pytest.approx(0.0) and fractions[-1] == pytest.approx(1.0)
    assert np.all(np.diff(fractions) > 0)
    for dose in (0.1, 0.5, 3.0, 30.0):
        rgb = dose_to_rgb(dose)
        assert len(rgb) == 3 and all(isinstance(c, float) and 0.0 <= c <= 1.0 for c in rgb)
    assert dose_colors.doses_to_rgb([0.1, 30.0]).shape == (2, 3)


def test_colormap_description_and_legend(tmp_path):
    text = colormap_description()
    assert "turbo" in text and "log" in text and "0.1" in text and "30" in text and "Gy/GBq" in text
    path = write_legend_png(tmp_path / "legend.png")
    image = _load_png(path)
    assert image.shape[1] > image.shape[0]  # horizontal bar
    # Both colormap ends appear in the bar.
    assert len(_colour_pixels(image, dose_to_rgb(0.1))) > 0
    assert len(_colour_pixels(image, dose_to_rgb(30.0))) > 0
    assert [p.name for p in tmp_path.iterdir()] == ["legend.png"]


# ----------------------------------------------------------------------------------------------- report


def test_report_contents_and_files(tmp_path, case):
    out = tmp_path / "out"
    report = write_report(out, **case)
    assert report == out / REPORT_FILENAME and report.is_file()
    text = report.read_text(encoding="utf-8")

    assert BANNER_TEXT in text
    assert "case&lt;01&gt;" in text and "case<01>" not in text
    for row in case["rows"]:
        name = row["segment"]
        assert (name if name.isidentifier() else "lesion_hot &lt;b&gt;&amp;") in text
    assert "<b>&" not in text.replace("<b>&lt;", "")  # raw segment name never appears unescaped
    assert "7.4 GBq" in text and "<b>4</b>" in text
    assert "Gy/GBq" in text and "Volume (mL)" in text
    assert "16.0–25.0" in text and "14.0–29.0" in text  # HOT_DOSE 80 %, 90 % intervals as "low–high"
    assert "outside the model" in text  # in_domain False is reported
    assert "gland partly outside the PET field of view" in text
    assert "reference organ" in text  # caller's warnings
    # Model card summary: short hash, MAPE as percent, data it was measured on.
    assert "virtual-cohort-v1" in text and "0123456789ab" in text
    assert "31.0 %" in text and "12.0 %" in text and "virtual cohort" in text
    assert "<details>" in text and "input_hashes" in text
    # Self-contained: no scripts, no external resources.
    assert "<script" not in text.lower()
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", text)

    for name in (MIP_FIGURE_FILENAME, DOSE_LIMITS_FIGURE_FILENAME, LEGEND_FILENAME):
        assert f'src="{name}"' in text
        path = out / name
        assert path.is_file() and path.stat().st_size < MAX_PNG_BYTES
        _load_png(path)

    # Only the finished files remain: no temporary names.
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [REPORT_FILENAME, MIP_FIGURE_FILENAME, DOSE_LIMITS_FIGURE_FILENAME, LEGEND_FILENAME]
    )


def test_mip_shows_dose_colours_in_place(tmp_path, case):
    write_report(tmp_path, **case)
    image = _load_png(tmp_path / MIP_FIGURE_FILENAME)
    height, width = image.shape[:2]
    image_part = image[: int(0.75 * height)]  # the colour bar is at the bottom of the figure

    hot = _colour_pixels(image_part, dose_to_rgb(HOT_DOSE))
    assert len(hot) >= 20, "the high-dose lesion's colour is missing from the MIP"
    hot_row, hot_col = hot.mean(axis=0)
    assert hot_row < 0.35 * height, "superior lesion not near the top: head must be at the top"
    assert hot_col < 0.5 * width, "lesion on the patient's right must be on the left of the image"

    kidney = _colour_pixels(image_part, dose_to_rgb(KIDNEY_DOSE))
    assert len(kidney) >= 20
    kidney_row, kidney_col = kidney.mean(axis=0)
    assert kidney_col > 0.5 * width, "left kidney must be on the right of the image"
    assert kidney_row > hot_row


def test_mip_aspect_ratio_follows_spacing(tmp_path):
    from psmadose.report import write_mip_figure

    # A saturated box 30 voxels wide (i, 3 mm) and 30 slices tall (k, 5 mm): 90 mm x 150 mm.
    pet = np.zeros(SHAPE_KJI, np.float32)
    pet[10:40, 10:20, 5:35] = 20.0
    write_mip_figure(tmp_path / "mip.png", pet, SPACING_IJK, {}, [])
    image = _load_png(tmp_path / "mip.png").mean(axis=-1)
    black = image[: int(0.8 * image.shape[0])] < 0.05
    # Keep pixels inside solid black areas only: drops the axes frame, the title and the R/L letters.
    solid = black.copy()
    for shift in (-3, 3):
        solid &= np.roll(black, shift, axis=0) & np.roll(black, shift, axis=1)
    rows, cols = np.flatnonzero(solid.any(axis=1)), np.flatnonzero(solid.any(axis=0))
    height_px, width_px = rows.max() - rows.min() + 7, cols.max() - cols.min() + 7
    assert height_px / width_px == pytest.approx(150.0 / 90.0, rel=0.05)


def test_report_is_defensive_about_missing_inputs(tmp_path, case):
    rows = [dict(r) for r in case["rows"]]
    rows[0]["interval_90_low_gy_per_gbq"] = None
    rows[1]["predicted_gy_per_gbq"] = float("nan")
    report = write_report(
        tmp_path,
        case_id="minimal",
        rows=rows,
        pet_array=case["pet_array"],
        spacing_mm=case["spacing_mm"],
        masks={"kidney_left": case["masks"]["kidney_left"], "parotid_right": np.zeros((2, 2, 2), bool)},
        clinical={},
        model_card={},
        provenance={},
        warnings=[],
    )
    text = report.read_text(encoding="utf-8")
    assert "7.4 GBq" in text  # planned activity inferred from predicted_gy / predicted_gy_per_gbq
    assert "not shown on the MIP" in text
    assert "No accuracy metrics" in text


def test_failed_report_leaves_no_partial_files(tmp_path, case):
    case = dict(case, pet_array=np.zeros((10, 10), np.float32))
    with pytest.raises(ValueError):
        write_report(tmp_path, **case)
    assert not (tmp_path / REPORT_FILENAME).exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".") or p.name.endswith(".tmp")]


def test_dose_limits_table():
    kidney = dose_limit_for("kidney")
    assert (
        kidney is not None and kidney.value == 23.0 and kidney.unit == "Gy" and kidney.basis == "cumulative"
    )
    assert "Fendler" in kidney.source and "external-beam" in kidney.source
    parotid = dose_limit_for("Parotid")
    assert parotid is not None and parotid.value == 25.0
    assert "QUANTEC" in parotid.source and "not a 177Lu-specific threshold" in parotid.source
    assert dose_limit_for("submandibular") is None and dose_limit_for("lacrimal") is None
    assert all(limit.basis == "cumulative" and limit.source for limit in DOSE_LIMITS)


def test_mip_honours_flipped_direction(tmp_path, case):
    from psmadose.report import write_mip_figure

    # i increasing toward the patient's right: the segment at high i is on the patient's right, image left.
    flipped = (-1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
    write_mip_figure(
        tmp_path / "mip.png", case["pet_array"], SPACING_IJK, case["masks"], case["rows"], direction=flipped
    )
    image = _load_png(tmp_path / "mip.png")
    kidney = _colour_pixels(image[: int(0.75 * image.shape[0])], dose_to_rgb(KIDNEY_DOSE))
    assert len(kidney) >= 20 and kidney[:, 1].mean() < 0.5 * image.shape[1]


def test_report_without_segments(tmp_path, case):
    report = write_report(tmp_path, **dict(case, rows=[], masks={}))
    assert BANNER_TEXT in report.read_text(encoding="utf-8")
    _load_png(tmp_path / DOSE_LIMITS_FIGURE_FILENAME)
