"""Images of a virtual patient: tissue map, true activity, PET (PSF + noise), CT in HU, masks, SPECT.

Geometry is LPS in mm with axis-aligned grids; numpy arrays are (k, j, i). Every structure is an ellipsoid
rasterised on voxel centres inside its bounding box only, so a patient renders in well under a second.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from ..images import padded_bounds
from .parameters import LU_BACKGROUND, P
from .patient import TISSUE_DENSITY_G_PER_ML, VirtualPatient

# Tissue classes of the label map used to paint PET and CT.
AIR, SOFT, FAT, LUNG, BLOOD, BONE, ORGAN, LESION = range(8)


@dataclass(frozen=True)
class Grid:
    size: tuple[int, int, int]  # (i, j, k)
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]

    @staticmethod
    def body(spacing_mm: tuple[float, float, float] = (4.0, 4.0, 4.0),
             extent_mm: tuple[float, float, float] = (400.0, 288.0, 820.0)) -> Grid:
        size = tuple(int(round(e / s)) for e, s in zip(extent_mm, spacing_mm))
        origin = (-(size[0] - 1) * spacing_mm[0] / 2, -(size[1] - 1) * spacing_mm[1] / 2, 0.0)
        return Grid(size, tuple(spacing_mm), origin)

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.size[::-1]

    def axis(self, dim: int) -> np.ndarray:
        return self.origin[dim] + self.spacing[dim] * np.arange(self.size[dim])

    def image(self, array: np.ndarray) -> sitk.Image:
        image = sitk.GetImageFromArray(array)
        image.SetSpacing(self.spacing)
        image.SetOrigin(self.origin)
        return image


@dataclass(frozen=True)
class Imaging:
    """How one site forms and contours its images: every factor that differs between sites and must not change
    a predicted dose. Defaults reproduce the unrandomised simulator; ``draw_imaging`` samples the ranges of
    ``parameters.IMAGING_RANGES``."""

    fwhm_mm: float | None = None  # PET resolution; None: the tracer's value in the parameter table
    noise_scale: float = 1.0  # multiplies the noise level of the tracer
    noise_grain_voxels: float = 0.8  # spatial correlation of the noise (Gaussian sigma in voxels)
    kidney_medulla_ratio: float = 1.0  # medulla/cortex uptake ratio (1: uniform kidney)
    gland_lobular_log_sd: float = 0.0  # lobular heterogeneity of the salivary and lacrimal glands
    organ_contour_voxels: int = 0  # organ contours drawn on CT: +1 one voxel loose, -1 one voxel tight
    lesion_threshold: float | None = None  # lesion contours from PET: fraction of the lesion's SUVmax
    ct_contrast: bool = False  # contrast-enhanced CT (kidneys, liver, vessels brighter)

    def to_dict(self) -> dict:
        return asdict(self)


def draw_imaging(rng: np.random.Generator) -> tuple[Imaging, tuple[float, float, float]]:
    """A random site: image formation, contouring habits and PET voxel size (x, y, z in mm)."""
    from .parameters import IMAGING_RANGES as R

    def uniform(key: str, digits: int = 2) -> float:
        return round(float(rng.uniform(*R[key])), digits)

    in_plane = uniform("voxel_in_plane_mm")
    spacing = (in_plane, in_plane, uniform("voxel_slice_mm"))
    imaging = Imaging(
        fwhm_mm=uniform("fwhm_mm"),
        noise_scale=round(float(math.exp(rng.uniform(*np.log(R["noise_scale"])))), 3),
        noise_grain_voxels=uniform("noise_grain_voxels"),
        kidney_medulla_ratio=uniform("kidney_medulla_ratio"),
        gland_lobular_log_sd=uniform("gland_lobular_log_sd", 3),
        organ_contour_voxels=int(rng.choice([-1, 0, 1], p=R["organ_contour_voxels_p"])),
        lesion_threshold=uniform("lesion_threshold", 3) if rng.random() < R["lesion_threshold_p"] else None,
        ct_contrast=bool(rng.random() < R["ct_contrast_p"]),
    )
    return imaging, spacing


def _box(grid: Grid, lo: np.ndarray, hi: np.ndarray) -> tuple[slice, ...] | None:
    """(k, j, i) slices of the voxels whose centres lie in [lo, hi]."""
    slices = []
    for dim in (2, 1, 0):
        first = math.ceil((lo[dim] - grid.origin[dim]) / grid.spacing[dim])
        last = math.floor((hi[dim] - grid.origin[dim]) / grid.spacing[dim])
        first, last = max(first, 0), min(last, grid.size[dim] - 1)
        if last < first:
            return None
        slices.append(slice(first, last + 1))
    return tuple(slices)


def ellipsoid(grid: Grid, centre, semi_axes, rotation=(1, 0, 0, 0, 1, 0, 0, 0, 1)):
    """(slices, mask within the slices) of an ellipsoid, or None if it misses the grid."""
    centre = np.asarray(centre, dtype=float)
    axes = np.asarray(semi_axes, dtype=float)
    rot = np.asarray(rotation, dtype=float).reshape(3, 3)
    reach = np.abs(rot) @ axes  # half-extent of the rotated ellipsoid along x, y, z
    box = _box(grid, centre - reach, centre + reach)
    if box is None:
        return None
    z = grid.axis(2)[box[0]][:, None, None] - centre[2]
    y = grid.axis(1)[box[1]][None, :, None] - centre[1]
    x = grid.axis(0)[box[2]][None, None, :] - centre[0]
    # local = R^T (p - c), R maps local (body) axes to LPS
    local = [rot[0, d] * x + rot[1, d] * y + rot[2, d] * z for d in range(3)]
    inside = sum((local[d] / axes[d]) ** 2 for d in range(3)) <= 1.0
    return box, inside


def _paint(volume: np.ndarray, shape, value) -> None:
    if shape is None:
        return
    box, inside = shape
    volume[box][inside] = value


def tissue_map(patient: VirtualPatient, grid: Grid) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Tissue label map and a full-grid index map of structures (0 = none, n = structures[n-1])."""
    body = patient.body
    labels = np.zeros(grid.shape, dtype=np.uint8)
    z = grid.axis(2)[:, None, None]
    y = grid.axis(1)[None, :, None]
    x = grid.axis(0)[None, None, :]
    taper = np.clip(1.0 - 0.15 * ((z - 330.0) / 300.0) ** 2, 0.7, 1.0)
    torso = ((x / (body["torso_lr_mm"] * taper)) ** 2 + (y / (body["torso_ap_mm"] * taper)) ** 2 <= 1) & (z < 625)
    neck = (x**2 + y**2 <= body["neck_radius_mm"] ** 2) & (z >= 600) & (z < 690)
    ha = body["head_axes_mm"]
    head = (x / ha[0]) ** 2 + (y / ha[1]) ** 2 + ((z - 712.0) / ha[2]) ** 2 <= 1
    inside = torso | neck | head
    fat = inside & ~ndimage.binary_erosion(inside, iterations=max(1, int(body["fat_mm"] / grid.spacing[0])))
    labels[inside] = SOFT
    labels[fat] = FAT
    for side in (1, -1):
        _paint(labels, ellipsoid(grid, (side * 80, 10, 530), (55, 68, 100)), LUNG)
    _paint(labels, ellipsoid(grid, (20, -25, 470), (48, 45, 50)), BLOOD)
    # Bones: spine (vertebral column), pelvis, sternum.
    spine = ((x**2 + (y - 62.0) ** 2) <= 18.0**2) & (z > 120) & (z < 660)
    labels[spine] = BONE
    for side in (1, -1):
        _paint(labels, ellipsoid(grid, (side * 88, 35, 170), (22, 50, 45)), BONE)
    _paint(labels, ellipsoid(grid, (0, -82, 520), (12, 6, 80)), BONE)
    labels[~inside] = AIR

    index = np.zeros(grid.shape, dtype=np.uint8)
    for n, structure in enumerate(patient.structures, start=1):
        shape = ellipsoid(grid, structure.centre_mm, structure.semi_axes_mm, structure.rotation)
        if shape is None:
            continue
        box, inside_structure = shape
        index[box][inside_structure] = n
        # A structure is tissue even where it pokes through the simplified body outline: its segment, PET
        # uptake, CT and reference dose must all describe the same voxels (not air inside the segment).
        labels[box][inside_structure] = LESION if structure.kind == "tumour" else ORGAN
    return labels, {"index": index}


