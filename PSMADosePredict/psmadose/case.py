"""The case directory: PET (SUV), optional CT, segmentation, clinical.json and optional doses.csv.

A ``Case`` holds every segment as a boolean mask on the PET grid. A segmentation drawn on another grid
(the CT, say) is resampled onto the PET grid with nearest neighbour.
"""

from __future__ import annotations

import csv
import hashlib
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from .clinical import Clinical, read_clinical, write_clinical
from .errors import InputError
from .files import read_text_utf8
from .images import (
    check_ct_hu,
    check_pet_suv,
    find_image,
    image_from_array,
    overlaps,
    read_image,
    resample_to,
    same_grid,
    voxel_volume_ml,
    write_image,
)
from .outputs import csv_cell
from .segmentation import (
    STRUCTURE_COLORS,
    SegmentToWrite,
    read_segmentation,
    write_segmentation,
)
from .structures import StructureType, resolve_structure_type

log = logging.getLogger(__name__)

SEGMENTATION_FILE = "segmentation.seg.nrrd"
LABELS_FILE = "labels.nii.gz"


@dataclass
class Segment:
    name: str
    structure_type: StructureType
    mask: np.ndarray  # bool (k, j, i) on the PET grid
    color: tuple[float, float, float]

    @property
    def n_voxels(self) -> int:
        return int(np.count_nonzero(self.mask))


@dataclass
class Case:
    case_id: str
    pet: sitk.Image
    pet_array: np.ndarray  # float32 SUV (k, j, i)
    segments: list[Segment]
    clinical: Clinical
    ct: sitk.Image | None = None
    reference_doses: dict[str, float] | None = None
    warnings: list[str] = field(default_factory=list)
    input_files: dict[str, Path] = field(default_factory=dict)

    @property
    def voxel_volume_ml(self) -> float:
        return voxel_volume_ml(self.pet)

    def segment(self, name: str) -> Segment:
        for segment in self.segments:
            if segment.name == name:
                return segment
        raise KeyError(name)

    def ct_on_pet_grid(self) -> np.ndarray | None:
        if self.ct is None:
            return None
        ct = self.ct if same_grid(self.ct, self.pet) else resample_to(self.ct, self.pet, nearest=False,
                                                                          default=-1000.0)
        return sitk.GetArrayFromImage(ct).astype(np.float32, copy=False)


