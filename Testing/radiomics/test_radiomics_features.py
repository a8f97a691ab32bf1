"""Radiomics with real pyradiomics (psmadose.features.radiomics): the fast cropped extraction equals pyradiomics
run the documented way (full-volume label image per segment), a checked-in golden baseline, the settings hash,
stable column names, parallel == serial, and nothing printed.

The golden baseline (golden_features.csv) was computed by the naive path (pyradiomics on the full volume, the
independent method) on the synthetic case built below; see README.md here for the command that rewrites it.
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("radiomics.featureextractor")  # the submodule: Testing/radiomics itself is no package

import SimpleITK as sitk  # noqa: E402
from psmadose.case import Case, Segment, read_case  # noqa: E402
from psmadose.clinical import validate_clinical  # noqa: E402
from psmadose.features.radiomics import DEFAULT_PARAMS_PATH, RadiomicsExtractor  # noqa: E402
from psmadose.structures import StructureType  # noqa: E402

HERE = Path(__file__).resolve().parent
GOLDEN = HERE / "golden_features.csv"
WRITE_GOLDEN = os.environ.get("PSMADOSE_WRITE_GOLDEN") == "1"

# Synthetic case: 26 x 22 x 18 voxels (i, j, k), anisotropic, rotated direction and an origin away from 0 so
# that crop-origin mistakes change the CT sampled onto the PET grid.
PET_SIZE = (26, 22, 18)
PET_SPACING = (4.0, 3.5, 3.0)
PET_ORIGIN = (-57.0, 31.0, 112.0)
PET_DIRECTION = (0.0, -1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0)  # 90 degrees about z
CLINICAL = {"age_years": 71, "weight_kg": 82, "height_cm": 176, "egfr_ml_min_1_73m2": 75, "psa_ng_ml": 120,
            "alp_u_l": 140, "ldh_u_l": 250, "hemoglobin_g_dl": 12.1, "prior_taxane_lines": 1, "prior_arpi": True,
            "pet_tracer": "18F-DCFPyL", "pet_uptake_time_min": 120, "planned_activity_gbq": 7.4,
            "planned_cycles": 4}


def synthetic_case() -> Case:
    """Closed-form images (no random generator, so no numpy stream changes): a hot blob on a textured
    background (SUV), a CT on its own 3 mm grid, and segments including one touching two image faces and a
    single voxel (which pyradiomics refuses)."""
    k, j, i = np.meshgrid(*(np.arange(n, dtype=np.float64) for n in PET_SIZE[::-1]), indexing="ij")
    pet = (1.5 + 14.0 * np.exp(-((i - 12) ** 2 + (j - 10) ** 2 + (k - 8) ** 2) / (2 * 3.5**2))
           + 0.9 * (np.sin(0.7 * i) * np.cos(0.5 * j) * np.sin(0.9 * k + 0.3) + 1.0)
           + 3.0 * np.exp(-((i - 3) ** 2 + (j - 17) ** 2) / 8.0) * (k / 17.0))
    pet_image = sitk.GetImageFromArray(pet.astype(np.float32))
    pet_image.SetSpacing(PET_SPACING)
    pet_image.SetOrigin(PET_ORIGIN)
    pet_image.SetDirection(PET_DIRECTION)

    ct_size = (40, 40, 26)
    kc, jc, ic = np.meshgrid(*(np.arange(n, dtype=np.float64) for n in ct_size[::-1]), indexing="ij")
    ct = -60.0 + 45.0 * np.sin(0.31 * ic + 0.17 * jc) * np.cos(0.23 * kc) + 700.0 * (np.abs(ic - 20) < 3)
    ct_image = sitk.GetImageFromArray(ct.astype(np.float32))
    ct_image.SetSpacing((3.0, 3.0, 3.0))
    ct_image.SetOrigin((-140.0, 10.0, 100.0))

    blob = ((i - 12) ** 2 / 25 + (j - 10) ** 2 / 16 + (k - 8) ** 2 / 12) <= 1.0
    ring = (((i - 14) ** 2 + (j - 6) ** 2) <= 30) & (((i - 14) ** 2 + (j - 6) ** 2) >= 6) & (k >= 3) & (k <= 12)
    edge = (i <= 4) & (j >= 15) & (k >= 12)  # touches i = 0, j = max and k = max
    single = np.zeros_like(blob)
    single[2, 3, 20] = True
    segments = [Segment("kidney_left", StructureType.KIDNEY, blob, (1, 0, 0)),
                Segment("parotid_left", StructureType.PAROTID, ring & ~blob, (0, 1, 0)),
                Segment("lesion_edge", StructureType.TUMOUR, edge, (0, 0, 1)),
                Segment("lesion_single", StructureType.TUMOUR, single, (1, 1, 0))]
    clinical, _ = validate_clinical(CLINICAL)
    return Case("synthetic", pet_image, pet.astype(np.float32), segments, clinical, ct=ct_image)


@pytest.fixture(scope="module")
def extractor() -> RadiomicsExtractor:
    return RadiomicsExtractor()


@pytest.fixture(scope="module")
def synthetic() -> Case:
    return synthetic_case()


def assert_same(fast: pd.DataFrame, naive: pd.DataFrame) -> None:
    assert list(fast.columns) == list(naive.columns)
    assert list(fast["segment"]) == list(naive["segment"])
    a = fast.drop(columns="segment").to_numpy(dtype=float)
    b = naive.drop(columns="segment").to_numpy(dtype=float)
    np.testing.assert_array_equal(np.isnan(a), np.isnan(b))
    np.testing.assert_allclose(a, b, rtol=1e-9, atol=0, equal_nan=True)


def test_fast_equals_naive_on_synthetic_case(extractor, synthetic, caplog):
    with caplog.at_level(logging.WARNING):
        fast = extractor.extract_case(synthetic)
    naive = extractor.extract_naive(synthetic)
    assert_same(fast, naive)
    by_segment = fast.set_index("segment")
    assert by_segment.loc["lesion_single"].isna().all()  # refused by pyradiomics, reported, not fatal
    assert any("lesion_single" in r.getMessage() for r in caplog.records)
    assert not by_segment.drop(index="lesion_single").isna().any().any()
    # The voxel count pyradiomics reports is the mask's: nothing lost at the image border.
    voxel_ml = np.prod(PET_SPACING)
    for segment in synthetic.segments[:3]:
        assert by_segment.loc[segment.name, "shape_VoxelVolume"] == pytest.approx(segment.n_voxels * voxel_ml)


def test_fast_equals_naive_on_virtual_patient(extractor, demo_case):
    """A real simulated patient (CT on its own 3 mm x 5 mm grid), a few segments of every size class."""
    case = read_case(demo_case)
    wanted = ["liver", "kidney_left", "parotid_left", "submandibular_right"]
    lesions = sorted((s for s in case.segments if s.structure_type is StructureType.TUMOUR), key=lambda s: s.n_voxels)
    case.segments = [s for s in case.segments if s.name in wanted] + [lesions[0], lesions[-1]]
    assert len(case.segments) == 6
    fast = extractor.extract_case(case, ct_on_pet_grid=case.ct_on_pet_grid())
    assert_same(fast, extractor.extract_naive(case))
    assert not fast.drop(columns="segment").isna().any().any()


def test_parallel_equals_serial(extractor, synthetic):
    serial = extractor.extract_case(synthetic, workers=1)
    parallel = extractor.extract_case(synthetic, workers=2)
    pd.testing.assert_frame_equal(serial, parallel, check_exact=True)


def test_golden_baseline(extractor, synthetic):
    naive = extractor.extract_naive(synthetic)
    if WRITE_GOLDEN:
        naive.to_csv(GOLDEN, index=False, float_format="%.17g")
        pytest.skip(f"wrote {GOLDEN}")
    golden = pd.read_csv(GOLDEN)
    fast = extractor.extract_case(synthetic)
    assert list(fast.columns) == list(golden.columns), "feature set changed: regenerate the baseline on purpose"
    assert list(fast["segment"]) == list(golden["segment"])
    np.testing.assert_allclose(fast.drop(columns="segment").to_numpy(dtype=float),
                               golden.drop(columns="segment").to_numpy(dtype=float),
                               rtol=1e-6, atol=1e-10, equal_nan=True)


def test_settings_hash_and_columns(extractor):
    assert extractor.settings_sha256 == hashlib.sha256(DEFAULT_PARAMS_PATH.read_bytes()).hexdigest()
    names = extractor.feature_names()
    assert len(names) == len(set(names))
    assert {"pet_glcm_Contrast", "ct_firstorder_Mean", "shape_VoxelVolume", "pet_ngtdm_Busyness"} <= set(names)
    assert not any(n.startswith(("diagnostics", "original", "ct_shape", "pet_shape")) for n in names)
    assert "pet_glcm_SumAverage" not in names  # = 2 x JointAverage for a symmetrical GLCM
    assert sum(n.startswith("shape_") for n in names) == 14


def test_case_without_ct_has_nan_ct_columns(extractor, synthetic):
    no_ct = Case(synthetic.case_id, synthetic.pet, synthetic.pet_array, synthetic.segments[:1], synthetic.clinical)
    frame = extractor.extract_case(no_ct)
    assert list(frame.columns) == ["segment", *extractor.feature_names()]
    ct_columns = [c for c in frame.columns if c.startswith("ct_")]
    assert frame[ct_columns].isna().all().all()
    assert frame.drop(columns=["segment", *ct_columns]).notna().all().all()


def test_nothing_printed(extractor, synthetic, capfd):
    extractor.extract_case(synthetic)  # includes a segment pyradiomics refuses (it logs, we log)
    out, err = capfd.readouterr()
    assert out == "" and err == ""


def test_bad_settings_are_refused(tmp_path):
    from psmadose.errors import InputError

    text = DEFAULT_PARAMS_PATH.read_text(encoding="utf-8").replace("    Original: {}\n",
                                                                   "    Original: {}\n    LoG: {sigma: [2.0]}\n", 1)
    path = tmp_path / "params.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(InputError, match="Original image"):
        RadiomicsExtractor(path).feature_names()
    with pytest.raises(InputError, match="not found"):
        RadiomicsExtractor(tmp_path / "missing.yaml")