def _smooth_field(rng: np.random.Generator, shape, sigma_voxels: float) -> np.ndarray:
    field = ndimage.gaussian_filter(rng.standard_normal(shape).astype(np.float32), sigma_voxels)
    sd = float(field.std())
    return field / sd if sd > 0 else field


GLANDS = ("parotid", "submandibular", "lacrimal")
MEDULLA_SCALE = 0.65  # the medulla: the inner part of the kidney ellipsoid at this fraction of its semi-axes


def _kidney_pattern(grid: Grid, s, box, medulla_ratio: float) -> np.ndarray:
    """Cortex 1, medulla ``medulla_ratio`` (before normalising to mean 1)."""
    inner = ellipsoid(grid, s.centre_mm, tuple(MEDULLA_SCALE * a for a in s.semi_axes_mm), s.rotation)
    pattern = np.ones(tuple(b.stop - b.start for b in box), dtype=np.float32)
    if inner is not None:
        inner_box, inner_inside = inner
        offset = tuple(slice(ib.start - b.start, ib.stop - b.start) for ib, b in zip(inner_box, box))
        pattern[offset][inner_inside] = medulla_ratio
    return pattern


def lesion_texture(patient: VirtualPatient, grid: Grid, index: np.ndarray, rng: np.random.Generator,
                   imaging: Imaging | None = None) -> np.ndarray:
    """Multiplicative uptake pattern (mean 1 inside each structure): lesion heterogeneity and necrotic cores,
    kidney cortex/medulla and lobular glands (``imaging``). The mean stays 1, so doses do not change."""
    imaging = imaging or Imaging()
    texture = np.ones(grid.shape, dtype=np.float32)
    log_sd = P["lesion_texture_log_sd"].value
    for n, s in enumerate(patient.structures, start=1):
        organ_pattern = (s.kind == "kidney" and imaging.kidney_medulla_ratio != 1.0) or \
            (s.kind in GLANDS and imaging.gland_lobular_log_sd > 0)
        if s.kind != "tumour" and not organ_pattern:
            continue
        shape = ellipsoid(grid, s.centre_mm, s.semi_axes_mm, s.rotation)
        if shape is None:
            continue
        box, _ = shape
        mask = index[box] == n
        if not mask.any():
            continue
        if s.kind == "kidney":
            pattern = _kidney_pattern(grid, s, box, imaging.kidney_medulla_ratio)
        elif s.kind in GLANDS:
            pattern = np.exp(imaging.gland_lobular_log_sd * _smooth_field(rng, mask.shape, 1.0))
        else:
            pattern = np.exp(log_sd * _smooth_field(rng, mask.shape, 1.5))
        if s.kind == "tumour" and s.volume_ml > P["lesion_necrosis_volume_ml"].value:
            core = ellipsoid(grid, s.centre_mm, tuple(0.45 * a for a in s.semi_axes_mm), s.rotation)
            if core is not None:
                core_box, core_inside = core
                offset = tuple(slice(cb.start - b.start, cb.stop - b.start) for cb, b in zip(core_box, box))
                pattern[offset][core_inside] *= 0.3
        pattern /= pattern[mask].mean()
        texture[box][mask] = pattern[mask]
    return texture


