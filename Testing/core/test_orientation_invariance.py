"""The same patient stored with a flipped left-right axis (a DICOM-legal choice some scanners make) must give the
same doses and the same report figure (issue 17: the MIP drew R/L on the wrong side because the PET's direction
never reached it). Real CLI processes on a virtual patient, its PET, CT and segmentation rewritten flipped."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from matplotlib.image import imread
from psmadose.segmentation import SegmentToWrite, read_segmentation, write_segmentation


def _flip_i(image: sitk.Image) -> sitk.Image:
    """Same voxels in space, stored with the i axis reversed (direction column i negated)."""
    array = sitk.GetArrayFromImage(image)[:, :, ::-1]
    flipped = sitk.GetImageFromArray(np.ascontiguousarray(array))
    flipped.SetSpacing(image.GetSpacing())
    flipped.SetOrigin(image.TransformIndexToPhysicalPoint((image.GetSize()[0] - 1, 0, 0)))
    direction = np.asarray(image.GetDirection()).reshape(3, 3)
    direction[:, 0] *= -1
    flipped.SetDirection(direction.ravel().tolist())
    return flipped


def _flipped_case(source: Path, target: Path) -> Path:
    shutil.copytree(source, target)
    for name in ("pet.nrrd", "ct.nrrd"):
        sitk.WriteImage(_flip_i(sitk.ReadImage(str(source / name))), str(target / name), useCompression=True)
    geometry, raws = read_segmentation(source / "segmentation.seg.nrrd")
    pet = sitk.ReadImage(str(target / "pet.nrrd"))
    assert geometry.GetSize() == pet.GetSize()
    segments = [SegmentToWrite(r.name, np.ascontiguousarray(r.mask[:, :, ::-1]), r.color or (1.0, 0.0, 0.0))
                for r in raws]
    write_segmentation(target / "segmentation.seg.nrrd", pet, segments)
    return target


def _doses(path: Path) -> dict[str, float]:
    with open(path, newline="", encoding="utf-8") as handle:
        return {row["segment"]: float(row["predicted_gy_per_gbq"]) for row in csv.DictReader(handle)}


def test_flipped_storage_changes_neither_doses_nor_the_mip(demo_case, tmp_path, cli):
    flipped = _flipped_case(demo_case, tmp_path / "flipped")
    direction = np.asarray(sitk.ReadImage(str(flipped / "pet.nrrd")).GetDirection()).reshape(3, 3)
    assert direction[0, 0] == -1  # the copy really is stored flipped
    for case, out in ((demo_case, tmp_path / "a"), (flipped, tmp_path / "b")):
        result = cli("predict", case, "--out", out)
        assert result.returncode == 0, result.stderr
    a, b = _doses(tmp_path / "a" / "doses.csv"), _doses(tmp_path / "b" / "doses.csv")
    assert a.keys() == b.keys()
    for name in a:
        assert abs(a[name] - b[name]) <= 1e-4 * a[name], (name, a[name], b[name])
    mip_a, mip_b = (imread(tmp_path / o / "figure_mip.png") for o in ("a", "b"))
    assert mip_a.shape == mip_b.shape
    assert np.mean(np.abs(mip_a - mip_b)) < 1e-3  # same picture: the patient's right on the left of the image
    # and the check can fail: the un-oriented (stored) order would give the mirror image
    assert np.mean(np.abs(mip_a - mip_a[:, ::-1])) > 1e-2
