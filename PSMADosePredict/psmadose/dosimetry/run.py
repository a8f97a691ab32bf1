"""Post-therapy 177Lu dosimetry of one STUDY: time points -> TACs per segment -> TIA -> absorbed dose.

Two dose products, both written:

- Segment doses (``doses.csv``): from each segment's time-activity curve with partial-volume recovery (below),
  TIA from the fits of ``kinetics``, and the self-dose S of the chosen ``method``:
  ``lde`` full local absorption of the ICRP-107 electron energy (TIA x Delta_e / mass); ``vsv`` (default) the
  same times the electron absorbed fraction of a sphere of the segment's mass from the Lu-177 kernel
  (``kernel.sphere_absorbed_fraction``: 0.99 for a kidney, 0.90 for a 4 mm sphere); ``sphere`` the published
  Lu-177 sphere S-values (``kernel.PUBLISHED_SPHERE_S``, photons included) at the segment's mass. Cross-dose
  from neighbours and photons is not included in segment doses (stated limitation).
- The dose map (``dose_map_gy.nrrd``, reference grid): voxel TIA from a voxel-wise mono-exponential fit
  (log-linear, decay constant at least the physical one; one time point: Hanscheid), then voxel S-value
  convolution by FFT (``vsv``, ``sphere``) or local deposition (``lde``). No partial-volume recovery: its mean
  over a segment (``dose_map_mean_gy``) and the DVH are lower than the segment dose in structures a few SPECT
  FWHM across, which is the known partial-volume loss of voxel dosimetry.

Partial-volume handling of segment TACs: the activity of a segment at each time point is its tissue
concentration from ``psmadose.features.concentration.tissue_concentration`` (activity summed over the segment
grown by one SPECT FWHM, above the local background, divided by the image-derived extent or drawn volume, the
same recovery the PET features use) times the drawn volume. The SPECT FWHM is an input (default 12 mm, typical
of 177Lu SPECT/CT with resolution recovery). ``recovery=False`` uses the plain mean inside the contour;
``spill_correction=True`` also removes the activity blurred into a segment's grown region from segmented neighbours
(``spill_matrix``; off by default, measured effects in docs/DOSIMETRY.md).

Mass = drawn volume x density: 1.04 g/mL (ICRU 44 soft tissue) by default, or from the reference CT
(rho = 1 + HU/1000, clipped to 0.001-2.0 g/mL; a contrast-enhanced CT overstates it) with ``density="ct"``.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ..errors import CancelledError, InputError
from ..lu177 import decay_data
from ..structures import resolve_structure_type
from . import kernel as kernels
from .kinetics import METHODS as FIT_METHODS
from .kinetics import MULTI_POINT, TiaResult, time_integrated_activity
from .study import Study, read_study

log = logging.getLogger(__name__)

Progress = Callable[[int, int], "bool | None"]
DOSE_METHODS = ("vsv", "lde", "sphere")
DEFAULT_FWHM_MM = 12.0
DEFAULT_DENSITY_G_ML = 1.04  # ICRU 44 soft tissue
MIN_IN_FOV = 0.99  # share of a segment's voxels that must lie inside every time point's field of view
# a segment drawn on another grid keeps at least this share of its volume on the reference grid (nearest-neighbour
# resampling moves a few surface voxels; more lost means it lies outside the reference field of view)
MIN_KEPT_AFTER_RESAMPLING = 0.9


@dataclass
class Settings:
    method: str = "vsv"
    fit: str = "auto"
    register: bool = False
    fwhm_mm: float = DEFAULT_FWHM_MM
    recovery: bool = True
    density: str = "default"  # "default" (1.04 g/mL) or "ct"
    activity_cov: float = 0.10
    spill_correction: bool = False  # remove spill-in from segmented neighbours (recovery only; see docs)

    def check(self) -> None:
        if self.method not in DOSE_METHODS:
            raise InputError(f"--method {self.method!r}: use one of {', '.join(DOSE_METHODS)}")
        if self.fit not in FIT_METHODS:
            raise InputError(f"--fit {self.fit!r}: use one of {', '.join(FIT_METHODS)}")
        if not (1.0 <= self.fwhm_mm <= 40.0):
            raise InputError(f"--fwhm-mm {self.fwhm_mm:g}: the SPECT resolution must be 1-40 mm")
        if not (0.0 < self.activity_cov <= 1.0):
            raise InputError(f"--activity-cov {self.activity_cov:g}: give a fraction in (0, 1], e.g. 0.1")
        if self.density not in ("default", "ct"):
            raise InputError(f"--density {self.density!r}: use default or ct")


@dataclass
class SegmentResult:
    name: str
    structure_type: str
    volume_ml: float
    mass_g: float
    times_h: list
    activity_mbq: list
    tia: TiaResult
    absorbed_dose_gy: float
    dose_sd_gy: float
    s_note: str
    dose_map_mean_gy: float = math.nan
    dvh: dict = field(default_factory=dict)


@dataclass
class Prepared:
    reference: sitk.Image  # reference grid
    reference_index: int
    arrays: list  # Bq/mL on the reference grid, float32 (k, j, i); NaN outside a time point's field of view
    masks: dict  # name -> bool array
    tags: dict  # name -> tags
    density: np.ndarray | float
    registrations: list


def _tick(progress: Progress | None, done: int, total: int) -> None:
    if progress is not None and progress(done, total) is False:
        raise CancelledError("dosimetry cancelled")


def _reference_index(study: Study, seg_geometry: sitk.Image) -> int:
    from ..images import same_grid

    for i, tp in enumerate(study.time_points):
        if same_grid(tp.spect, seg_geometry):
            return i
    for i, tp in enumerate(study.time_points):
        if tp.ct is not None and same_grid(tp.ct, seg_geometry):
            return i
    return 0


def prepare(study: Study, settings: Settings) -> Prepared:
    from ..images import same_grid
    from ..segmentation import read_segmentation
    from .registration import register_rigid

    seg_geometry, raw = read_segmentation(study.segmentation_path)
    if not raw:
        raise InputError(f"{study.segmentation_path}: no segments; draw the organs and lesions to dose")
    ref_i = _reference_index(study, seg_geometry)
    reference = study.time_points[ref_i].spect
    masks, tags = {}, {}
    for segment in raw:
        if same_grid(seg_geometry, reference):
            mask = segment.mask
        else:
            img = sitk.GetImageFromArray(segment.mask.astype(np.uint8))
            img.CopyInformation(seg_geometry)
            # outside the reference grid counts as lost: measured below against the drawn volume
            mask = sitk.GetArrayFromImage(sitk.Resample(img, reference, sitk.Transform(), sitk.sitkNearestNeighbor,
                                                        0, sitk.sitkUInt8)).astype(bool)
            drawn_ml = float(segment.mask.sum()) * float(np.prod(seg_geometry.GetSpacing())) / 1000
            kept_ml = float(mask.sum()) * float(np.prod(reference.GetSpacing())) / 1000
            if drawn_ml > 0 and kept_ml < MIN_KEPT_AFTER_RESAMPLING * drawn_ml:
                raise InputError(f"{study.segmentation_path}: segment {segment.name!r} lies partly outside the field "
                                 f"of view of {study.time_points[ref_i].path.name} ({kept_ml:.1f} of {drawn_ml:.1f} "
                                 "mL inside); fix the segment or remove it")
        if not mask.any():
            raise InputError(f"{study.segmentation_path}: segment {segment.name!r} is empty or outside the field of "
                             f"view of {study.time_points[ref_i].path.name}; fix the segment or remove it")
        masks[segment.name] = mask
        tags[segment.name] = segment.tags
    arrays, registrations = [], []
    ref_tp = study.time_points[ref_i]
    for i, tp in enumerate(study.time_points):
        transform = sitk.Transform()
        if settings.register and i != ref_i:
            on_ct = tp.ct is not None and ref_tp.ct is not None
            reg = register_rigid(ref_tp.ct if on_ct else ref_tp.spect, tp.ct if on_ct else tp.spect,
                                 "ct" if on_ct else "spect")
            transform = reg.transform
            registrations.append({"time_h": tp.hours, **reg.record()})
        if i == ref_i or (not settings.register and same_grid(tp.spect, reference)):
            array = sitk.GetArrayFromImage(tp.spect).astype(np.float32)
        else:
            array = sitk.GetArrayFromImage(sitk.Resample(tp.spect, reference, transform, sitk.sitkLinear,
                                                         float("nan"), sitk.sitkFloat32))
        outside = ~np.isfinite(array)
        if outside.any():
            for name, mask in masks.items():
                lost = float((mask & outside).sum()) / float(mask.sum())
                if lost > 1 - MIN_IN_FOV:
                    raise InputError(f"{tp.path}: segment {name!r} lies {lost:.0%} outside this time point's field "
                                     "of view; acquire the bed that covers it, or remove the segment")
            array = np.where(outside, 0.0, array).astype(np.float32)
        arrays.append(array)
    density: np.ndarray | float = DEFAULT_DENSITY_G_ML
    if settings.density == "ct":
        if ref_tp.ct is None:
            raise InputError(f"--density ct: {ref_tp.path.name} has no CT (ct_{ref_tp.hours:g}h.nrrd); add it or drop "
                             "--density ct")
        hu = sitk.GetArrayFromImage(sitk.Resample(ref_tp.ct, reference, sitk.Transform(), sitk.sitkLinear, -1000.0,
                                                  sitk.sitkFloat32))
        density = np.clip(1.0 + hu / 1000.0, 0.001, 2.0).astype(np.float32)
    return Prepared(reference, ref_i, arrays, masks, tags, density, registrations)


def spill_matrix(masks: dict[str, np.ndarray], spacing: tuple, fwhm_mm: float) -> np.ndarray:
    """S[i, j]: the share of segment j's activity (uniform in its drawn voxels) that the SPECT blur (Gaussian,
    ``fwhm_mm``) carries into segment i's grown region (i grown by one FWHM, without other segments' voxels), in
    voxel units: sum over that region of j's blurred mask. The grown region of ``tissue_concentration`` counts this
    spill-in as its own activity; subtracting it is a geometric-transfer-matrix correction between neighbouring
    segments (Rousset et al., J Nucl Med 1998) restricted to segmented neighbours."""
    from scipy import ndimage

    from ..features.concentration import GROW_FWHM
    from ..images import padded_bounds

    names = list(masks)
    spacing_arr = np.asarray(spacing, dtype=float)
    sigma_vox = fwhm_mm / 2.355 / spacing_arr
    grow_mm = GROW_FWHM * max(fwhm_mm, float(spacing_arr.min()))
    union = np.zeros(next(iter(masks.values())).shape, dtype=bool)
    for mask in masks.values():
        union |= mask
    blurred, grown = {}, {}
    for name in names:
        mask = masks[name]
        pad = tuple(int(np.ceil((grow_mm + 3 * fwhm_mm / 2.355) / s)) + 1 for s in spacing_arr)
        box = padded_bounds(mask, pad)
        blurred[name] = (box, ndimage.gaussian_filter(mask[box].astype(np.float32), sigma_vox, mode="constant"))
        gbox = padded_bounds(mask, tuple(int(np.ceil(grow_mm / s)) + 1 for s in spacing_arr))
        outside = ndimage.distance_transform_edt(~mask[gbox], sampling=spacing_arr)
        grown[name] = (gbox, (mask[gbox] | (outside <= grow_mm)) & ~(union[gbox] & ~mask[gbox]))
    matrix = np.zeros((len(names), len(names)))
    for i, a in enumerate(names):
        gbox, region = grown[a]
        for j, b in enumerate(names):
            if i == j:
                continue
            bbox, values = blurred[b]
            lo = [max(g.start, q.start) for g, q in zip(gbox, bbox)]
            hi = [min(g.stop, q.stop) for g, q in zip(gbox, bbox)]
            if any(h <= low for low, h in zip(lo, hi)):
                continue
            in_g = tuple(slice(low - g.start, h - g.start) for low, h, g in zip(lo, hi, gbox))
            in_b = tuple(slice(low - q.start, h - q.start) for low, h, q in zip(lo, hi, bbox))
            matrix[i, j] = float(values[in_b][region[in_g]].sum())
    return matrix


SPILL_ITERATIONS = 3


def segment_activities(prepared: Prepared, settings: Settings, progress: Progress | None = None,
                       start: int = 0, total: int = 1) -> dict[str, list[float]]:
    """Activity (MBq) of each segment at each time point, partial-volume recovered (see the module docstring),
    with the spill-in from segmented neighbours removed (``spill_matrix``)."""
    from ..features.concentration import tissue_concentration

    spacing = tuple(float(s) for s in prepared.reference.GetSpacing()[::-1])
    voxel_ml = float(np.prod(spacing)) / 1000.0
    names = list(prepared.masks)
    union = np.zeros(prepared.arrays[0].shape, dtype=bool)
    for mask in prepared.masks.values():
        union |= mask
    n_t = len(prepared.arrays)
    conc = np.zeros((len(names), n_t))
    background = np.zeros((len(names), n_t))
    divided_ml = np.ones((len(names), n_t))
    for n, name in enumerate(names):
        mask = prepared.masks[name]
        others = union & ~mask
        for t, array in enumerate(prepared.arrays):
            if settings.recovery:
                c = tissue_concentration(array, mask, spacing, settings.fwhm_mm, others)
                conc[n, t], background[n, t], divided_ml[n, t] = c.suv, c.background_suv, c.volume_ml
            else:
                conc[n, t] = float(array[mask].mean())
        _tick(progress, start + n + 1, total)
    if settings.recovery and settings.spill_correction and len(names) > 1:
        spill = spill_matrix(prepared.masks, spacing, settings.fwhm_mm) * voxel_ml  # mL
        measured = conc.copy()
        for _ in range(SPILL_ITERATIONS):  # Jacobi iterations: neighbours' corrected concentrations
            above = np.maximum(conc - background, 0.0)
            conc = measured - (spill @ above) / divided_ml
    result = {}
    for n, name in enumerate(names):
        volume_ml = float(prepared.masks[name].sum()) * voxel_ml
        result[name] = [max(float(c), 0.0) * volume_ml / 1e6 for c in conc[n]]
    return result


def voxel_tia_bq_s(arrays: list[np.ndarray], times_h: list[float]) -> np.ndarray:
    """Voxel TIA (Bq s per voxel volume, i.e. per mL times voxel mL later) by a log-linear mono-exponential fit.

    Returns the TIA concentration in Bq h/mL; lambda >= physical; one time point: Hanscheid."""
    lam_p = decay_data().decay_constant_per_h
    t = np.asarray(times_h, dtype=np.float64)
    if len(t) == 1:
        return (arrays[0] * (2 * t[0] / math.log(2))).astype(np.float32)
    eps = 1e-6
    shape = arrays[0].shape
    out = np.empty(shape, dtype=np.float32)
    # slab by slab keeps the memory of a whole-body study small
    for k in range(shape[0]):
        a = np.stack([arr[k] for arr in arrays]).astype(np.float64)
        positive = a > eps
        w = np.where(positive, a, 0.0)  # weight ~ activity: noisy low voxels count less
        y = np.log(np.maximum(a, eps))
        sw = w.sum(0)
        ok = sw > 0
        swt = (w * t[:, None, None]).sum(0)
        swy = (w * y).sum(0)
        swtt = (w * (t ** 2)[:, None, None]).sum(0)
        swty = (w * t[:, None, None] * y).sum(0)
        denom = sw * swtt - swt ** 2
        with np.errstate(invalid="ignore", divide="ignore"):
            slope = np.where((denom > 0) & ok, (sw * swty - swt * swy) / denom, -lam_p)
        lam = np.maximum(-slope, lam_p)
        with np.errstate(invalid="ignore", divide="ignore"):
            # anchor at the activity-weighted centroid of the points: ln A(tc) = mean ln A
            tc = np.where(ok, swt / np.where(ok, sw, 1), t[0])
            ln_ac = np.where(ok, swy / np.where(ok, sw, 1), math.log(eps))
        a0 = np.exp(ln_ac + lam * tc)
        tia = np.where(ok, a0 / lam, 0.0)
        out[k] = tia.astype(np.float32)
    return out


def dose_map(tia_bq_h_per_ml: np.ndarray, spacing_kji: tuple, method: str, density: np.ndarray | float,
             convolution: str = "fft") -> np.ndarray:
    """Absorbed dose (Gy) per voxel."""
    voxel_ml = float(np.prod(spacing_kji)) / 1000.0
    tia_bq_s = tia_bq_h_per_ml.astype(np.float64) * voxel_ml * 3600.0
    if method == "lde":
        mass_kg = voxel_ml * np.asarray(density, dtype=np.float64) / 1000.0
        from ..lu177 import JOULE_PER_MEV

        return (tia_bq_s * decay_data().electron_energy_mev * JOULE_PER_MEV / mass_kg).astype(np.float32)
    mean_density = float(np.mean(density)) if np.ndim(density) else float(density)
    rho = DEFAULT_DENSITY_G_ML if np.ndim(density) else mean_density
    kernel = kernels.voxel_s_values(spacing_kji, rho)
    dose = kernels.convolve(tia_bq_s, kernel, convolution)
    if np.ndim(density):  # kernel at soft-tissue density; rescale deposited energy to the local mass
        dose = dose * (rho / np.maximum(np.asarray(density, dtype=np.float64), 0.05))
    return np.maximum(dose, 0.0).astype(np.float32)


def _segment_s(method: str, mass_g: float, density_g_ml: float) -> tuple[float, str]:
    """Self-dose factor Gy per MBq h for this segment."""
    s_full = decay_data().self_dose_gy_g_per_mbq_h / mass_g
    if method == "lde":
        return s_full, "full local absorption of the ICRP-107 electron energy"
    if method == "vsv":
        radius = (3 * mass_g / density_g_ml / (4 * math.pi)) ** (1 / 3) * 10.0
        af = kernels.sphere_absorbed_fraction(radius, density_g_ml)
        return s_full * af, f"electron absorbed fraction {af:.3f} of an equal-mass sphere (Lu-177 kernel)"
    s = kernels.published_sphere_s(mass_g) * 3600.0 * 1e6
    return s, "published Lu-177 sphere S-value at this mass (" + kernels.PUBLISHED_SPHERE_S["source"] + ")"


def _dvh(dose: np.ndarray, mask: np.ndarray) -> dict:
    values = np.sort(dose[mask].astype(np.float64))
    if values.size == 0:
        return {}
    return {"mean_gy": float(values.mean()), "d98_gy": float(np.percentile(values, 2)),
            "d50_gy": float(np.percentile(values, 50)), "d2_gy": float(np.percentile(values, 98)),
            "max_gy": float(values[-1]), "values": values}


@dataclass
class DosimetryResult:
    study: Study
    settings: Settings
    segments: list
    dose: np.ndarray
    reference: sitk.Image
    registrations: list
    timings_s: dict
    reference_time_h: float = math.nan


def compute(study_dir: Path, settings: Settings, progress: Progress | None = None) -> DosimetryResult:
    settings.check()
    timings = {}
    t0 = time.perf_counter()
    study = read_study(study_dir)
    n_tp = len(study.time_points)
    if settings.fit in MULTI_POINT and n_tp < 2:
        raise InputError(f"{study.time_points[0].path}: the study has one time point and --fit {settings.fit} needs "
                         "at least 2; use --fit madsen or --fit hanscheid, or add time points")
    timings["read_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    prepared = prepare(study, settings)
    timings["prepare_s"] = time.perf_counter() - t0
    total = len(prepared.masks) + 2
    _tick(progress, 0, total)
    t0 = time.perf_counter()
    activities = segment_activities(prepared, settings, progress, 0, total)
    timings["segment_tacs_s"] = time.perf_counter() - t0
    from ..physics import EFFECTIVE_HALF_LIFE_H

    spacing = tuple(float(s) for s in prepared.reference.GetSpacing()[::-1])
    voxel_ml = float(np.prod(spacing)) / 1000.0
    t0 = time.perf_counter()
    tia_map = voxel_tia_bq_s(prepared.arrays, study.times_h)
    dose = dose_map(tia_map, spacing, settings.method, prepared.density)
    del tia_map
    timings["dose_map_s"] = time.perf_counter() - t0
    _tick(progress, total - 1, total)
    segments = []
    for name, values in activities.items():
        mask = prepared.masks[name]
        stype = resolve_structure_type(name, prepared.tags.get(name))
        type_name = stype.value if stype is not None else "other"
        volume_ml = float(mask.sum()) * voxel_ml
        rho = float(np.mean(prepared.density[mask])) if np.ndim(prepared.density) else float(prepared.density)
        mass_g = volume_ml * rho
        tia = time_integrated_activity(study.times_h, values, settings.fit, activity_cov=settings.activity_cov,
                                       population_teff_h=EFFECTIVE_HALF_LIFE_H.get(type_name))
        s, note = _segment_s(settings.method, mass_g, rho)
        dose_gy = tia.tia_mbq_h * s
        result = SegmentResult(name, type_name, volume_ml, mass_g, list(study.times_h), values, tia, dose_gy,
                               tia.relative_sd * dose_gy, note)
        result.dvh = _dvh(dose, mask)
        result.dose_map_mean_gy = result.dvh.get("mean_gy", math.nan)
        segments.append(result)
    _tick(progress, total, total)
    return DosimetryResult(study, settings, segments, dose, prepared.reference, prepared.registrations, timings,
                           study.time_points[prepared.reference_index].hours)


def doses_table(result: DosimetryResult):
    import pandas as pd

    activity = result.study.activity_gbq
    rows = []
    for s in result.segments:
        rows.append({
            "segment": s.name, "reference_gy_per_gbq": s.absorbed_dose_gy / activity,
            "absorbed_dose_gy": s.absorbed_dose_gy, "tia_mbq_h": s.tia.tia_mbq_h,
            "effective_half_life_h": s.tia.effective_half_life_h, "fit_model": s.tia.model,
            "uncertainty_gy": s.dose_sd_gy, "uncertainty_relative": s.tia.relative_sd,
            "tia_sd_mbq_h": s.tia.sd_mbq_h, "structure_type": s.structure_type, "volume_ml": s.volume_ml,
            "mass_g": s.mass_g, "dose_method": result.settings.method,
            "dose_map_mean_gy": s.dose_map_mean_gy, "dose_map_d98_gy": s.dvh.get("d98_gy", math.nan),
            "dose_map_d50_gy": s.dvh.get("d50_gy", math.nan), "dose_map_d2_gy": s.dvh.get("d2_gy", math.nan),
        })
    return pd.DataFrame(rows)


def dvh_table(result: DosimetryResult, n_bins: int = 200):
    """Cumulative DVH of the dose map per segment: volume fraction receiving at least each dose."""
    import pandas as pd

    top = max((float(s.dvh["values"][-1]) for s in result.segments if s.dvh), default=1.0)
    edges = np.linspace(0.0, top * 1.001 if top > 0 else 1.0, n_bins + 1)
    columns = {"dose_gy": edges}
    for s in result.segments:
        values = s.dvh.get("values")
        if values is None:
            continue
        columns[s.name] = 1.0 - np.searchsorted(values, edges, side="left") / len(values)
    return pd.DataFrame(columns)


def provenance(result: DosimetryResult) -> dict:
    from .. import __version__
    from ..provenance import library_versions

    k = kernels.radial_kernel()
    data = decay_data()
    study = result.study
    return {
        "psmadose_version": __version__, "versions": library_versions(),
        "study": str(study.directory), "administration": {"activity_gbq": study.activity_gbq,
                                                           "radiopharmaceutical": study.radiopharmaceutical,
                                                           "source": study.administration_source},
        "time_points": [{"hours": tp.hours, "file": tp.path.name, "source": tp.source,
                         "ct": tp.ct_path.name if tp.ct_path else None} for tp in study.time_points],
        "reference_grid": {"time_h": result.reference_time_h,
                           "size": list(result.reference.GetSize()), "spacing_mm": list(result.reference.GetSpacing()),
                           "origin_mm": list(result.reference.GetOrigin())},
        "settings": {**result.settings.__dict__, "density_default_g_ml": DEFAULT_DENSITY_G_ML},
        "registrations": result.registrations,
        "decay_data": {"half_life_h": data.half_life_h, "electron_energy_mev": data.electron_energy_mev,
                       "beta_mev": k.beta_mev, "ic_auger_mev": k.local_mev, "x90_mm": k.radius_mm(0.9),
                       "source": data.source},
        "kernel": "Loevinger beta point kernel per ICRP-107 branch, voxel S-values by sampling "
                  "(psmadose.dosimetry.kernel); photons not included",
        "segments": [{"segment": s.name, "structure_type": s.structure_type, "times_h": s.times_h,
                      "activity_mbq": s.activity_mbq, "fit_model": s.tia.model, "fit_params": s.tia.params,
                      "aicc": s.tia.aicc, "fit_note": s.tia.note, "s_note": s.s_note,
                      "tia_mbq_h": s.tia.tia_mbq_h, "tia_sd_mbq_h": s.tia.sd_mbq_h,
                      "absorbed_dose_gy": s.absorbed_dose_gy} for s in result.segments],
        "timings_s": result.timings_s,
        "intended_use": "research and teaching; not clinically validated",
    }


def write_outputs(result: DosimetryResult, folder: Path) -> None:
    """doses.csv, dvh.csv, dvh.png, dose_map_gy.nrrd, tacs/*.png, dosimetry.json and report.html into ``folder``."""
    from ..images import write_image
    from ..outputs import csv_cell, write_csv_table
    from .report import write_dvh_plot, write_report, write_tac_plots

    table = doses_table(result)
    write_csv_table(table, folder / "doses.csv")
    dvh = dvh_table(result)
    dvh.columns = [csv_cell(c) for c in dvh.columns]  # segment names are the header here
    write_csv_table(dvh, folder / "dvh.csv")
    image = sitk.GetImageFromArray(result.dose)
    image.CopyInformation(result.reference)
    write_image(image, folder / "dose_map_gy.nrrd")
    plots = write_tac_plots(result, folder)
    record = provenance(result)
    record["tac_plots"] = plots
    (folder / "dosimetry.json").write_text(json.dumps(record, indent=1, default=float) + "\n", encoding="utf-8")
    write_report(result, table, plots, folder / "report.html", write_dvh_plot(result, folder))


def reference_doses(result: DosimetryResult) -> dict[str, float]:
    """Gy/GBq per segment, as a case's doses.csv holds them (segments without a positive finite dose left out)."""
    return {s.name: s.absorbed_dose_gy / result.study.activity_gbq for s in result.segments
            if math.isfinite(s.absorbed_dose_gy) and s.absorbed_dose_gy > 0}


def write_into_case(doses: dict[str, float], case_dir: Path, overwrite: bool) -> None:
    """The reference doses as ``case_dir/doses.csv`` (atomic; an existing file only with ``overwrite``)."""
    from ..case import write_doses
    from ..outputs import atomic_output_file

    with atomic_output_file(Path(case_dir) / "doses.csv", overwrite) as target:
        write_doses(target, doses)


def check_into(into: Path, overwrite: bool) -> Path:
    from ..outputs import check_output_file

    into = Path(into)
    if not into.is_dir():
        raise InputError(f"--into {into}: not a case directory; give an existing case folder")
    check_output_file(into / "doses.csv", overwrite)
    return into


def run_dosimetry(study_dir: Path, out: Path, settings: Settings | None = None, *, into: Path | None = None,
                  overwrite: bool = False, progress: Progress | None = None) -> DosimetryResult:
    """Compute and write OUT (doses.csv, dvh.csv, dose_map_gy.nrrd, tacs/*.png, report.html, dosimetry.json);
    ``into``: also write the reference doses into that case directory's doses.csv."""
    from ..outputs import atomic_output_dir, check_output_dir

    settings = settings or Settings()
    inputs = (study_dir,) + ((into,) if into else ())
    check_output_dir(Path(out), overwrite, inputs=inputs)
    if into is not None:
        into = check_into(into, overwrite)
    result = compute(Path(study_dir), settings, progress)
    with atomic_output_dir(Path(out), overwrite, inputs=inputs) as tmp:
        write_outputs(result, tmp)
        if into is not None:
            write_into_case(reference_doses(result), into, overwrite)
    return result
