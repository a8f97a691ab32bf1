"""Absorbed dose on phantoms with exactly known activity (phantoms.py: uniform spheres, no blur, no noise):
local deposition against TIA x Delta / mass, VSV = LDE inside a uniform region (the kernel conserves energy),
registration recovering a known shift, and the speed of the voxel pipeline."""

from __future__ import annotations

import math

import numpy as np
import pytest
import SimpleITK as sitk
from phantoms import DEFAULT_SPHERES, analytic_tia_mbq_h, concentration, reference_image, write_study
from psmadose.dosimetry import Settings, compute
from psmadose.dosimetry.kernel import sphere_absorbed_fraction
from psmadose.dosimetry.registration import register_rigid
from psmadose.dosimetry.run import DEFAULT_DENSITY_G_ML, dose_map, voxel_tia_bq_s
from psmadose.lu177 import decay_data

S_SELF = decay_data().self_dose_gy_g_per_mbq_h  # Gy g / (MBq h), ICRP-107 electrons


@pytest.fixture(scope="module")
def phantom_study(tmp_path_factory):
    return write_study(tmp_path_factory.mktemp("phantom") / "study")


def _by_name(result):
    return {s.name: s for s in result.segments}


def test_lde_segment_dose_is_tia_times_delta_over_mass(phantom_study):
    result = compute(phantom_study, Settings(method="lde"))
    segments = _by_name(result)
    for sphere in DEFAULT_SPHERES:
        s = segments[sphere.name]
        tia = analytic_tia_mbq_h(sphere)
        assert s.tia.tia_mbq_h == pytest.approx(tia, rel=0.01)
        expected_gy = tia * S_SELF / (s.volume_ml * DEFAULT_DENSITY_G_ML)
        assert s.absorbed_dose_gy == pytest.approx(expected_gy, rel=0.01)
        assert s.tia.effective_half_life_h == pytest.approx(sphere.teff_h, rel=0.01)
        assert s.tia.model == "mono" and 0 < s.dose_sd_gy < 0.2 * s.absorbed_dose_gy


def test_vsv_segment_dose_applies_the_sphere_absorbed_fraction(phantom_study):
    lde = _by_name(compute(phantom_study, Settings(method="lde")))
    vsv = _by_name(compute(phantom_study, Settings(method="vsv")))
    for sphere in DEFAULT_SPHERES:
        ratio = vsv[sphere.name].absorbed_dose_gy / lde[sphere.name].absorbed_dose_gy
        mass = lde[sphere.name].mass_g
        radius = (3 * mass / DEFAULT_DENSITY_G_ML / (4 * math.pi)) ** (1 / 3) * 10
        assert ratio == pytest.approx(sphere_absorbed_fraction(radius, DEFAULT_DENSITY_G_ML), rel=1e-6)
        assert 0.9 < ratio < 1.0


def test_dose_map_lde_and_vsv_agree_inside_a_uniform_region():
    # Uniform TIA: every voxel receives what it emits (kernel sums to the electron energy), so VSV = LDE away from
    # the edges, and both equal TIA x Delta / mass per voxel.
    spacing = (4.0, 4.0, 4.0)
    tia = np.full((20, 20, 20), 5.0e6, dtype=np.float32)  # Bq h / mL
    lde = dose_map(tia, spacing, "lde", DEFAULT_DENSITY_G_ML)
    vsv = dose_map(tia, spacing, "vsv", DEFAULT_DENSITY_G_ML)
    expected = 5.0e6 / 1e6 * S_SELF / DEFAULT_DENSITY_G_ML  # MBq h per mL / (g per mL)
    assert float(lde[10, 10, 10]) == pytest.approx(expected, rel=1e-5)
    assert float(vsv[10, 10, 10]) == pytest.approx(expected, rel=0.005)
    assert float(vsv[0, 10, 10]) < float(vsv[10, 10, 10])  # energy escapes at the edge


def test_voxel_tia_of_exponentials_is_exact():
    t = [4.0, 24.0, 96.0]
    teff = np.array([10.0, 35.5, 100.0])
    arrays = [(1e5 * np.exp(-math.log(2) * ti / teff)).reshape(1, 1, 3).astype(np.float32) for ti in t]
    tia = voxel_tia_bq_s(arrays, t)
    np.testing.assert_allclose(tia.ravel(), 1e5 * teff / math.log(2), rtol=0.01)


def test_rigid_registration_recovers_a_known_shift():
    reference = reference_image()
    fixed = sitk.GetImageFromArray(concentration(24.0))
    fixed.CopyInformation(reference)
    shift = (6.0, -4.0, 8.0)  # mm, LPS
    # moving(p) = fixed(p + shift): the content moves by -shift, so the fixed->moving map is a translation of -shift
    moving = sitk.Resample(fixed, fixed, sitk.TranslationTransform(3, shift), sitk.sitkLinear, 0.0)
    reg = register_rigid(fixed, moving, "spect")
    np.testing.assert_allclose(reg.record()["translation_mm"], [-v for v in shift], atol=1.0)
    # and resampling the moving image with it restores the fixed one
    restored = sitk.GetArrayFromImage(sitk.Resample(moving, fixed, reg.transform, sitk.sitkLinear, 0.0))
    inner = (slice(5, -5),) * 3
    original = sitk.GetArrayFromImage(fixed)
    before = np.abs(sitk.GetArrayFromImage(moving) - original)[inner].mean()
    assert np.abs(restored - original)[inner].mean() < 0.25 * before
    assert max(abs(a) for a in reg.record()["angles_rad"]) < 0.03


