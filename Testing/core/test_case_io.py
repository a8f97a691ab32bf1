"""Case directories (psmadose.case): write/read round trip, resampling of segmentations drawn on another grid,
labels.nii.gz + labels.json, and refusal of bad inputs with a message naming the problem.

All files are real: images through SimpleITK, segmentations through slicerio (.seg.nrrd). Expected values are
computed independently in this file (voxel-centre geometry written out here, not taken from psmadose).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from psmadose.case import read_case, write_case
from psmadose.clinical import validate_clinical, write_clinical
from psmadose.errors import InputError
from psmadose.segmentation import STRUCTURE_COLORS, SegmentToWrite, write_segmentation
from psmadose.structures import StructureType

# Small synthetic PET: 30 x 24 x 20 voxels (i, j, k) of 4 mm, origin away from 0 so index/mm mix-ups show.
PET_SIZE = (30, 24, 20)
PET_SPACING = (4.0, 4.0, 4.0)
PET_ORIGIN = (-57.0, 31.0, 112.0)

# DESIGN.md clinical.json example.
CLINICAL, _ = validate_clinical({
    "age_years": 71, "weight_kg": 82, "height_cm": 176, "egfr_ml_min_1_73m2": 75, "psa_ng_ml": 120,
    "alp_u_l": 140, "ldh_u_l": 250, "hemoglobin_g_dl": 12.1, "prior_taxane_lines": 1, "prior_arpi": True,
    "pet_tracer": "18F-DCFPyL", "pet_uptake_time_min": 120, "planned_activity_gbq": 7.4, "planned_cycles": 4})


# ---------------------------------------------------------------------------------------------- helpers

def _image(array_kji: np.ndarray, spacing, origin, direction=None) -> sitk.Image:
    image = sitk.GetImageFromArray(array_kji)
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    if direction is not None:
        image.SetDirection(direction)
    return image


def _pet_array(seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (0.5 + 9.5 * rng.random(PET_SIZE[::-1])).astype(np.float32)  # SUV 0.5..10


def _pet(array: np.ndarray | None = None) -> sitk.Image:
    return _image(_pet_array() if array is None else array, PET_SPACING, PET_ORIGIN)


def _empty(size, spacing, origin, direction=None) -> sitk.Image:
    return _image(np.zeros(size[::-1], dtype=np.uint8), spacing, origin, direction)


def _voxel_centres_lps(image: sitk.Image) -> np.ndarray:
    """(k, j, i, 3) LPS coordinates of every voxel centre: origin + D diag(spacing) (i, j, k)."""
    size = image.GetSize()
    k, j, i = np.meshgrid(*(np.arange(n) for n in size[::-1]), indexing="ij")
    ijk = np.stack([i, j, k], axis=-1).astype(float)
    matrix = np.array(image.GetDirection()).reshape(3, 3) @ np.diag(image.GetSpacing())
    return ijk @ matrix.T + np.array(image.GetOrigin())


def _ball(image: sitk.Image, centre_mm, radius_mm) -> np.ndarray:
    """Voxels of ``image`` whose centres lie within the sphere (analytic definition of a segment)."""
    return np.linalg.norm(_voxel_centres_lps(image) - np.array(centre_mm), axis=-1) <= radius_mm


def _expected_nearest(target: sitk.Image, source: sitk.Image, source_mask: np.ndarray) -> np.ndarray:
    """Nearest-neighbour resampling written out independently of SimpleITK's Resample: for each target voxel
    centre p, the source continuous index is (D diag(s))^-1 (p - o); round it; outside the source -> False."""
    matrix = np.array(source.GetDirection()).reshape(3, 3) @ np.diag(source.GetSpacing())
    continuous = (_voxel_centres_lps(target) - np.array(source.GetOrigin())) @ np.linalg.inv(matrix).T
    # Ties (exactly .5) would make rounding conventions matter; the test grids are chosen to avoid them.
    assert np.min(np.abs(np.mod(continuous, 1.0) - 0.5)) > 0.01
    index = np.floor(continuous + 0.5).astype(int)
    size = np.array(source.GetSize())
    inside = np.all((index >= 0) & (index < size), axis=-1)
    expected = np.zeros(inside.shape, dtype=bool)
    i, j, k = index[inside].T
    expected[inside] = source_mask[k, j, i]
    return expected


def _write_parts(directory: Path, *, pet: sitk.Image | None = None, seg_reference: sitk.Image | None = None,
                 segments: list[SegmentToWrite] | None = None, ct: sitk.Image | None = None) -> Path:
    """Write a case file by file (lets the segmentation live on a grid other than the PET's)."""
    directory.mkdir(parents=True, exist_ok=True)
    pet = _pet() if pet is None else pet
    sitk.WriteImage(pet, str(directory / "pet.nrrd"), useCompression=True)
    if segments is not None:
        write_segmentation(directory / "segmentation.seg.nrrd", seg_reference or pet, segments)
    if ct is not None:
        sitk.WriteImage(ct, str(directory / "ct.nrrd"), useCompression=True)
    write_clinical(directory / "clinical.json", CLINICAL)
    return directory


def _tree_hashes(directory: Path) -> dict[str, str]:
    return {str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(directory.rglob("*")) if p.is_file()}


def _ct_on_pet_grid() -> sitk.Image:
    rng = np.random.default_rng(3)
    hu = rng.normal(40, 15, PET_SIZE[::-1])
    hu[:, :2, :] = -1000  # air
    hu[5:8, 10:14, 10:14] = 600  # bone
    return _image(np.round(hu).astype(np.int16), PET_SPACING, PET_ORIGIN)


def _pet_grid_segments(pet: sitk.Image) -> list[SegmentToWrite]:
    kidney = _ball(pet, np.array(PET_ORIGIN) + (30, 40, 30), 14.0)
    lesion = np.zeros(PET_SIZE[::-1], dtype=bool)
    lesion[3:6, 15:19, 20:25] = True
    blob = _ball(pet, np.array(PET_ORIGIN) + (90, 60, 50), 9.0)
    bladder = np.zeros_like(lesion)
    bladder[14:17, 2:5, 2:5] = True
    return [
        SegmentToWrite("Kidney_Left", kidney, (0.1, 0.2, 0.3)),  # type from the name
        SegmentToWrite("lesion_1", lesion, STRUCTURE_COLORS["tumour"]),
        SegmentToWrite("blob", blob, (0.9, 0.8, 0.123456), "parotid"),  # type only from the tag
        SegmentToWrite("bladder", bladder, (0.5, 0.5, 0.5)),  # not recognised: skipped with a warning
    ]


# ------------------------------------------------------------------------------------------ round trip

def test_write_read_round_trip(tmp_path):
    pet = _pet()
    segments = _pet_grid_segments(pet)
    doses = {"Kidney_Left": 0.45, "lesion_1": 3.25, "blob": 0.6}
    write_case(tmp_path / "case", pet=pet, segments=segments, clinical=CLINICAL, ct=_ct_on_pet_grid(),
               doses=doses)
    case = read_case(tmp_path / "case", require_doses=True)

    np.testing.assert_array_equal(case.pet_array, sitk.GetArrayFromImage(pet))
    assert case.pet.GetSpacing() == PET_SPACING
    assert case.pet.GetOrigin() == PET_ORIGIN
    assert case.case_id == "case"

    # Unrecognised 'bladder' is skipped, with a warning naming it; the others come back in order.
    assert [s.name for s in case.segments] == ["Kidney_Left", "lesion_1", "blob"]
    assert any("'bladder'" in w and "skipped" in w for w in case.warnings)
    written = {s.name: s for s in segments}
    for segment in case.segments:
        assert segment.mask.dtype == bool
        np.testing.assert_array_equal(segment.mask, written[segment.name].mask, err_msg=segment.name)
        np.testing.assert_allclose(segment.color, written[segment.name].color, atol=1e-6)
    assert case.segment("Kidney_Left").structure_type is StructureType.KIDNEY  # from the name
    assert case.segment("lesion_1").structure_type is StructureType.TUMOUR
    assert case.segment("blob").structure_type is StructureType.PAROTID  # from the structure-type tag
    assert case.segment("lesion_1").n_voxels == 3 * 4 * 5
    assert case.voxel_volume_ml == pytest.approx(0.064)  # (4 mm)^3

    assert case.reference_doses == pytest.approx(doses)
    assert case.clinical == CLINICAL
    # CT on the PET grid comes back unchanged (no resampling).
    np.testing.assert_array_equal(case.ct_on_pet_grid(), sitk.GetArrayFromImage(_ct_on_pet_grid()))
    assert set(case.input_files) == {"pet", "ct", "segmentation", "clinical", "doses"}


def test_structure_type_override(tmp_path):
    pet = _pet()
    write_case(tmp_path / "case", pet=pet, segments=_pet_grid_segments(pet), clinical=CLINICAL)
    case = read_case(tmp_path / "case", structure_types={"bladder": "lacrimal", "blob": "Tumor"})
    assert case.segment("bladder").structure_type is StructureType.LACRIMAL
    assert case.segment("blob").structure_type is StructureType.TUMOUR  # override beats the tag
    with pytest.raises(InputError, match="heart"):
        read_case(tmp_path / "case", structure_types={"heart": "kidney"})


# Segmentation geometries other than the PET grid: 2 mm voxels (like a CT-drawn segmentation), origin shifted
# by non-multiples of the spacing; the second one also has flipped L and P axes (an RAS-ordered image).
OTHER_GRIDS = {
    "shifted_2mm": ((64, 52, 44), (2.0, 2.0, 2.0), tuple(np.subtract(PET_ORIGIN, (5.3, 3.7, 6.9))), None),
    "flipped_2mm": ((64, 52, 44), (2.0, 2.0, 2.0), (65.3, 127.7, 105.1), (-1, 0, 0, 0, -1, 0, 0, 0, 1)),
}


@pytest.mark.parametrize("grid", sorted(OTHER_GRIDS))
def test_segmentation_on_another_grid_is_resampled_nearest(tmp_path, grid):
    size, spacing, origin, direction = OTHER_GRIDS[grid]
    reference = _empty(size, spacing, origin, direction)
    pet = _pet()
    centre = np.array(PET_ORIGIN) + (50.3, 41.1, 37.7)
    radius = 14.0
    sphere = _ball(reference, centre, radius)
    lesion = _ball(reference, np.array(PET_ORIGIN) + (96, 20, 60), 6.5)
    _write_parts(tmp_path / "case", pet=pet, seg_reference=reference,
                 segments=[SegmentToWrite("lesion_sphere", sphere, (1, 0, 0)),
                           SegmentToWrite("node_small", lesion, (0, 1, 0))])
    case = read_case(tmp_path / "case")
    for segment, source_mask in zip(case.segments, (sphere, lesion)):
        expected = _expected_nearest(pet, reference, source_mask)
        assert expected.any()
        assert segment.mask.shape == PET_SIZE[::-1]
        np.testing.assert_array_equal(segment.mask, expected, err_msg=f"{grid}: {segment.name}")
    # Sanity against the analytic volume 4/3 pi r^3 = 11.49 mL (nearest neighbour on 4 mm voxels: +-15%).
    assert case.segment("lesion_sphere").n_voxels * 0.064 == pytest.approx(4 / 3 * np.pi * radius**3 / 1000,
                                                                           rel=0.15)


def test_labels_nifti_with_json(tmp_path):
    pet = _pet()
    labels = np.zeros(PET_SIZE[::-1], dtype=np.uint8)
    kidney = _ball(pet, np.array(PET_ORIGIN) + (30, 40, 30), 14.0)
    labels[kidney] = 1
    labels[3:6, 15:19, 20:25] = 2
    labels[14:17, 2:5, 2:5] = 7
    directory = _write_parts(tmp_path / "case", pet=pet)
    sitk.WriteImage(_image(labels, PET_SPACING, PET_ORIGIN), str(directory / "labels.nii.gz"))
    (directory / "labels.json").write_text(json.dumps({"1": "kidney_right", "2": "Lesion_A", "7": "bladder"}))
    case = read_case(directory)
    assert [s.name for s in case.segments] == ["kidney_right", "Lesion_A"]
    np.testing.assert_array_equal(case.segment("kidney_right").mask, labels == 1)
    np.testing.assert_array_equal(case.segment("Lesion_A").mask, labels == 2)
    assert case.segment("kidney_right").structure_type is StructureType.KIDNEY
    assert case.segment("Lesion_A").structure_type is StructureType.TUMOUR
    # No colour in a label map: the structure type's default colour.
    assert case.segment("Lesion_A").color == STRUCTURE_COLORS["tumour"]
    assert any("bladder" in w for w in case.warnings)
    assert case.input_files["segmentation"].name == "labels.nii.gz"


# ------------------------------------------------------------------------------------------ bad inputs

def _valid_case(directory: Path) -> Path:
    pet = _pet()
    kidney = _ball(pet, np.array(PET_ORIGIN) + (30, 40, 30), 14.0)
    lesion = np.zeros(PET_SIZE[::-1], dtype=bool)
    lesion[3:6, 15:19, 20:25] = True
    return _write_parts(directory, pet=pet, ct=_ct_on_pet_grid(),
                        segments=[SegmentToWrite("kidney_left", kidney, (1, 0, 0)),
                                  SegmentToWrite("lesion_1", lesion, (0, 1, 0))])


def _write_pet(directory: Path, array: np.ndarray) -> None:
    sitk.WriteImage(_pet(array.astype(np.float32)), str(directory / "pet.nrrd"), useCompression=True)


def _pet_nan(d):
    array = _pet_array()
    array[4, 5, 6] = np.nan
    _write_pet(d, array)


def _pet_negative(d):
    array = _pet_array()
    array[4, 5, 6] = -0.7
    _write_pet(d, array)


def _pet_bq_ml(d):
    _write_pet(d, _pet_array() * 5000.0)  # max 5e4: activity concentration, not SUV


def _empty_segment(d):
    pet = _pet()
    write_segmentation(d / "segmentation.seg.nrrd", pet, [
        SegmentToWrite("kidney_left", _ball(pet, np.array(PET_ORIGIN) + (30, 40, 30), 14.0), (1, 0, 0)),
        SegmentToWrite("lesion_empty", np.zeros(PET_SIZE[::-1], dtype=bool), (0, 1, 0))])


def _segment_outside_fov(d):
    # A 2 mm grid reaching 60 mm beyond the PET in x; one segment lies entirely in that extra part.
    reference = _empty((90, 52, 44), (2.0, 2.0, 2.0), tuple(np.subtract(PET_ORIGIN, (5.3, 3.7, 6.9))))
    pet_x_max = PET_ORIGIN[0] + (PET_SIZE[0] - 0.5) * PET_SPACING[0]
    outside = _ball(reference, (pet_x_max + 30.0, PET_ORIGIN[1] + 40, PET_ORIGIN[2] + 30), 10.0)
    inside = _ball(reference, np.array(PET_ORIGIN) + (30, 40, 30), 14.0)
    assert outside.any()
    write_segmentation(d / "segmentation.seg.nrrd", reference, [
        SegmentToWrite("kidney_left", inside, (1, 0, 0)), SegmentToWrite("lesion_far", outside, (0, 1, 0))])


def _no_overlap(d):
    reference = _empty((30, 24, 20), (4.0, 4.0, 4.0), tuple(np.add(PET_ORIGIN, (1000.0, 0, 0))))
    mask = np.zeros((20, 24, 30), dtype=bool)
    mask[5:10, 5:10, 5:10] = True
    write_segmentation(d / "segmentation.seg.nrrd", reference, [SegmentToWrite("kidney_left", mask, (1, 0, 0))])


def _duplicate_names(d):
    pet = _pet()
    a = _ball(pet, np.array(PET_ORIGIN) + (30, 40, 30), 10.0)
    b = _ball(pet, np.array(PET_ORIGIN) + (80, 40, 30), 10.0)
    write_segmentation(d / "segmentation.seg.nrrd", pet, [
        SegmentToWrite("lesion_7", a, (1, 0, 0)), SegmentToWrite("lesion_7", b, (0, 1, 0))])


def _labels(d, names: dict | None):
    (d / "segmentation.seg.nrrd").unlink()
    labels = np.zeros(PET_SIZE[::-1], dtype=np.uint8)
    labels[2:5, 2:5, 2:5] = 1
    labels[10:12, 10:12, 10:12] = 3
    sitk.WriteImage(_image(labels, PET_SPACING, PET_ORIGIN), str(d / "labels.nii.gz"))
    if names is not None:
        (d / "labels.json").write_text(json.dumps(names))


def _ct(d, array, origin=PET_ORIGIN):
    sitk.WriteImage(_image(array, PET_SPACING, origin), str(d / "ct.nrrd"), useCompression=True)


BAD_CASES = {
    # name: (how to spoil a valid case, words the message must contain)
    "missing_pet": (lambda d: (d / "pet.nrrd").unlink(), ["no PET found", "pet.nrrd"]),
    "pet_dicom_folder": (lambda d: ((d / "pet.nrrd").unlink(), (d / "pet").mkdir(),
                                    (d / "pet" / "IM0001.dcm").write_bytes(b"x")), ["no DICOM image files", "pet"]),
    "corrupt_pet": (lambda d: (d / "pet.nrrd").write_bytes(b"NRRD0004\ngarbage\x00\x01"),
                    ["pet.nrrd", "cannot read the PET"]),
    "pet_nan": (_pet_nan, ["pet.nrrd", "NaN"]),
    "pet_negative": (_pet_negative, ["pet.nrrd", "negative", "-0.7"]),
    "pet_bq_ml": (_pet_bq_ml, ["pet.nrrd", "Bq/mL", "SUV"]),
    "missing_segmentation": (lambda d: (d / "segmentation.seg.nrrd").unlink(),
                             ["no segmentation", "segmentation.seg.nrrd"]),
    "empty_segment": (_empty_segment, ["'lesion_empty'", "empty"]),
    "segment_outside_pet": (_segment_outside_fov, ["'lesion_far'", "outside the PET field of view"]),
    "segmentation_not_overlapping": (_no_overlap, ["segmentation does not overlap the PET"]),
    "duplicate_names": (_duplicate_names, ["duplicate", "lesion_7"]),
    "labels_without_json": (lambda d: _labels(d, None), ["labels.nii.gz", "labels.json"]),
    "label_without_name": (lambda d: _labels(d, {"1": "kidney_left"}), ["label value(s) [3]", "labels.json"]),
    "corrupt_seg_nrrd": (lambda d: (d / "segmentation.seg.nrrd").write_bytes(bytes(range(256)) * 8),
                         ["segmentation.seg.nrrd", "cannot read the segmentation"]),
    "ct_not_overlapping": (lambda d: _ct(d, sitk.GetArrayFromImage(_ct_on_pet_grid()),
                                         tuple(np.add(PET_ORIGIN, (0, 0, 2000.0)))),
                           ["ct.nrrd", "CT does not overlap the PET"]),
    "ct_raw_values": (lambda d: _ct(d, np.random.default_rng(5).integers(0, 4001, PET_SIZE[::-1]).astype(np.int16)),
                      ["ct.nrrd", "raw stored values", "HU"]),
    "clinical_bad_value": (lambda d: (d / "clinical.json").write_text(
        (d / "clinical.json").read_text().replace('"weight_kg": 82', '"weight_kg": 0')), ["weight_kg"]),
}


def test_valid_base_case_reads(tmp_path):
    # Guards the bad-input tests: each one spoils exactly one thing of this case.
    case = read_case(_valid_case(tmp_path / "case"))
    assert [s.name for s in case.segments] == ["kidney_left", "lesion_1"]
    assert case.warnings == []


@pytest.mark.parametrize("name", sorted(BAD_CASES))
def test_bad_input_raises_input_error_and_modifies_nothing(tmp_path, name):
    spoil, words = BAD_CASES[name]
    directory = _valid_case(tmp_path / "case")
    spoil(directory)
    before = _tree_hashes(directory)
    with pytest.raises(InputError) as info:
        read_case(directory)
    message = str(info.value)
    assert "\n" not in message, message
    for word in words:
        assert word in message, f"{name}: {word!r} not in message {message!r}"
    assert _tree_hashes(directory) == before, "read_case modified or created files in the case directory"


def test_missing_case_directory(tmp_path):
    with pytest.raises(InputError, match="case directory not found"):
        read_case(tmp_path / "nope")
    assert not (tmp_path / "nope").exists()


def test_missing_doses_when_required(tmp_path):
    directory = _valid_case(tmp_path / "case")
    with pytest.raises(InputError, match="doses.csv"):
        read_case(directory, require_doses=True)
