"""Vendor layouts of PET series, as real pydicom files, converted by read_pet_suv and by the real `psmadose suv`.

Each layout reproduces what the public descriptions say a vendor writes (QIBA vendor-neutral SUV pseudo-code, the
vendors' DICOM conformance statements as quoted there, cornerstonejs/calculate-suv test metadata); the expected
factor of every slice is computed by hand beside it, with the rule cited. Then multi-bed geometry (bed-boundary
gaps, overlaps, duplicates, missing slices), privacy of the sidecar, and the case reader's message for an
implausible SUV.
"""

from __future__ import annotations

import json
import math
import shutil
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from psmadose.dicom.series import read_pet_suv
from psmadose.errors import InputError

sys.path.insert(0, str(Path(__file__).parent))
from dicom_writer import write_series  # noqa: E402

F18_S = 6586.2
DECAYED_2H = 300e6 * 2 ** (-7200 / F18_S)  # writer default: 300 MBq at 08:00, scan 10:00 (QIBA START)
SUVBW = 80000.0 / DECAYED_2H  # 80 kg


def _t_ave(duration_s: float, half_life: float = F18_S) -> float:
    # DICOM PS3.3 C.8.9.4.1.5: average-count time within a frame of duration T
    lam = math.log(2) / half_life
    return math.log(lam * duration_s / (1 - math.exp(-lam * duration_s))) / lam


def _siemens_beds(k: int) -> dict:
    # Two beds of 180 s (slices 0-5, 6-11) starting 10:00:00 and 10:03:00, both decay-corrected to 09:57:40.
    start, offset = ("100000", 140) if k < 6 else ("100300", 320)
    return {"AcquisitionTime": start, "ActualFrameDuration": 180000,
            "FrameReferenceTime": f"{(offset + _t_ave(180)) * 1000:.3f}"}


JAMES_M = 1.10 * 80 - 128 * (80 / 180) ** 2  # James 1976 LBM (GE), 80 kg, 180 cm, man
DEVINE_M = 50 + 2.3 * (180 / 2.54 - 60)  # Devine 1974 IBW, 180 cm, man
DUBOIS_CM2 = 1e4 * 0.007184 * 80**0.425 * 180**0.725  # Du Bois BSA in cm^2

