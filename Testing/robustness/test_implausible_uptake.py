"""Issue 11, bad input: implausible uptake for a structure type, or a whole PET scaled as by wrong units, is
flagged with the structure and the likely cause; nothing is predicted silently from it (real CLI process)."""

from __future__ import annotations

import csv
import shutil

import numpy as np
import SimpleITK as sitk
from psmadose.case import read_case


def _rows(out):
    with open(out / "doses.csv", encoding="utf-8") as handle:
        return {r["segment"]: r for r in csv.DictReader(handle)}


def _rewrite_pet(case_dir, change):
    path = case_dir / "pet.nrrd"
    image = sitk.ReadImage(str(path))
    array = change(sitk.GetArrayFromImage(image))
    out = sitk.GetImageFromArray(array.astype(np.float32))
    out.CopyInformation(image)
    sitk.WriteImage(out, str(path), True)


def test_a_kidney_at_suv_2_is_flagged_with_what_to_check(cli, demo_case, tmp_path):
    case = tmp_path / "case"
    shutil.copytree(demo_case, case)
    kidney = read_case(case).segment("kidney_left").mask
    # The left kidney at a tenth of its uptake (SUV ~2, a published 18F-DCFPyL kidney is ~20), halo included.
    from scipy import ndimage

    region = ndimage.binary_dilation(kidney, iterations=3)
    _rewrite_pet(case, lambda a: np.where(region, a * 0.1, a))
    result = cli("predict", case, "--out", tmp_path / "out")
    assert result.returncode == 0, result.stderr
    rows = _rows(tmp_path / "out")
    assert rows["kidney_left"]["in_domain"] == "false"
    assert "implausible uptake for a kidney" in rows["kidney_left"]["warnings"]
    assert "SUVbw" in rows["kidney_left"]["warnings"]
    assert rows["kidney_right"]["in_domain"] == "true"


def test_a_pet_in_kbq_per_ml_flags_every_segment(cli, demo_case, tmp_path):
    # kBq/mL instead of SUV: x A/W = 3 (e.g. 250 MBq / 82 kg); every organ scaled alike.
    case = tmp_path / "case"
    shutil.copytree(demo_case, case)
    _rewrite_pet(case, lambda a: a * 3.0)
    result = cli("predict", case, "--out", tmp_path / "out")
    assert result.returncode == 0, result.stderr
    rows = _rows(tmp_path / "out")
    assert all(r["in_domain"] == "false" for r in rows.values())
    assert all("may not be in SUVbw (kBq/mL or Bq/mL?)" in r["warnings"] for r in rows.values())
