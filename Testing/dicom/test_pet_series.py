"""DICOM PET/CT series on disk (written with pydicom by dicom_writer.py): slice order, geometry, per-slice
rescale, vendor tags, errors, identifiers, the case reader and the ``psmadose suv`` command as a real process."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from psmadose.dicom.series import read_ct_hu, read_pet_suv, write_suv
from psmadose.errors import InputError

sys.path.insert(0, str(Path(__file__).parent))
from dicom_writer import PATIENT_BIRTH_DATE, PATIENT_ID, PATIENT_NAME, write_series  # noqa: E402

F18_S = 6586.2
DECAYED_2H = 300e6 * 2 ** (-7200 / F18_S)  # BASE series: 300 MBq at 08:00, series time 10:00 (QIBA START)
SUVBW_FACTOR = 80000.0 / DECAYED_2H  # 80 kg


def suv_array(result) -> np.ndarray:
    return sitk.GetArrayFromImage(result.image)


def test_bqml_start_values_order_and_geometry(tmp_path):
    written = write_series(tmp_path / "pet", n_slices=15, angle_deg=30.0, pixel_spacing=(2.0, 3.0))
    result = read_pet_suv(tmp_path / "pet")
    image = result.image
    assert image.GetPixelID() == sitk.sitkFloat32
    # Shuffled file names and InstanceNumbers: only the position along the normal gives this order.
    assert np.allclose(suv_array(result), written.values * SUVBW_FACTOR, rtol=1e-6)
    assert image.GetSize() == (5, 6, 15)
    assert image.GetSpacing() == pytest.approx((3.0, 2.0, 4.0))  # PixelSpacing is (row gap, column gap)
    assert image.GetOrigin() == pytest.approx(tuple(written.origin))
    direction = np.array(image.GetDirection()).reshape(3, 3)
    assert np.allclose(direction[:, 0], written.row) and np.allclose(direction[:, 1], written.col)
    assert np.allclose(direction[:, 2], written.normal)
    # Each voxel's LPS position: ImagePositionPatient + i*colgap*row + j*rowgap*col (DICOM PS3.3 C.7.6.2.1.1).
    k_file = 7
    ds = pydicom.dcmread(written.files[k_file])
    ipp = np.array([float(v) for v in ds.ImagePositionPatient])
    point = image.TransformIndexToPhysicalPoint((2, 3, k_file))
    assert np.allclose(point, ipp + 2 * 3.0 * written.row + 3 * 2.0 * written.col)
    stored = ds.pixel_array[3, 2] * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    assert suv_array(result)[k_file, 3, 2] == pytest.approx(stored * SUVBW_FACTOR, rel=1e-6)


def test_slice_order_with_reversed_normal(tmp_path):
    # Slices written from head to feet along a normal pointing to the feet (negative slice spacing in patient z).
    written = write_series(tmp_path / "pet", slice_spacing=-3.0, n_slices=10)
    result = read_pet_suv(tmp_path / "pet")
    z = [result.image.TransformIndexToPhysicalPoint((0, 0, k))[2] for k in range(10)]
    assert np.all(np.diff(z) > 0)  # ordered along +normal (+S), origin at the most inferior slice
    assert result.image.GetSpacing()[2] == pytest.approx(3.0)
    assert np.allclose(suv_array(result), written.values[::-1] * SUVBW_FACTOR, rtol=1e-6)


def test_per_slice_slope_and_intercept(tmp_path):
    written = write_series(tmp_path / "pet", intercept=5.0, n_slices=10, seed=3)
    slopes = {float(pydicom.dcmread(f).RescaleSlope) for f in written.files}
    assert len(slopes) == 10  # a different slope on every slice
    assert np.allclose(suv_array(read_pet_suv(tmp_path / "pet")), written.values * SUVBW_FACTOR, rtol=1e-6)


def test_admin_and_none(tmp_path):
    admin = write_series(tmp_path / "admin", tags={"DecayCorrection": "ADMIN"})
    assert np.allclose(suv_array(read_pet_suv(tmp_path / "admin")), admin.values * 80000.0 / 300e6, rtol=1e-6)
    # NONE: bed positions acquired at 10:00 (slices 0-5) and 10:03 (slices 6-11); each decays to its own time.
    none = write_series(tmp_path / "none", tags={"DecayCorrection": "NONE", "CorrectedImage": ["ATTN"]},
                        slice_tags=lambda k: {"AcquisitionTime": "100000" if k < 6 else "100300"})
    result = read_pet_suv(tmp_path / "none")
    factors = np.array([80000.0 / (300e6 * 2 ** (-(7200 if k < 6 else 7380) / F18_S)) for k in range(12)])
    assert np.allclose(suv_array(result), none.values * factors[:, None, None], rtol=1e-6)


def test_philips_cnts_private_factors(tmp_path):
    written = write_series(tmp_path / "suv", tags={"Units": "CNTS"}, philips={"suv": 0.000123, "activity": 2.0})
    assert np.allclose(suv_array(read_pet_suv(tmp_path / "suv")), written.values * 0.000123, rtol=1e-6)
    written = write_series(tmp_path / "acsf", tags={"Units": "CNTS"}, philips={"activity": 2.0})
    # (7053,1009): counts * 2.0 = Bq/mL, then the SUVbw factor.
    assert np.allclose(suv_array(read_pet_suv(tmp_path / "acsf")), written.values * 2.0 * SUVBW_FACTOR, rtol=1e-6)
    write_series(tmp_path / "bare", tags={"Units": "CNTS"})
    with pytest.raises(InputError, match="7053"):
        read_pet_suv(tmp_path / "bare")


def test_gml_and_ge_private_time(tmp_path):
    written = write_series(tmp_path / "gml", tags={"Units": "GML"})
    assert np.allclose(suv_array(read_pet_suv(tmp_path / "gml")), written.values, rtol=1e-6)
    # Series time 12:00 is after the acquisition (10:00): GE private (0009,100d) 09:30 is the scan time.
    written = write_series(tmp_path / "ge", tags={"SeriesTime": "120000"}, ge_scan_datetime="20240105093000")
    result = read_pet_suv(tmp_path / "ge")
    assert result.record["decay_time_s"] == 5400
    assert np.allclose(suv_array(result), written.values * 80000.0 / (300e6 * 2 ** (-5400 / F18_S)), rtol=1e-6)


def test_acquisition_earlier_than_series_and_day_before(tmp_path):
    write_series(tmp_path / "acq", tags={"SeriesTime": "120000"},
                 slice_tags=lambda k: {"AcquisitionTime": f"10{k:02d}00"})
    assert read_pet_suv(tmp_path / "acq", keep_identifiers=True).record["scan_datetime"] == "2024-01-05T10:00:00"
    # Injection the day before (full datetime): 23:00 -> scan 01:00 is 2 h.
    write_series(tmp_path / "day", tags={"SeriesTime": "010000", "AcquisitionTime": "010000"},
                 radiopharm={"RadiopharmaceuticalStartDateTime": "20240104230000",
                             "RadiopharmaceuticalStartTime": "230000"})
    assert read_pet_suv(tmp_path / "day").record["decay_time_s"] == 2 * 3600
    # 22:00 the day before -> 10:00 is 12 h of F-18 uptake (< 10 % left): a wrong date is more likely; refused.
    write_series(tmp_path / "long", radiopharm={"RadiopharmaceuticalStartDateTime": "20240104220000",
                                                 "RadiopharmaceuticalStartTime": "220000"})
    with pytest.raises(InputError, match="uptake time 12.0 h"):
        read_pet_suv(tmp_path / "long")


def test_half_life_from_code_sequence(tmp_path):
    write_series(tmp_path / "pet", radiopharm={"RadionuclideHalfLife": None}, radionuclide_code="C-111A1")
    result = read_pet_suv(tmp_path / "pet")
    assert result.record["half_life_s"] == pytest.approx(6586.2)
    assert "radioactivedecay" in result.record["half_life_source"]


@pytest.mark.parametrize("kwargs, message", [
    ({"tags": {"PatientWeight": None}}, "PatientWeight"),
    ({"radiopharm": {"RadionuclideTotalDose": None}}, "RadionuclideTotalDose"),
    ({"tags": {"Modality": "NM"}}, "Modality"),
    ({"drop_slices": (5,)}, "slice is missing"),
    ({"tags": {"DecayCorrection": None}}, "DecayCorrection"),
])
def test_bad_series_errors_name_the_problem(tmp_path, kwargs, message):
    write_series(tmp_path / "pet", **kwargs)
    with pytest.raises(InputError, match=message):
        read_pet_suv(tmp_path / "pet")


def test_mixed_series_and_contradictory_slices(tmp_path):
    write_series(tmp_path / "mix", n_slices=4)
    write_series(tmp_path / "mix" / "other", n_slices=4, seed=1)
    with pytest.raises(InputError, match="2 different series"):
        read_pet_suv(tmp_path / "mix")
    # Same SeriesInstanceUID but one slice says another weight: contradictory series-level tag.
    write_series(tmp_path / "weight", slice_tags=lambda k: {"PatientWeight": 81.0 if k == 3 else 80.0})
    with pytest.raises(InputError, match="PatientWeight differs"):
        read_pet_suv(tmp_path / "weight")


def test_no_identifiers_in_outputs_unless_asked(tmp_path):
    write_series(tmp_path / "pet")
    (tmp_path / "out").mkdir()
    write_suv(read_pet_suv(tmp_path / "pet"), tmp_path / "out" / "SUV.nrrd")
    data = (tmp_path / "out" / "SUV.nrrd").read_bytes() + (tmp_path / "out" / "SUV.json").read_bytes()
    for identifier in (PATIENT_NAME, PATIENT_ID, PATIENT_BIRTH_DATE, "Testpatient"):
        assert identifier.encode() not in data
    write_suv(read_pet_suv(tmp_path / "pet", keep_identifiers=True), tmp_path / "out" / "KEEP.nrrd")
    kept = (tmp_path / "out" / "KEEP.nrrd").read_bytes()
    assert PATIENT_ID.encode() in kept  # the check above could see an identifier if it were written
    assert json.loads((tmp_path / "out" / "KEEP.json").read_text())["patient"]["PatientID"] == PATIENT_ID


def test_ct_to_hu(tmp_path):
    written = write_series(tmp_path / "ct", modality="CT", intercept=-1024.0, n_slices=6)
    image, frame = read_ct_hu(tmp_path / "ct")
    assert np.allclose(sitk.GetArrayFromImage(image), written.values)
    assert sitk.GetArrayFromImage(image).min() < 0 and frame
    with pytest.raises(InputError, match="Modality is CT, expected PT"):
        read_pet_suv(tmp_path / "ct")


def test_case_with_dicom_pet_and_ct(tmp_path, demo_case, caplog):
    from psmadose.case import read_case
    from psmadose.segmentation import SegmentToWrite, write_segmentation

    case = tmp_path / "case"
    case.mkdir()
    shutil.copy(demo_case / "clinical.json", case / "clinical.json")
    clinical = json.loads((case / "clinical.json").read_text())
    write_series(case / "pet", n_slices=12, rows=12, columns=12, pixel_spacing=(4.0, 4.0),
                 tags={"PatientWeight": clinical["weight_kg"] * 1.2, "FrameOfReferenceUID": "1.2.3.4"})
    write_series(case / "ct", modality="CT", n_slices=12, rows=12, columns=12, pixel_spacing=(4.0, 4.0),
                 intercept=-1024.0, tags={"FrameOfReferenceUID": "1.2.3.5"})
    suv = read_pet_suv(case / "pet")
    mask = np.zeros(sitk.GetArrayViewFromImage(suv.image).shape, dtype=bool)
    mask[3:6, 3:6, 3:6] = True
    write_segmentation(case / "segmentation.seg.nrrd", suv.image,
                       [SegmentToWrite("kidney_left", mask, (1.0, 0.0, 0.0))])
    before = {p: p.read_bytes() for p in (case / "pet").iterdir()}
    loaded = read_case(case)
    assert np.allclose(loaded.pet_array, sitk.GetArrayFromImage(suv.image))
    assert loaded.ct is not None and loaded.segments[0].n_voxels == 27
    assert any("PatientWeight" in w for w in loaded.warnings)  # 20 % off clinical.json
    assert any("FrameOfReferenceUID" in w for w in loaded.warnings)
    assert before == {p: p.read_bytes() for p in (case / "pet").iterdir()}  # inputs untouched
    from psmadose.case import sha256_file

    assert len(sha256_file(case / "pet")) == 64


def test_cli_suv(tmp_path, cli):
    written = write_series(tmp_path / "pet", tags={"PatientSex": "F"})
    done = cli("suv", tmp_path / "pet", "--out", tmp_path / "SUL.nrrd", "--method", "lbm")
    assert done.returncode == 0, done.stderr
    bmi = 80 / 1.8**2  # Janmahasatian female LBM, decayed dose as QIBA START
    expected = 1000 * 9270 * 80 / (8780 + 244 * bmi) / DECAYED_2H
    image = sitk.ReadImage(str(tmp_path / "SUL.nrrd"))
    assert np.allclose(sitk.GetArrayFromImage(image), written.values * expected, rtol=1e-6)
    sidecar = json.loads((tmp_path / "SUL.json").read_text())
    assert sidecar["suv_factor"] == pytest.approx(expected) and sidecar["method"].startswith("SUL")
    for key in ("units", "decay_correction", "scan_datetime_rule", "injection_datetime_rule", "uptake_time_min",
                "half_life_source", "injected_activity_bq", "patient_weight_kg", "patient_height_m", "patient_sex"):
        assert key in sidecar
    assert sidecar["uptake_time_min"] == pytest.approx(120.0)

    write_series(tmp_path / "noweight", tags={"PatientWeight": None})
    failed = cli("suv", tmp_path / "noweight", "--out", tmp_path / "bad.nrrd")
    assert failed.returncode == 2
    lines = failed.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "PatientWeight" in lines[0]
    assert not (tmp_path / "bad.nrrd").exists() and not list(tmp_path.glob(".bad*"))
    usage = cli("suv", tmp_path / "pet", "--out", tmp_path / "x.nrrd", "--method", "ideal")
    assert usage.returncode == 2 and usage.stderr.startswith("error:")
