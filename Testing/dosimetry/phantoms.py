"""Synthetic dosimetry STUDY folders with exactly known activity: uniform spheres on a uniform background, no
blur, no noise, so every TIA and dose has an analytic value (the expectations in the tests come from here)."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from psmadose.images import write_image
from psmadose.segmentation import STRUCTURE_COLORS, SegmentToWrite, write_segmentation

SPACING_MM = 4.0
SHAPE_KJI = (30, 40, 40)


@dataclass(frozen=True)
class Sphere:
    name: str
    center_kji: tuple[int, int, int]
    radius_mm: float
    c0_bq_ml: float
    teff_h: float


DEFAULT_SPHERES = (
    Sphere("kidney_left", (15, 20, 12), 22.0, 2.0e6, 35.5),
    Sphere("lesion_01", (15, 20, 29), 12.0, 6.0e6, 60.0),
)
BACKGROUND = (2.0e4, 8.0)  # Bq/mL at t=0, effective half-life (h)


def reference_image(shape=SHAPE_KJI, spacing=SPACING_MM) -> sitk.Image:
    image = sitk.Image(shape[2], shape[1], shape[0], sitk.sitkFloat32)
    image.SetSpacing((spacing,) * 3)
    image.SetOrigin((-80.0, -80.0, -60.0))
    return image


def masks(spheres=DEFAULT_SPHERES, shape=SHAPE_KJI, spacing=SPACING_MM) -> dict[str, np.ndarray]:
    k, j, i = np.indices(shape)
    out = {}
    for s in spheres:
        d2 = ((k - s.center_kji[0]) ** 2 + (j - s.center_kji[1]) ** 2 + (i - s.center_kji[2]) ** 2) * spacing ** 2
        out[s.name] = d2 <= s.radius_mm ** 2
    return out


def concentration(t_h: float, spheres=DEFAULT_SPHERES, shape=SHAPE_KJI, spacing=SPACING_MM,
                  fwhm_mm: float = 0.0) -> np.ndarray:
    c_bg, t_bg = BACKGROUND
    array = np.full(shape, c_bg * math.exp(-math.log(2) * t_h / t_bg), dtype=np.float64)
    for s, mask in zip(spheres, masks(spheres, shape, spacing).values()):
        array[mask] = s.c0_bq_ml * math.exp(-math.log(2) * t_h / s.teff_h)
    if fwhm_mm > 0:  # a SPECT-like Gaussian blur (activity-conserving)
        from scipy import ndimage

        array = ndimage.gaussian_filter(array, fwhm_mm / 2.355 / spacing, mode="nearest")
    return array.astype(np.float32)


def write_study(directory: Path, times_h=(4, 24, 96), *, spheres=DEFAULT_SPHERES, activity_gbq: float = 7.4,
                admin: dict | None = None, shape=SHAPE_KJI, spacing=SPACING_MM, fwhm_mm: float = 0.0) -> Path:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    reference = reference_image(shape, spacing)
    for t in times_h:
        image = sitk.GetImageFromArray(concentration(t, spheres, shape, spacing, fwhm_mm))
        image.CopyInformation(reference)
        write_image(image, directory / f"spect_{t:g}h.nrrd")
    segments = [SegmentToWrite(name, mask, STRUCTURE_COLORS["tumour" if name.startswith("lesion") else "kidney"])
                for name, mask in masks(spheres, shape, spacing).items()]
    write_segmentation(directory / "segmentation.seg.nrrd", reference, segments)
    record = {"activity_gbq": activity_gbq, "radiopharmaceutical": "177Lu-PSMA-617",
              "injection_datetime": "2026-01-02T10:00:00"} if admin is None else admin
    (directory / "administration.json").write_text(json.dumps(record), encoding="utf-8")
    return directory


def analytic_tia_mbq_h(sphere: Sphere, spacing=SPACING_MM, shape=SHAPE_KJI) -> float:
    """Exact TIA of the sphere's voxels: C0 x voxel volume x Teff / ln 2."""
    volume_ml = float(masks((sphere,), shape, spacing)[sphere.name].sum()) * spacing ** 3 / 1000.0
    return sphere.c0_bq_ml * volume_ml / 1e6 * sphere.teff_h / math.log(2)