def test_registration_is_recorded_and_keeps_doses(phantom_study):
    result = compute(phantom_study, Settings(method="lde", register=True))
    assert len(result.registrations) == 2 and all(r["on"] == "spect" for r in result.registrations)
    for r in result.registrations:
        assert max(abs(v) for v in r["translation_mm"]) < 1.0  # nothing to correct in this phantom
    segments = _by_name(result)
    kidney = DEFAULT_SPHERES[0]
    assert segments[kidney.name].tia.tia_mbq_h == pytest.approx(analytic_tia_mbq_h(kidney), rel=0.02)


def test_progress_reports_and_cancels(phantom_study):
    from psmadose.errors import CancelledError

    seen = []
    compute(phantom_study, Settings(method="lde"), progress=lambda done, total: seen.append((done, total)))
    assert seen[0][0] == 0 and seen[-1][0] == seen[-1][1] and len(seen) >= 3
    with pytest.raises(CancelledError):
        compute(phantom_study, Settings(method="lde"), progress=lambda done, total: done < 1)


def test_partial_volume_recovery_and_spill_correction_on_blurred_neighbours(tmp_path):
    # A hot 'kidney' next to a small 'submandibular' sphere, blurred with a 12 mm Gaussian (activity conserved).
    # Expected: the analytic TIA of each sphere (phantoms.analytic_tia_mbq_h). The plain contour mean loses most of
    # the small sphere's activity; the recovery gets it back but counts the kidney's spill-in; the spill correction
    # removes that.
    from phantoms import Sphere

    spheres = (Sphere("kidney_left", (15, 20, 14), 22.0, 2.0e6, 35.5),
               Sphere("submandibular_left", (15, 20, 23), 9.0, 1.0e6, 42.0))
    study = write_study(tmp_path / "blurred", spheres=spheres, fwhm_mm=12.0)
    errors = {}
    for label, settings in (("plain", Settings(method="lde", recovery=False)),
                            ("recovered", Settings(method="lde")),
                            ("spill", Settings(method="lde", spill_correction=True))):
        segments = _by_name(compute(study, settings))
        errors[label] = {s.name: segments[s.name].tia.tia_mbq_h / analytic_tia_mbq_h(s) - 1 for s in spheres}
    print(errors)
    small = "submandibular_left"
    assert errors["plain"][small] < -0.3
    assert abs(errors["spill"][small]) < abs(errors["recovered"][small])
    assert abs(errors["spill"][small]) < 0.10
    assert abs(errors["spill"]["kidney_left"]) < 0.05


def test_registration_on_ct_recovers_a_moved_late_scan(tmp_path):
    # The 96 h SPECT/CT pair is moved by a known translation (patient repositioned). Registration on the CTs must
    # find it and the kidney TIA must come back to the analytic value (phantoms.analytic_tia_mbq_h).
    from phantoms import masks

    study = write_study(tmp_path / "moved")
    reference = reference_image()
    hu = np.zeros(reference.GetSize()[::-1], dtype=np.float32)
    k, j, i = np.indices(hu.shape)
    hu[(k - 15) ** 2 / 100 + (j - 20) ** 2 / 300 + (i - 20) ** 2 / 250 > 1] = -1000.0  # a body outline
    hu[(k - 8) ** 2 + (j - 25) ** 2 < 9] = 700.0  # a 'bone' rod, asymmetric
    for name, mask in masks().items():
        hu[mask] = 40.0 if name.startswith("kidney") else 60.0
    shift = sitk.TranslationTransform(3, (5.0, -6.0, 4.0))
    for t in (4, 24, 96):
        ct = sitk.GetImageFromArray(hu)
        ct.CopyInformation(reference)
        spect = sitk.ReadImage(str(study / f"spect_{t}h.nrrd"))
        if t == 96:
            ct = sitk.Resample(ct, ct, shift, sitk.sitkLinear, -1000.0)
            spect = sitk.Resample(spect, spect, shift, sitk.sitkLinear, 0.0)
            sitk.WriteImage(spect, str(study / f"spect_{t}h.nrrd"))
        sitk.WriteImage(ct, str(study / f"ct_{t}h.nrrd"))
    kidney = DEFAULT_SPHERES[0]
    unregistered = _by_name(compute(study, Settings(method="lde")))[kidney.name].tia.tia_mbq_h
    result = compute(study, Settings(method="lde", register=True))
    late = [r for r in result.registrations if r["time_h"] == 96][0]
    assert late["on"] == "ct"
    np.testing.assert_allclose(late["translation_mm"], [-5.0, 6.0, -4.0], atol=1.0)
    registered = _by_name(result)[kidney.name].tia.tia_mbq_h
    truth = analytic_tia_mbq_h(kidney)
    assert abs(registered / truth - 1) < 0.03
    assert abs(registered / truth - 1) < abs(unregistered / truth - 1)