# name, writer arguments, expected SUVbw factor (stored*slope+intercept -> SUVbw), text expected in the sidecar
LAYOUTS = [
    ("GE BQML, series re-created after the scan, private scan time (0009,100d)",
     dict(tags={"Manufacturer": "GE MEDICAL SYSTEMS", "SeriesTime": "120000"}, ge_scan_datetime="20240105093000"),
     80000 / (300e6 * 2 ** (-5400 / F18_S)), "GE private scan datetime"),  # 08:00 -> 09:30
    ("GE GML, SUVType BW (already SUVbw)",
     dict(tags={"Manufacturer": "GE MEDICAL SYSTEMS", "Units": "GML", "SUVType": "BW"}), 1.0, "SUVbw already"),
    ("GE GML, SUVType LBM (James)",
     dict(tags={"Manufacturer": "GE MEDICAL SYSTEMS", "Units": "GML", "SUVType": "LBM"}), 80 / JAMES_M, "James"),
    ("GE GML, SUVType IBW",
     dict(tags={"Manufacturer": "GE MEDICAL SYSTEMS", "Units": "GML", "SUVType": "IBW"}), 80 / DEVINE_M, "Devine"),
    ("CM2ML, SUVType BSA (stored SUVbsa)",
     dict(tags={"Units": "CM2ML", "SUVType": "BSA"}), 80000 / DUBOIS_CM2, "Du Bois"),
    ("Siemens BQML, two beds, SeriesTime after the acquisition: frame reference time",
     dict(tags={"Manufacturer": "SIEMENS", "SeriesTime": "103000"}, slice_tags=_siemens_beds),
     80000 / (300e6 * 2 ** (-(7200 - 140) / F18_S)), "FrameReferenceTime"),  # 08:00 -> 09:57:40
    ("Siemens BQML, SeriesTime at the first bed, AcquisitionDateTime",
     dict(tags={"Manufacturer": "SIEMENS"},
          slice_tags=lambda k: {"AcquisitionDateTime": "20240105100000" if k < 6 else "20240105100300"}),
     SUVBW, "SeriesDate/SeriesTime"),
    ("Philips CNTS, (7053,1000) SUV scale factor",
     dict(tags={"Manufacturer": "Philips Medical Systems", "Units": "CNTS"}, philips={"suv": 0.000123}),
     0.000123, "(7053,1000)"),
    ("Philips CNTS, (7053,1000) without the private creator",
     dict(tags={"Manufacturer": "Philips Medical Systems", "Units": "CNTS"}, philips={"suv": 0.000123},
          philips_creator=False), 0.000123, "creator"),
    ("Philips CNTS, (7053,1009) without the private creator, implicit VR (raw bytes)",
     dict(tags={"Manufacturer": "Philips Medical Systems", "Units": "CNTS"}, philips={"activity": 2.0},
          philips_creator=False, implicit_vr=True), 2.0 * SUVBW, "(7053,1009)"),  # counts * 2.0 = Bq/mL
    ("Philips BQML, injection time only (RadiopharmaceuticalStartTime on SeriesDate)",
     dict(tags={"Manufacturer": "Philips Medical Systems"}, radiopharm={"RadiopharmaceuticalStartDateTime": None}),
     SUVBW, "on SeriesDate"),
    ("Canon/Toshiba BQML, injection 23:30 time only, scan 00:30: the day before",
     dict(tags={"Manufacturer": "CANON_MEC", "SeriesTime": "003000", "AcquisitionTime": "003000"},
          radiopharm={"RadiopharmaceuticalStartDateTime": None, "RadiopharmaceuticalStartTime": "233000"}),
     80000 / (300e6 * 2 ** (-3600 / F18_S)), "day before"),  # 1 h uptake
    ("United Imaging BQML, DT injection and acquisition date-times",
     dict(tags={"Manufacturer": "UIH", "AcquisitionDateTime": "20240105100000"}), SUVBW, "SeriesDate/SeriesTime"),
    ("RadionuclideTotalDose in MBq (NM-module habit)",
     dict(radiopharm={"RadionuclideTotalDose": 300.0}), SUVBW, "read as MBq"),
    ("RadionuclideTotalDose in kBq",
     dict(radiopharm={"RadionuclideTotalDose": 300000.0}), SUVBW, "read as kBq"),
    ("PatientWeight in grams",
     dict(tags={"PatientWeight": 80000.0}), SUVBW, "read as grams"),
    ("RadionuclideHalfLife in minutes",
     dict(radiopharm={"RadionuclideHalfLife": 109.77}), SUVBW, "read as minutes"),
    ("RadiopharmaceuticalInformationSequence with the same administration twice",
     dict(second_radiopharm=[{}]), SUVBW, "RadiopharmaceuticalStartDateTime"),
    ("Ga-68 by code only, 1 h uptake",
     dict(radiopharm={"RadionuclideHalfLife": None, "RadionuclideTotalDose": 150e6,
                      "RadiopharmaceuticalStartDateTime": "20240105090000", "RadiopharmaceuticalStartTime": "090000"},
          radionuclide_code="C-131A3"), 80000 / (150e6 * 2 ** (-3600 / 4062.6)), "Ga-68"),
]


@pytest.mark.parametrize("name, kwargs, factor, rule", LAYOUTS, ids=[layout[0] for layout in LAYOUTS])
def test_vendor_layout_converts_right(tmp_path, name, kwargs, factor, rule):
    written = write_series(tmp_path / "pet", **kwargs)
    result = read_pet_suv(tmp_path / "pet")
    assert np.allclose(sitk.GetArrayFromImage(result.image), written.values * factor, rtol=1e-6), name
    assert rule in json.dumps(result.record), result.record