def true_activity_suv(patient: VirtualPatient, labels: np.ndarray, index: np.ndarray,
                      texture: np.ndarray) -> np.ndarray:
    bg = patient.background_suv
    per_label = np.zeros(8, dtype=np.float32)
    per_label[SOFT] = bg["soft_tissue"]
    per_label[FAT] = 0.5 * bg["soft_tissue"]
    per_label[LUNG] = bg["lung"]
    per_label[BLOOD] = bg["blood_pool"]
    per_label[BONE] = bg["marrow"]
    activity = per_label[labels]
    per_structure = np.zeros(len(patient.structures) + 1, dtype=np.float32)
    for n, s in enumerate(patient.structures, start=1):
        per_structure[n] = s.pet_suv_true
    inside = (index > 0) & (labels != AIR)
    activity[inside] = per_structure[index[inside]]
    return activity * texture


def tracer_fwhm_mm(tracer: str) -> float:
    return P["fwhm_mm_68ga"].value if tracer.startswith("68Ga") else P["fwhm_mm_18f"].value


def pet_image(activity: np.ndarray, grid: Grid, tracer: str, rng: np.random.Generator,
              imaging: Imaging | None = None) -> np.ndarray:
    """Reconstructed PET in SUV: Gaussian PSF then signal-dependent, spatially correlated noise."""
    imaging = imaging or Imaging()
    fwhm = imaging.fwhm_mm if imaging.fwhm_mm is not None else tracer_fwhm_mm(tracer)
    cov = P["noise_cov_liver_68ga"].value if tracer.startswith("68Ga") else P["noise_cov_liver_18f"].value
    cov *= imaging.noise_scale
    sigma = [fwhm / 2.355 / s for s in grid.spacing[::-1]]
    blurred = ndimage.gaussian_filter(activity, sigma) if fwhm > 0 else activity.copy()
    # sd = cov * sqrt(SUV * SUV_liver): a CoV of `cov` at liver level (5 SUV), Poisson-like elsewhere.
    noise = _smooth_field(rng, activity.shape, imaging.noise_grain_voxels)
    pet = blurred + cov * np.sqrt(np.maximum(blurred, 0) * P["suv_liver"].value) * noise
    return np.maximum(pet, 0).astype(np.float32)