def sha256_file(path: Path) -> str:
    """sha256 of a file; of a folder (a DICOM series), over its files' relative names and contents in order."""
    digest = hashlib.sha256()
    path = Path(path)
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        if path.is_dir():
            digest.update(str(file.relative_to(path)).encode("utf-8") + b"\0")
        with open(file, "rb") as handle:
            for block in iter(lambda h=handle: h.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


# Mass balance: the SUVbw-weighted volume of the whole PET field of view is the fraction of the (decay-corrected)
# injected activity inside it, times the patient's mass. It cannot exceed 1 (0.3-0.8 on our virtual patients,
# whose field of view is the torso); beyond the margin below the PET is not SUVbw for this patient's weight.
MAX_ACTIVITY_FRACTION_IN_VIEW = 1.3


def check_mass_balance(pet: sitk.Image, pet_array: np.ndarray, weight_kg: float, pet_path: Path) -> None:
    """Refuse a PET holding more activity than was injected (by SUVbw's definition): kBq/mL, Bq/mL, or a SUV
    computed with another weight or activity."""
    fraction = float(pet_array.sum(dtype=np.float64)) * voxel_volume_ml(pet) / (weight_kg * 1000.0)
    if fraction > MAX_ACTIVITY_FRACTION_IN_VIEW:
        raise InputError(f"{pet_path}: the PET holds {fraction:.2g} x the injected activity (sum of SUV x volume / "
                         f"body mass, with weight_kg {weight_kg:g}); SUVbw cannot exceed 1 (mass balance): the PET "
                         "is not in SUVbw for this patient (kBq/mL? another weight or activity?) — convert it with "
                         "'psmadose suv' or fix the scale")


def _find_segmentation(directory: Path) -> Path | None:
    for name in (SEGMENTATION_FILE, LABELS_FILE, "labels.nii", "labels.nrrd"):
        if (directory / name).is_file():
            return directory / name
    return None


def read_case(directory: Path, *, require_doses: bool = False,
              structure_types: dict[str, str] | None = None) -> Case:
    """Read and validate a case directory. ``structure_types`` overrides the types guessed from names."""
    directory = Path(directory)
    if not directory.is_dir():
        raise InputError(f"{directory}: case directory not found")
    warnings: list[str] = []
    inputs: dict[str, Path] = {}

    pet_path = find_image(directory, "pet")
    dicom_weight_kg = None
    pet_frame = ct_frame = None
    if pet_path is None:
        if not (directory / "pet").is_dir():
            raise InputError(f"{directory}: no PET found; put the PET in SUV as pet.nrrd or pet.nii.gz, or the "
                             "DICOM PET series in pet/")
        from .dicom.series import read_pet_suv

        pet_path = directory / "pet"
        suv = read_pet_suv(pet_path, "bw", strict_range=True, quiet=True)  # implausible SUV: names the wrong tag
        warnings += [f"{pet_path}: {message}" for message in suv.record.get("warnings", [])]  # units guessed etc.
        pet, dicom_weight_kg, pet_frame = suv.image, suv.record.get("patient_weight_kg"), suv.frame_of_reference_uid
    else:
        pet = read_image(pet_path, "PET")
    pet_array = check_pet_suv(pet, pet_path)
    pet = sitk.Cast(pet, sitk.sitkFloat32)
    inputs["pet"] = pet_path

    ct = None
    ct_path = find_image(directory, "ct")
    if ct_path is None and (directory / "ct").is_dir():
        from .dicom.series import read_ct_hu

        ct_path = directory / "ct"
        ct, ct_frame = read_ct_hu(ct_path)
    elif ct_path is not None:
        ct = read_image(ct_path, "CT")
    if ct is not None:
        from .dicom.series import check_same_frame

        frame_warning = check_same_frame(pet_frame, ct_frame, str(directory))
        if frame_warning:
            warnings.append(frame_warning)
        check_ct_hu(ct, pet, str(ct_path))
        inputs["ct"] = ct_path

    seg_path = _find_segmentation(directory)
    if seg_path is None:
        raise InputError(f"{directory}: no segmentation found; add {SEGMENTATION_FILE} "
                         f"(or {LABELS_FILE} + labels.json)")
    inputs["segmentation"] = seg_path
    segments, segment_names = _segments_on_pet_grid(seg_path, pet, structure_types or {}, warnings)

    clinical, clinical_warnings = read_clinical(directory / "clinical.json")
    warnings += clinical_warnings
    check_mass_balance(pet, pet_array, dicom_weight_kg or clinical.weight_kg, pet_path)
    if dicom_weight_kg is not None and abs(dicom_weight_kg - clinical.weight_kg) > 0.05 * clinical.weight_kg:
        warnings.append(f"{directory}: clinical.json weight_kg {clinical.weight_kg:g} and the PET's DICOM "
                        f"PatientWeight {dicom_weight_kg:g} kg differ by more than 5%; the SUV uses the DICOM weight "
                        "— check which is right")
    inputs["clinical"] = directory / "clinical.json"

    doses = None
    doses_path = directory / "doses.csv"
    if doses_path.is_file():
        doses = read_doses(doses_path, segment_names)
        inputs["doses"] = doses_path
    elif require_doses:
        raise InputError(f"{directory}: doses.csv with reference doses is needed for training/evaluation; "
                         "add it (columns segment,reference_gy_per_gbq) or leave this case out")
    for message in warnings:
        log.warning(message)
    return Case(case_id=directory.name, pet=pet, pet_array=pet_array, segments=segments, clinical=clinical,
                ct=ct, reference_doses=doses, warnings=warnings, input_files=inputs)


def check_segment_list(names: list[str], source, overrides: dict[str, str]) -> None:
    """The checks every segmentation gets, from a file or from Slicer: some segments, valid unique names, and
    type overrides only for segments that exist."""
    from .segmentation import check_segment_name

    if not names:
        raise InputError(f"{source}: the segmentation holds no segments; draw or import lesion and organ segments")
    for name in names:
        check_segment_name(name, source)
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise InputError(f"{source}: duplicate segment name(s) {duplicates}; give every segment a unique name")
    unknown = sorted(set(overrides) - set(names))
    if unknown:
        raise InputError(f"structure type given for segment(s) {unknown} that are not in {source}")


def skipped_segment_warning(name: str) -> str:
    return (f"segment {name!r}: structure type not recognised from its name, skipped (name it kidney*, parotid*, "
            "submandibular*, lacrimal*, lesion*/tumour*/met*/node*, liver*, spleen*, or set its type)")


def no_typed_segments_error(source, names: list[str]) -> InputError:
    """Raised before one 'skipped' warning per segment is logged: a failing command prints one line."""
    return InputError(f"{source}: no segment has a recognised structure type ({', '.join(names[:4])}"
                      f"{', ...' if len(names) > 4 else ''}); name segments kidney*, parotid*, submandibular*, "
                      "lacrimal*, lesion*/tumour*/met*/node* or set their types")


def _segments_on_pet_grid(seg_path: Path, pet: sitk.Image, overrides: dict[str, str],
                          warnings: list[str]) -> tuple[list[Segment], list[str]]:
    geometry, raw_segments = read_segmentation(seg_path)
    names = [s.name for s in raw_segments]
    check_segment_list(names, seg_path, overrides)
    resample = not same_grid(geometry, pet)
    if resample and not overlaps(geometry, pet):
        raise InputError(f"{seg_path}: the segmentation does not overlap the PET in space; it was drawn on "
                         "another study or its geometry is wrong")
    segments = []
    for raw in raw_segments:
        structure_type = resolve_structure_type(raw.name, raw.tags, overrides)
        if structure_type is None:
            warnings.append(skipped_segment_warning(raw.name))
            continue
        if not raw.mask.any():
            raise InputError(f"{seg_path}: segment {raw.name!r} is empty; delete it or draw it")
        mask = raw.mask
        if resample:
            mask_image = image_from_array(raw.mask.astype(np.uint8), reference=geometry)
            mask = sitk.GetArrayFromImage(resample_to(mask_image, pet, nearest=True)).astype(bool)
            if not mask.any():
                raise InputError(f"{seg_path}: segment {raw.name!r} lies outside the PET field of view (or is "
                                 "smaller than a PET voxel); check its position or remove it")
        color = raw.color or STRUCTURE_COLORS[structure_type.value]
        segments.append(Segment(raw.name, structure_type, mask, color))
    if not segments:
        raise no_typed_segments_error(seg_path, names)
    return segments, names


def read_doses(path: Path, segment_names: list[str] | None = None) -> dict[str, float]:
    """Reference doses (segment,reference_gy_per_gbq): strict, because a silently dropped or doubled row trains
    a model on the wrong dose. ``segment_names``: the case's segments, which every row must name."""
    from .outputs import csv_text

    path = Path(path)
    text = read_text_utf8(path, "reference-dose file")
    reader = csv.DictReader(text.splitlines())
    fields = [f.strip() for f in (reader.fieldnames or [])]
    if not {"segment", "reference_gy_per_gbq"} <= set(fields):
        shown = ", ".join(repr(f) for f in fields[:6]) or "none (empty file)"
        raise InputError(f"{path}: expected columns segment,reference_gy_per_gbq; the file has {shown}")
    reader.fieldnames = fields
    doses: dict[str, float] = {}
    for line, row in enumerate(reader, start=2):
        name = csv_text((row.get("segment") or "").strip())
        text_value = (row.get("reference_gy_per_gbq") or "").strip()
        if not name:
            raise InputError(f"{path}: row {line} has no segment name; fill it in or delete the row")
        try:
            value = float(text_value)
        except ValueError:
            raise InputError(f"{path}: row {line}, segment {name!r} has a non-numeric dose {text_value!r}") from None
        if not math.isfinite(value) or value <= 0 or value > 1000:
            raise InputError(f"{path}: row {line}, segment {name!r}: dose {value:g} Gy/GBq is not plausible "
                             "(expected > 0 and <= 1000)")
        if name in doses:
            raise InputError(f"{path}: row {line}: segment {name!r} is listed twice; keep one row per segment")
        doses[name] = value
    if not doses:
        raise InputError(f"{path}: no reference doses (header only); add rows segment,reference_gy_per_gbq or "
                         "remove the file")
    if segment_names is not None:
        unknown = [name for name in doses if name not in segment_names]
        if unknown:
            listed = ", ".join(segment_names[:6]) + (", ..." if len(segment_names) > 6 else "")
            raise InputError(f"{path}: reference dose(s) for {unknown[:4]} that match no segment of the "
                             f"segmentation ({listed}); fix the names (they must match exactly)")
    return doses


def write_doses(path: Path, doses: dict[str, float]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["segment", "reference_gy_per_gbq"])
        for name, value in doses.items():
            writer.writerow([csv_cell(name), f"{value:.6g}"])


def write_case(directory: Path, *, pet: sitk.Image, segments: list[SegmentToWrite], clinical: Clinical,
               ct: sitk.Image | None = None, doses: dict[str, float] | None = None,
               extra_images: dict[str, sitk.Image] | None = None) -> None:
    """Write a case directory (the directory must exist and be empty or new)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    write_image(pet, directory / "pet.nrrd")
    if ct is not None:
        write_image(ct, directory / "ct.nrrd")
    write_segmentation(directory / SEGMENTATION_FILE, pet, segments)
    write_clinical(directory / "clinical.json", clinical)
    if doses is not None:
        write_doses(directory / "doses.csv", doses)
    for name, image in (extra_images or {}).items():
        write_image(image, directory / f"{name}.nrrd")


def default_color(structure_type: StructureType | str) -> tuple[float, float, float]:
    key = structure_type.value if isinstance(structure_type, StructureType) else structure_type
    return STRUCTURE_COLORS[key]