REFUSED = [
    ("PatientWeight 7.5 (kg? a 75 kg patient)", dict(tags={"PatientWeight": 7.5}), "PatientWeight = 7.5"),
    ("RadionuclideTotalDose 5 GBq", dict(radiopharm={"RadionuclideTotalDose": 5e9}), "RadionuclideTotalDose"),
    ("RadionuclideHalfLife of no PET nuclide", dict(radiopharm={"RadionuclideHalfLife": 5000.0}),
     "RadionuclideHalfLife"),
    ("CNTS private tags without creator from a non-Philips scanner",
     dict(tags={"Manufacturer": "SIEMENS", "Units": "CNTS"}, philips={"suv": 0.000123}, philips_creator=False),
     "7053"),
    ("CNTS without any Philips factor", dict(tags={"Units": "CNTS"}), "7053"),
    ("GML with SUVType BSA", dict(tags={"Units": "GML", "SUVType": "BSA"}), "SUVType = BSA"),
    ("two different administrations in RadiopharmaceuticalInformationSequence",
     dict(second_radiopharm=[{"RadionuclideTotalDose": 150e6, "RadionuclideHalfLife": 4062.6}]),
     "RadiopharmaceuticalInformationSequence"),
    ("RescaleSlope 0 on one slice (never replaced by 1)",
     dict(slice_tags=lambda k: {"RescaleSlope": "0"} if k == 3 else {}), "RescaleSlope"),
    ("PatientSize 17.5 for GML SUVType LBM", dict(tags={"Units": "GML", "SUVType": "LBM", "PatientSize": 17.5}),
     "PatientSize"),
    ("injection 12 h before the scan (F-18)",
     dict(radiopharm={"RadiopharmaceuticalStartDateTime": "20240104220000", "RadiopharmaceuticalStartTime": None}),
     "uptake time 12.0 h"),
    ("beds decay-corrected to different times",
     dict(tags={"SeriesTime": "103000"}, slice_tags=lambda k: dict(_siemens_beds(k), FrameReferenceTime="5000")),
     "FrameReferenceTime"),
]


@pytest.mark.parametrize("name, kwargs, message", REFUSED, ids=[r[0] for r in REFUSED])
def test_vendor_layout_refused_naming_the_tag(tmp_path, name, kwargs, message):
    write_series(tmp_path / "pet", **kwargs)
    with pytest.raises(InputError, match=message.replace("(", r"\(").replace(")", r"\)")):
        read_pet_suv(tmp_path / "pet")


# ---------------------------------------------------------------------------------------------- geometry

