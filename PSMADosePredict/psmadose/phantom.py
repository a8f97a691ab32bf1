"""Textbook phantoms built independently of the virtual-patient simulator, to check predictions on images the
simulator did not make.

Nothing here uses ``psmadose.simulate``: shapes are built from distance maps on the voxel grid (a bean-shaped
kidney: an ellipsoid with a hilar notch; glands as rounded boxes), uptake is the textbook 18F-DCFPyL SUVmean of
each organ (Li et al., J Nucl Med 2017: kidney ~20, parotid ~9, submandibular ~9.5, liver 5.0, spleen ~4), and
the image is formed with a choice of blur (0-10 mm FWHM), voxel size, Gaussian white noise and texture
(uniform; kidney cortex/medulla drawn as a cortical rim of fixed thickness; lobular glands). Every texture keeps
the organ's mean SUV, so the "right" dose is the same for every rendering of one organ.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from .case import Case, Segment
from .clinical import validate_clinical
from .structures import StructureType

TEXTBOOK_SUV = {"kidney": 20.0, "parotid": 9.0, "submandibular": 9.5, "liver": 5.0, "spleen": 4.0,
                "tumour": 12.0, "background": 0.6}
TEXTBOOK_CLINICAL = {"age_years": 71, "weight_kg": 82, "height_cm": 176, "egfr_ml_min_1_73m2": 75, "psa_ng_ml": 60,
                     "alp_u_l": 120, "ldh_u_l": 230, "hemoglobin_g_dl": 12.3, "prior_taxane_lines": 1,
                     "prior_arpi": True, "pet_tracer": "18F-DCFPyL", "pet_uptake_time_min": 120,
                     "planned_activity_gbq": 7.4, "planned_cycles": 4}
KIND_TYPE = {"kidney": StructureType.KIDNEY, "parotid": StructureType.PAROTID,
             "submandibular": StructureType.SUBMANDIBULAR, "liver": StructureType.LIVER,
             "spleen": StructureType.SPLEEN, "tumour": StructureType.TUMOUR}


@dataclass(frozen=True)
class Rendering:
    blur_fwhm_mm: float = 6.0
    voxel_mm: float = 4.0
    noise_sd_at_liver: float = 0.5  # SUV; white noise then smoothed by 1 voxel, scaled with sqrt(SUV/5)
    texture: str = "uniform"  # uniform | cortex | lobular
    seed: int = 0

    @property
    def label(self) -> str:
        return f"blur {self.blur_fwhm_mm:g} mm, {self.voxel_mm:g} mm voxels, noise {self.noise_sd_at_liver:g}, " \
               f"{self.texture}"


# Organs: (name, kind, centre x/y/z mm, half-lengths mm). A body of 360 x 240 x 560 mm.
ORGANS = (
    ("kidney_left", "kidney", (70.0, 40.0, 200.0), (30.0, 27.0, 55.0)),
    ("kidney_right", "kidney", (-70.0, 40.0, 185.0), (30.0, 27.0, 55.0)),
    ("liver", "liver", (-60.0, -5.0, 310.0), (85.0, 65.0, 60.0)),
    ("spleen", "spleen", (85.0, 30.0, 300.0), (32.0, 42.0, 34.0)),
    ("parotid_left", "parotid", (55.0, 10.0, 500.0), (13.0, 22.0, 21.0)),
    ("parotid_right", "parotid", (-55.0, 10.0, 500.0), (13.0, 22.0, 21.0)),
    ("submandibular_left", "submandibular", (38.0, -20.0, 465.0), (11.0, 13.0, 12.0)),
    ("submandibular_right", "submandibular", (-38.0, -20.0, 465.0), (11.0, 13.0, 12.0)),
    ("lesion_bone", "tumour", (0.0, 60.0, 120.0), (14.0, 14.0, 14.0)),
    ("lesion_node", "tumour", (45.0, 0.0, 80.0), (9.0, 9.0, 9.0)),
)
BODY_MM = (360.0, 240.0, 560.0)
CORTEX_MM = 7.0  # renal cortex thickness (~6-8 mm in adults)
MEDULLA_TO_CORTEX = 0.4


def _axes(voxel_mm: float):
    n = [int(round(e / voxel_mm)) for e in BODY_MM]
    return [(np.arange(k) - (k - 1) / 2.0) * voxel_mm for k in n]


def _shape(kind: str, centre, half, axes, voxel: float) -> tuple[tuple[slice, ...], np.ndarray]:
    """(box, fraction of each voxel of the box inside the organ), supersampled 3 x 3 x 3."""
    box = []
    for axis, c, h in zip(axes, centre, half):  # x, y, z
        inside = np.flatnonzero(np.abs(axis - c) <= h + voxel)
        box.append(slice(int(inside[0]), int(inside[-1]) + 1))
    x, y, z = (axis[b] for axis, b in zip(axes, box))
    z, y, x = np.meshgrid(z, y, x, indexing="ij")
    offsets = (np.arange(3) - 1) * voxel / 3.0
    fraction = np.zeros(z.shape, dtype=np.float32)
    for dz in offsets:
        for dy in offsets:
            for dx in offsets:
                u = (x + dx - centre[0]) / half[0]
                v = (y + dy - centre[1]) / half[1]
                w = (z + dz - centre[2]) / half[2]
                if kind in ("parotid", "submandibular"):
                    inside = (u**4 + v**4 + w**4) <= 1.0  # rounded box
                else:
                    inside = u**2 + v**2 + w**2 <= 1.0
                if kind == "kidney":  # hilar notch on the medial side
                    side = -math.copysign(1.0, centre[0])
                    notch = ((x + dx - (centre[0] + side * half[0])) / (0.55 * half[0])) ** 2 + \
                        ((y + dy - centre[1]) / (0.45 * half[1])) ** 2 + ((z + dz - centre[2]) / (0.3 * half[2])) ** 2
                    inside &= notch > 1.0
                fraction += inside
    return (box[2], box[1], box[0]), fraction / 27.0


def build_phantom(rendering: Rendering, case_id: str = "textbook-phantom", resolution_known: bool = False) -> Case:
    """A textbook phantom rendered one way, as a Case ready for ``extract_features``/``predict_case``.

    ``resolution_known``: clinical.json states the blur as ``pet_resolution_mm`` (else the tracer default)."""
    voxel = rendering.voxel_mm
    axes = _axes(voxel)
    shape = tuple(len(a) for a in axes[::-1])
    z_axis = axes[2][:, None, None]
    y_axis = axes[1][None, :, None]
    x_axis = axes[0][None, None, :]
    body = ((x_axis / (BODY_MM[0] / 2 - 10)) ** 2 + (y_axis / (BODY_MM[1] / 2 - 10)) ** 2 <= 1.0) & (z_axis < 1e9)
    activity = np.where(body, TEXTBOOK_SUV["background"], 0.0).astype(np.float32)
    rng = np.random.default_rng(rendering.seed)
    segments = []
    centre_z = (len(axes[2]) - 1) / 2.0 * voxel
    for name, kind, centre, half in ORGANS:
        centre = (centre[0], centre[1], centre[2] - centre_z)
        box, fraction = _shape(kind, centre, half, axes, voxel)
        pattern = np.ones(fraction.shape, dtype=np.float32)
        inside = fraction >= 0.5
        if rendering.texture == "cortex" and kind == "kidney":
            depth = ndimage.distance_transform_edt(np.pad(fraction > 0, 1), sampling=voxel)[1:-1, 1:-1, 1:-1]
            pattern = np.where(depth > CORTEX_MM, MEDULLA_TO_CORTEX, 1.0).astype(np.float32)
        elif rendering.texture == "lobular" and kind in ("parotid", "submandibular", "tumour"):
            field = ndimage.gaussian_filter(rng.standard_normal(fraction.shape).astype(np.float32), 1.0)
            pattern = np.exp(0.35 * field / max(float(field[inside].std()), 1e-6)).astype(np.float32)
        pattern *= float(fraction.sum()) / max(float((fraction * pattern).sum()), 1e-9)  # organ mean is textbook
        activity[box] = activity[box] * (1 - fraction) + fraction * pattern * TEXTBOOK_SUV[kind]
        mask = np.zeros(shape, dtype=bool)
        mask[box] = inside
        segments.append(Segment(name, KIND_TYPE[kind], mask, (1.0, 0.0, 0.0)))
    sigma = rendering.blur_fwhm_mm / (2.0 * math.sqrt(2.0 * math.log(2.0))) / voxel
    image = ndimage.gaussian_filter(activity, sigma) if sigma > 0 else activity
    if rendering.noise_sd_at_liver > 0:
        noise = ndimage.gaussian_filter(rng.standard_normal(image.shape).astype(np.float32), 1.0)
        noise /= float(noise.std())
        image = image + rendering.noise_sd_at_liver * np.sqrt(np.maximum(image, 0) / TEXTBOOK_SUV["liver"]) * noise
    image = np.maximum(image, 0).astype(np.float32)
    pet = sitk.GetImageFromArray(image)
    pet.SetSpacing((voxel, voxel, voxel))
    values = dict(TEXTBOOK_CLINICAL)
    if resolution_known and rendering.blur_fwhm_mm >= 2:
        values["pet_resolution_mm"] = rendering.blur_fwhm_mm
    clinical, _ = validate_clinical(values, source="textbook phantom")
    return Case(case_id, pet, image, segments, clinical)


RENDERINGS = tuple(
    [Rendering(blur_fwhm_mm=b) for b in (0.0, 3.0, 6.0, 8.0, 10.0)]
    + [Rendering(texture=t) for t in ("cortex", "lobular")]
    + [Rendering(blur_fwhm_mm=b, texture="cortex") for b in (0.0, 10.0)]
    + [Rendering(voxel_mm=v) for v in (2.5, 5.0)]
    + [Rendering(noise_sd_at_liver=n) for n in (0.0, 1.0)]
)