HU_BY_LABEL = {AIR: "hu_air", SOFT: "hu_soft_tissue", FAT: "hu_fat", LUNG: "hu_lung", BLOOD: "hu_soft_tissue",
               BONE: "hu_bone"}
HU_BY_KIND = {"kidney": "hu_kidney", "liver": "hu_liver", "spleen": "hu_soft_tissue", "bladder": "hu_urine",
              "parotid": "hu_gland", "submandibular": "hu_soft_tissue", "lacrimal": "hu_soft_tissue"}


CONTRAST_HU = {"kidney": 150.0, "liver": 60.0, "spleen": 70.0}  # assumption: portal-venous phase enhancement
BLOOD_CONTRAST_HU = 120.0


def ct_image(patient: VirtualPatient, grid: Grid, rng: np.random.Generator, imaging: Imaging | None = None,
             tissue: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    """CT in HU; ``tissue`` = (labels, index) of this grid when already computed."""
    contrast = (imaging or Imaging()).ct_contrast
    if tissue is None:
        labels, maps = tissue_map(patient, grid)
        tissue = (labels, maps["index"])
    labels, index = tissue
    hu = np.zeros(grid.shape, dtype=np.float32)
    for label, key in HU_BY_LABEL.items():
        hu[labels == label] = P[key].value
    for n, s in enumerate(patient.structures, start=1):
        where = (index == n) & (labels != AIR)
        if s.kind == "tumour":
            hu[where] = 650.0 if s.site in ("spine", "pelvis_left", "pelvis_right", "sternum") else 45.0
        else:
            hu[where] = P[HU_BY_KIND.get(s.kind, "hu_soft_tissue")].value + (
                CONTRAST_HU.get(s.kind, 0.0) if contrast else 0.0)
    if contrast:
        hu[labels == BLOOD] += BLOOD_CONTRAST_HU
    hu = ndimage.gaussian_filter(hu, 0.6) + rng.normal(0, 12.0, grid.shape).astype(np.float32)
    hu[labels == AIR] = P["hu_air"].value
    return np.clip(np.round(hu), -1024, 3071).astype(np.int16)


# One voxel off the surface is a drawing habit for a kidney or a parotid; for a 0.7 mL lacrimal gland (two voxels
# thick) it is a different structure, so only organs at least this large get a loose or tight contour.
CONTOUR_OFFSET_MIN_ML = 5.0


def _drawn_organ(mask: np.ndarray, offset_voxels: int) -> np.ndarray:
    """An organ contour drawn on CT one voxel loose (+1) or tight (-1); a tight one keeps at least its core."""
    if offset_voxels == 0:
        return mask
    box = padded_bounds(mask, abs(offset_voxels) + 1)
    local = mask[box]
    if offset_voxels > 0:
        drawn = ndimage.binary_dilation(local, iterations=offset_voxels)
    else:
        drawn = ndimage.binary_erosion(local, iterations=-offset_voxels)
        if not drawn.any():
            return mask
    out = np.zeros_like(mask)
    out[box] = drawn
    return out


def _thresholded_lesion(mask: np.ndarray, pet: np.ndarray, threshold: float) -> np.ndarray:
    """A lesion contoured on PET: the connected region >= threshold x SUVmax around the lesion's hottest voxel
    (clicked inside the lesion), within the lesion grown by two voxels (as a physicist's bounding box would be)."""
    box = padded_bounds(mask, 3)
    region = ndimage.binary_dilation(mask[box], iterations=2)
    local_pet = pet[box]
    values = np.where(mask[box], local_pet, -np.inf)
    peak = np.unravel_index(int(np.argmax(values)), local_pet.shape)
    above = region & (local_pet >= threshold * local_pet[peak])
    labels, _ = ndimage.label(above)
    drawn = labels == labels[peak]
    if not drawn.any():
        return mask
    out = np.zeros_like(mask)
    out[box] = drawn
    return out


def segment_masks(patient: VirtualPatient, index: np.ndarray, pet: np.ndarray | None = None,
                  imaging: Imaging | None = None) -> dict[str, np.ndarray]:
    """Segments as a site would draw them: exact by default; loose/tight organs, PET-thresholded lesions with
    ``imaging`` (only inside the bounding box of each structure, for speed)."""
    imaging = imaging or Imaging()
    masks = {}
    for n, s in enumerate(patient.structures, start=1):
        if not s.segmented:
            continue
        mask = index == n
        if not mask.any():
            continue
        if s.kind == "tumour" and imaging.lesion_threshold is not None and pet is not None:
            mask = _thresholded_lesion(mask, pet, imaging.lesion_threshold)
        elif s.kind != "tumour" and imaging.organ_contour_voxels and s.volume_ml >= CONTOUR_OFFSET_MIN_ML:
            mask = _drawn_organ(mask, imaging.organ_contour_voxels)
        masks[s.name] = mask
    return masks


def spect_images(patient: VirtualPatient, grid: Grid, labels: np.ndarray, index: np.ndarray,
                 texture: np.ndarray, times_h: list[float], rng: np.random.Generator) -> dict[float, np.ndarray]:
    """Post-therapy 177Lu SPECT in Bq/mL at the given times after injection of the planned activity."""
    activity_bq = patient.clinical["planned_activity_gbq"] * 1e9
    weight_g = patient.clinical["weight_kg"] * 1000.0
    label_kind = {SOFT: "soft_tissue", FAT: "soft_tissue", LUNG: "lung", BLOOD: "blood_pool", BONE: "marrow"}
    sigma = [P["spect_fwhm_mm"].value / 2.355 / s for s in grid.spacing[::-1]]
    images = {}
    for t in times_h:
        conc = np.zeros(grid.shape, dtype=np.float32)
        for label, kind in label_kind.items():
            suv0, teff = LU_BACKGROUND[kind]
            conc[labels == label] = suv0 * math.exp(-math.log(2) * t / teff)
        for n, s in enumerate(patient.structures, start=1):
            where = (index == n) & (labels != AIR)
            if s.lu_suv0 > 0:
                value = s.lu_suv0 * math.exp(-math.log(2) * t / s.teff_h)
            elif s.kind in LU_BACKGROUND:
                suv0, teff = LU_BACKGROUND[s.kind]
                value = suv0 * math.exp(-math.log(2) * t / teff)
            else:
                continue
            conc[where] = value
        conc *= texture
        # SUV-equivalents are per gram in the dose model (patient.py); times density gives Bq/mL.
        bq_per_ml = ndimage.gaussian_filter(conc, sigma) * activity_bq / weight_g * TISSUE_DENSITY_G_PER_ML
        noise = _smooth_field(rng, grid.shape, 1.0)
        level = float(np.percentile(bq_per_ml[labels != AIR], 90)) if (labels != AIR).any() else 1.0
        bq_per_ml = bq_per_ml + P["spect_noise_cov"].value * np.sqrt(np.maximum(bq_per_ml, 0) * level) * noise
        images[t] = np.maximum(bq_per_ml, 0).astype(np.float32)
    return images


@dataclass
class RenderedPatient:
    pet: sitk.Image
    ct: sitk.Image
    masks: dict[str, np.ndarray]
    spect: dict[float, sitk.Image]


def render(patient: VirtualPatient, *, pet_grid: Grid, ct_grid: Grid | None = None,
           spect_times_h: list[float] | None = None, imaging: Imaging | None = None) -> RenderedPatient:
    rng = np.random.default_rng([patient.seed, 7])
    labels, maps = tissue_map(patient, pet_grid)
    index = maps["index"]
    texture = lesion_texture(patient, pet_grid, index, rng, imaging)
    activity = true_activity_suv(patient, labels, index, texture)
    pet_array = pet_image(activity, pet_grid, patient.clinical["pet_tracer"], rng, imaging)
    pet = pet_grid.image(pet_array)
    same_grid = ct_grid is None or ct_grid == pet_grid
    ct_grid = ct_grid or pet_grid
    ct = ct_grid.image(ct_image(patient, ct_grid, rng, imaging, (labels, index) if same_grid else None))
    spect = {}
    if spect_times_h:
        arrays = spect_images(patient, pet_grid, labels, index, texture, spect_times_h, rng)
        spect = {t: pet_grid.image(a) for t, a in arrays.items()}
    return RenderedPatient(pet=pet, ct=ct, masks=segment_masks(patient, index, pet_array, imaging), spect=spect)