def _interpolated(values: np.ndarray, along: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Linear interpolation along the slice axis, voxel by voxel with np.interp (independent of the code)."""
    flat = values.reshape(len(along), -1)
    out = np.stack([np.interp(targets, along, flat[:, v]) for v in range(flat.shape[1])], axis=1)
    return out.reshape(len(targets), *values.shape[1:])


def test_bed_boundary_gap_is_resampled(tmp_path):
    # GE Discovery ST whole body: 3.270 mm slices, one 3.190 mm gap at the bed boundary (after slice 6 of 12).
    along = np.array([3.27 * k - (0.08 if k >= 6 else 0.0) for k in range(12)])
    written = write_series(tmp_path / "pet", along=along, slice_spacing=3.27, angle_deg=15.0)
    result = read_pet_suv(tmp_path / "pet")
    image = result.image
    # Regular grid between the first and the last slice with the nominal gap's slice count: 12 slices of
    # (3.27 * 11 - 0.08) / 11 mm; values interpolated linearly along the normal.
    spacing = (3.27 * 11 - 0.08) / 11
    assert image.GetSize()[2] == 12 and image.GetSpacing()[2] == pytest.approx(spacing)
    assert image.GetOrigin() == pytest.approx(tuple(written.origin))
    expected = _interpolated(written.values * SUVBW, along, spacing * np.arange(12))
    assert np.allclose(sitk.GetArrayFromImage(image), expected, rtol=1e-5)
    assert not np.allclose(sitk.GetArrayFromImage(image)[7], written.values[7] * SUVBW, rtol=1e-3)  # moved
    assert "resampled" in result.record["geometry"] and result.record["geometry"]["irregular_gaps"] == 1
    assert any("irregular slice spacing" in w for w in result.record["warnings"])


@pytest.mark.parametrize("along, message", [
    ([4.0 * k + (0.8 if k >= 6 else 0.0) for k in range(12)], "irregular slice spacing"),  # +20 %: not a bed gap
    ([4.0 * k - (2.8 if k >= 6 else 0.0) for k in range(12)], "slices overlap"),  # 1.2 mm gap: unmerged beds
    ([4.0 * k + (4.0 if k >= 6 else 0.0) for k in range(12)], "a slice is missing"),  # one slice lost
])
def test_irregular_overlapping_or_missing_slices_are_refused(tmp_path, along, message):
    write_series(tmp_path / "pet", along=along)
    with pytest.raises(InputError, match=message):
        read_pet_suv(tmp_path / "pet")


def test_duplicates(tmp_path):
    # Two different slices (SOPInstanceUID) at one position: two volumes or unmerged beds: refused.
    write_series(tmp_path / "twice", along=[4.0 * min(k, 10) for k in range(12)])
    with pytest.raises(InputError, match="share one position"):
        read_pet_suv(tmp_path / "twice")
    # A copy of one file (same SOPInstanceUID): ignored, with a warning.
    written = write_series(tmp_path / "copy")
    shutil.copy(written.files[3], tmp_path / "copy" / "zz_copy_of_slice.dcm")
    result = read_pet_suv(tmp_path / "copy")
    assert np.allclose(sitk.GetArrayFromImage(result.image), written.values * SUVBW, rtol=1e-6)
    assert result.record["geometry"]["duplicate_files_ignored"] == ["zz_copy_of_slice.dcm"] or \
        len(result.record["geometry"]["duplicate_files_ignored"]) == 1
    assert any("copies" in w for w in result.record["warnings"])


# ------------------------------------------------------------------------------- the command, end to end

def _uids_and_dates(folder: Path) -> list[str]:
    ds = pydicom.dcmread(sorted(folder.iterdir())[0])
    return [str(ds.SeriesInstanceUID), str(ds.StudyInstanceUID), str(ds.FrameOfReferenceUID), "2024-01-05",
            "20240105"]


def test_cli_weight_in_grams_converted_with_warning_and_no_identifiers(tmp_path, cli):
    written = write_series(tmp_path / "pet", tags={"PatientWeight": 80000.0})
    done = cli("suv", tmp_path / "pet", "--out", tmp_path / "SUV.nrrd")
    assert done.returncode == 0, done.stderr
    warnings = [line for line in done.stderr.splitlines() if line.startswith("warning:")]
    assert any("PatientWeight = 80000 is in grams" in line for line in warnings), done.stderr
    assert np.allclose(sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "SUV.nrrd"))), written.values * SUVBW,
                       rtol=1e-6)  # 80000 g = 80 kg
    text = (tmp_path / "SUV.json").read_text()
    sidecar = json.loads(text)
    assert sidecar["patient_weight_kg"] == 80 and "grams" in sidecar["patient_weight_rule"]
    assert any("PatientWeight" in w for w in sidecar["warnings"])
    assert sidecar["uptake_time_min"] == pytest.approx(120) and sidecar["decay_factor"] == pytest.approx(
        2 ** (-7200 / F18_S))
    # DICOM PS3.15: UIDs and dates identify the study: not in the sidecar ...
    header = (tmp_path / "SUV.nrrd").read_bytes().split(b"\n\n")[0].decode("latin-1")  # the NRRD text header
    for value in _uids_and_dates(tmp_path / "pet"):
        assert value not in text and value not in header, value
    # ... unless asked for (which also shows the check above could see them).
    kept = cli("suv", tmp_path / "pet", "--out", tmp_path / "KEEP.nrrd", "--keep-identifiers")
    assert kept.returncode == 0, kept.stderr
    kept_text = (tmp_path / "KEEP.json").read_text()
    assert all(value in kept_text for value in _uids_and_dates(tmp_path / "pet")[:4])


@pytest.mark.parametrize("kwargs, tag", [
    (dict(tags={"PatientWeight": 7.5}), "PatientWeight"),
    (dict(radiopharm={"RadionuclideTotalDose": 5e9}), "RadionuclideTotalDose"),
    (dict(along=[4.0 * k + (4.0 if k >= 6 else 0.0) for k in range(12)]), "a slice is missing"),
])
def test_cli_refusals_are_one_line_and_write_nothing(tmp_path, cli, kwargs, tag):
    write_series(tmp_path / "pet", **kwargs)
    done = cli("suv", tmp_path / "pet", "--out", tmp_path / "SUV.nrrd")
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and tag in lines[0], done.stderr
    assert "Traceback" not in done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pet"]


def test_cli_bed_gap_resampled_with_warning(tmp_path, cli):
    along = np.array([3.27 * k - (0.08 if k >= 6 else 0.0) for k in range(12)])
    written = write_series(tmp_path / "pet", along=along, slice_spacing=3.27)
    done = cli("suv", tmp_path / "pet", "--out", tmp_path / "SUV.nrrd")
    assert done.returncode == 0, done.stderr
    assert any(line.startswith("warning:") and "irregular slice spacing" in line for line in done.stderr.splitlines())
    spacing = (3.27 * 11 - 0.08) / 11
    image = sitk.ReadImage(str(tmp_path / "SUV.nrrd"))
    assert image.GetSpacing()[2] == pytest.approx(spacing)
    expected = _interpolated(written.values * SUVBW, along, spacing * np.arange(12))
    assert np.allclose(sitk.GetArrayFromImage(image), expected, rtol=1e-5)
    assert "resampled" in json.loads((tmp_path / "SUV.json").read_text())["geometry"]


# ----------------------------------------------------------------- a DICOM case whose SUV is implausible

def _dicom_case(tmp_path: Path, demo_case: Path, **kwargs):
    from psmadose.segmentation import SegmentToWrite, write_segmentation

    case = tmp_path / "case"
    case.mkdir()
    shutil.copy(demo_case / "clinical.json", case / "clinical.json")
    weight = json.loads((case / "clinical.json").read_text())["weight_kg"]
    tags = {"PatientWeight": weight}
    tags.update(kwargs.pop("tags", {}))
    written = write_series(case / "pet", n_slices=12, rows=12, columns=12, pixel_spacing=(4.0, 4.0), tags=tags,
                           **kwargs)
    reference = sitk.Image(12, 12, 12, sitk.sitkFloat32)
    reference.SetSpacing((4.0, 4.0, 4.0))
    reference.SetOrigin((-10.0, 20.0, -100.0))
    mask = np.zeros((12, 12, 12), dtype=bool)
    mask[3:6, 3:6, 3:6] = True
    write_segmentation(case / "segmentation.seg.nrrd", reference, [SegmentToWrite("kidney_left", mask, (1, 0, 0))])
    return case, written


def test_predict_on_dicom_case_names_the_wrong_tag(tmp_path, demo_case, cli):
    # Pixels in kBq/mL labelled BQML (RescaleSlope 1000x too small): SUVs 1000x too low. The message names Units /
    # RescaleSlope, not "looks like Bq/mL".
    case, _ = _dicom_case(tmp_path, demo_case)
    for path in (case / "pet").iterdir():
        ds = pydicom.dcmread(path)
        ds.RescaleSlope = f"{float(ds.RescaleSlope) / 2000:.10g}"
        ds.save_as(path)
    done = cli("predict", case, "--out", tmp_path / "out")
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), done.stderr
    assert "RescaleSlope" in lines[0] and "Units (0054,1001)" in lines[0] and "looks like Bq/mL" not in lines[0]
    assert not (tmp_path / "out").exists()


def test_case_with_weight_in_grams_is_read_with_a_warning(tmp_path, demo_case):
    from psmadose.case import read_case

    weight = json.loads((demo_case / "clinical.json").read_text())["weight_kg"]
    case, written = _dicom_case(tmp_path, demo_case, tags={"PatientWeight": weight * 1000})
    loaded = read_case(case)  # not refused as "looks like Bq/mL": the grams are recognised
    # SUVbw with the weight in kg (QIBA START, 300 MBq at 08:00, scan 10:00), not 1000x that.
    assert np.allclose(loaded.pet_array, written.values * 1000 * weight / DECAYED_2H, rtol=1e-6)
    assert not any("differ by more than 5%" in w for w in loaded.warnings)  # the converted weight agrees
    assert any("PatientWeight" in w and "grams" in w for w in loaded.warnings)  # reported with the case
