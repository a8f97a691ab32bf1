"""Image I/O and geometry through SimpleITK (LPS, numpy arrays are (k, j, i))."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk

from .errors import InputError

IMAGE_SUFFIXES = (".nrrd", ".nii.gz", ".nii", ".nhdr", ".mha", ".mhd")


def find_image(directory: Path, stem: str) -> Path | None:
    for suffix in IMAGE_SUFFIXES:
        candidate = Path(directory) / f"{stem}{suffix}"
        if candidate.is_file():
            return candidate
    return None


# Plausible voxel spacing (mm) of clinical body images; outside it the header is wrong (spacing in cm, in m).
SPACING_RANGE_MM = {"PET": (0.8, 15.0), "CT": (0.2, 15.0), "label": (0.2, 15.0)}
MAX_VOXELS = 400_000_000  # ~1.6 GB as float32: far above a whole-body CT at 1 mm; beyond it, a wrong header


def check_header(reader: sitk.ImageFileReader, path: Path, what: str) -> None:
    """Dimensions, voxel count and spacing from the header alone, before any voxel is read."""
    size = reader.GetSize()
    if len(size) != 3 or reader.GetNumberOfComponents() != 1:
        raise InputError(f"{path}: the {what} must be a 3D scalar image, got {len(size)}D with "
                         f"{reader.GetNumberOfComponents()} component(s)")
    voxels = int(np.prod(size, dtype=np.int64))
    if voxels == 0 or voxels > MAX_VOXELS:
        raise InputError(f"{path}: the {what} has {voxels:,} voxels ({' x '.join(map(str, size))}); expected 1 to "
                         f"{MAX_VOXELS:,}: the header is wrong or this is not a body image")
    low, high = SPACING_RANGE_MM.get(what, (0.05, 50.0))
    spacing = reader.GetSpacing()
    if not all(np.isfinite(spacing)) or min(spacing) < low or max(spacing) > high:
        shown = " x ".join(f"{s:g}" for s in spacing)
        raise InputError(f"{path}: {what} voxel spacing {shown} mm is outside {low:g}-{high:g} mm for a body "
                         "image; is the spacing written in cm or m? fix the header (spacing in mm)")


def read_image(path: Path, what: str) -> sitk.Image:
    """An image file, its header checked first (``check_header``) so a wrong header costs no memory."""
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[-1] if str(exc).strip() else "unreadable"
        raise InputError(f"{path}: cannot read the {what} image ({first}); write it as NRRD or NIfTI") from None
    check_header(reader, path, what)
    try:
        image = reader.Execute()
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[-1] if str(exc).strip() else "unreadable"
        raise InputError(f"{path}: cannot read the {what} image ({first}); write it as NRRD or NIfTI") from None
    except MemoryError:
        raise InputError(f"{path}: the {what} image does not fit in memory; is the header right?") from None
    return image


def write_image(image: sitk.Image, path: Path, compress: bool = True, level: int = -1) -> None:
    """Write an image (``level``: gzip level, -1 the default); a full disk becomes an OSError (ENOSPC) naming the
    file, not an ITK stack message."""
    try:
        sitk.WriteImage(image, str(path), useCompression=compress, compressionLevel=level)
    except RuntimeError:
        raise_if_disk_full(path, image.GetNumberOfPixels() * image.GetSizeOfPixelComponent())
        raise


def raise_if_disk_full(path: Path, needed_bytes: int) -> None:
    """After a failed write: if the file system has less room than the data needed, say so as ENOSPC."""
    import errno

    from .errors import free_mb

    free = free_mb(path)
    if free is not None and free * 1e6 < needed_bytes + 1e6:
        raise OSError(errno.ENOSPC, "No space left on device", str(path)) from None


def image_from_array(array_kji: np.ndarray, reference: sitk.Image | None = None, *,
                     spacing=None, origin=None, direction=None) -> sitk.Image:
    image = sitk.GetImageFromArray(array_kji)
    if reference is not None:
        image.CopyInformation(reference)
    else:
        if spacing is not None:
            image.SetSpacing([float(s) for s in spacing])
        if origin is not None:
            image.SetOrigin([float(o) for o in origin])
        if direction is not None:
            image.SetDirection([float(d) for d in np.asarray(direction).ravel()])
    return image


def ijk_to_lps(image: sitk.Image) -> np.ndarray:
    """4x4 matrix from voxel index (i, j, k) to LPS millimetres."""
    direction = np.array(image.GetDirection()).reshape(3, 3)
    matrix = np.eye(4)
    matrix[:3, :3] = direction @ np.diag(image.GetSpacing())
    matrix[:3, 3] = image.GetOrigin()
    return matrix


def geometry_from_ijk_to_lps(matrix: np.ndarray) -> tuple[tuple, tuple, tuple]:
    """(spacing, origin, direction) of a 4x4 ijk-to-LPS matrix."""
    matrix = np.asarray(matrix, dtype=float)
    columns = matrix[:3, :3]
    spacing = np.linalg.norm(columns, axis=0)
    if np.any(spacing <= 0):
        raise InputError("image geometry has a zero voxel spacing; the file header is corrupt")
    direction = columns / spacing
    return tuple(spacing), tuple(matrix[:3, 3]), tuple(direction.ravel())


def same_grid(a: sitk.Image, b: sitk.Image, tolerance_mm: float = 1e-3) -> bool:
    if a.GetSize() != b.GetSize():
        return False
    return bool(np.allclose(ijk_to_lps(a), ijk_to_lps(b), atol=tolerance_mm))


def physical_bounds(image: sitk.Image) -> tuple[np.ndarray, np.ndarray]:
    """Axis-aligned LPS bounding box of the image's voxel centres, padded by half a voxel."""
    size = np.array(image.GetSize())
    corners = np.array([[i, j, k] for i in (-0.5, size[0] - 0.5) for j in (-0.5, size[1] - 0.5)
                        for k in (-0.5, size[2] - 0.5)])
    matrix = ijk_to_lps(image)
    points = corners @ matrix[:3, :3].T + matrix[:3, 3]
    return points.min(axis=0), points.max(axis=0)


def overlaps(a: sitk.Image, b: sitk.Image) -> bool:
    lo_a, hi_a = physical_bounds(a)
    lo_b, hi_b = physical_bounds(b)
    return bool(np.all(lo_a < hi_b) and np.all(lo_b < hi_a))


def resample_to(image: sitk.Image, reference: sitk.Image, *, nearest: bool, default: float = 0.0) -> sitk.Image:
    interpolator = sitk.sitkNearestNeighbor if nearest else sitk.sitkLinear
    return sitk.Resample(image, reference, sitk.Transform(), interpolator, default, image.GetPixelID())


def voxel_volume_ml(image: sitk.Image) -> float:
    return float(np.prod(image.GetSpacing())) / 1000.0


def check_pet_suv(pet: sitk.Image, path: Path) -> np.ndarray:
    """PET voxels as float32 (k, j, i), checked to look like SUV (g/mL)."""
    array = sitk.GetArrayFromImage(pet).astype(np.float32, copy=False)
    finite = np.isfinite(array)
    if not finite.all():
        raise InputError(f"{path}: PET has {int((~finite).sum())} NaN/infinite voxels; "
                         "fill them (e.g. with 0) or re-export the PET")
    low = float(array.min())
    if low < 0:
        raise InputError(f"{path}: PET has negative values (min {low:.3g}); expected SUV >= 0 — "
                         "clip reconstruction undershoot to 0 or re-export the PET in SUV")
    high = float(array.max())
    if high > 1000:
        raise InputError(f"{path}: PET maximum {high:.4g} is not a plausible SUV (> 1000); "
                         "it looks like Bq/mL — convert to SUVbw first (psmadose suv)")
    if high < 0.5:
        raise InputError(f"{path}: PET maximum {high:.3g} is too low for SUV (g/mL); "
                         "check the units or the scale factor of the image")
    return array


def mask_bounds(mask: np.ndarray) -> tuple[tuple[int, int], ...] | None:
    """Inclusive (first, last) index of the mask's voxels along each axis, or None for an empty mask.

    Three axis projections instead of np.nonzero: on a whole-body grid this is ~10x faster.
    """
    bounds = []
    for axis in range(mask.ndim):
        other = tuple(a for a in range(mask.ndim) if a != axis)
        hits = np.flatnonzero(mask.any(axis=other))
        if hits.size == 0:
            return None
        bounds.append((int(hits[0]), int(hits[-1])))
    return tuple(bounds)


def padded_bounds(mask: np.ndarray, pad) -> tuple[slice, ...]:
    """(k, j, i) slices of the mask's bounding box grown by ``pad`` voxels (one int, or one per axis), clipped
    to the image."""
    pads = [pad] * mask.ndim if isinstance(pad, int) else list(pad)
    return tuple(slice(max(lo - p, 0), min(hi + p + 1, n))
                 for (lo, hi), p, n in zip(mask_bounds(mask), pads, mask.shape))


def check_ct_hu(ct: sitk.Image, pet: sitk.Image, source: str) -> None:
    """A CT must overlap the PET, be finite and be in HU (not raw stored values)."""
    if not overlaps(ct, pet):
        raise InputError(f"{source}: CT does not overlap the PET in space; check that both come from the same study "
                         "(origins and directions in the headers)")
    values = sitk.GetArrayViewFromImage(ct)
    if not np.isfinite(values).all():
        raise InputError(f"{source}: CT has NaN/infinite voxels; re-export it")
    low, high = float(values.min()), float(values.max())
    if low >= 0 and high > 2000:
        raise InputError(f"{source}: CT values {low:g}..{high:g} look like raw stored values, not HU; "
                         "apply RescaleSlope/RescaleIntercept (HU = value * slope + intercept)")
