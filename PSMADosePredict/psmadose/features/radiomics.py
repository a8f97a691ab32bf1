"""Radiomics features per segment with pyradiomics (optional dependency ``pyradiomics-bhklab``).

``RadiomicsExtractor`` is a thin façade over pyradiomics' ``RadiomicsFeatureExtractor``, configured by
``psmadose/data/radiomics_params.yaml`` (one pyradiomics parameter set per modality, see the comments there
and docs/RADIOMICS.md). ``extract_case`` returns one row per segment with columns ``segment``,
``shape_<feature>``, ``pet_<class>_<feature>`` and ``ct_<class>_<feature>``.

Why the fast path equals the naive one: with the Original image only and no resampling, pyradiomics crops
image and mask to the mask's bounding box (no padding) before every feature class, including shape. Handing
it a box already cropped to the mask (plus a margin) therefore gives the feature classes the very same
arrays, while skipping what costs time on a whole-body grid: building a full-size label image per segment,
casting it to UInt32, ``numpy.unique`` over it, ``LabelStatisticsImageFilter`` and cropping a full volume —
twice per segment (PET and CT). Settings that break this equivalence (filters, resampling, normalisation by
whole-image statistics) are rejected.

pyradiomics is imported lazily: the rest of psmadose runs without it; ``available()`` tells, and the
extraction raises ``InputError`` saying how to install it.
"""

from __future__ import annotations

import hashlib
import logging
import math
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import SimpleITK as sitk

from ..errors import InputError
from ..images import image_from_array, mask_bounds
from ..parallel import process_pool

log = logging.getLogger(__name__)

DEFAULT_PARAMS_PATH = Path(__file__).resolve().parent.parent / "data" / "radiomics_params.yaml"
MODALITIES = ("pet", "ct")
SHAPE_CLASS = "shape"
# pyradiomics crops to the mask's bounding box itself (padDistance 0 for segment-based Original features)
# and the shape class pads its mask by one voxel, so no margin is needed for equality; one voxel keeps the
# crop valid should pyradiomics ever look one voxel out (e.g. a future default padDistance for Original).
CROP_MARGIN_VOXELS = 1
INSTALL_HINT = ("install it with 'pip install psmadose[radiomics]' (or 'pip install pyradiomics-bhklab'); in "
                "3D Slicer run slicer.util.pip_install('pyradiomics-bhklab') in the Python console, or install "
                "the SlicerRadiomics extension; or run without radiomics (psmadose features --no-radiomics)")
# Settings under which a cropped box does not give the same features as the full volume.
_UNSUPPORTED_SETTINGS = ("resampledPixelSpacing", "normalize", "kernelRadius")


def available() -> bool:
    """True when pyradiomics (``radiomics``) can be imported."""
    try:
        # The submodule, not just the package: a directory named 'radiomics' on sys.path (Testing/radiomics
        # when pytest puts Testing/ there) imports as an empty namespace package.
        from radiomics import featureextractor  # noqa: F401
    except ImportError:
        return False
    return True


def _import_radiomics():
    try:
        import radiomics
        from radiomics import featureextractor
    except ImportError as exc:
        raise InputError(f"radiomics features need pyradiomics, which cannot be imported ({exc}); "
                         f"{INSTALL_HINT}") from None
    _quiet(radiomics)
    return radiomics, featureextractor


def _quiet(radiomics) -> None:
    """pyradiomics logs INFO per class and has its own stderr handler: keep WARNING and up, and let them
    reach the application's handlers only (never the terminal directly)."""
    logger = logging.getLogger("radiomics")
    logger.setLevel(logging.WARNING)
    handler = getattr(radiomics, "handler", None)
    if handler is not None:
        handler.setLevel(logging.CRITICAL + 1)


class RadiomicsExtractor:
    """Per-segment PET/CT radiomics with pyradiomics, configured by a parameter file (default: the shipped one).

    The file's bytes define the features: ``settings_sha256`` identifies them for a model card.
    """

    def __init__(self, params_path: str | Path | None = None):
        self.params_path = Path(params_path) if params_path is not None else DEFAULT_PARAMS_PATH
        if not self.params_path.is_file():
            raise InputError(f"{self.params_path}: radiomics parameter file not found")
        self._bytes = self.params_path.read_bytes()
        self._params: dict[str, dict] | None = None

    # ----- settings ---------------------------------------------------------------------------------------

    @staticmethod
    def available() -> bool:
        return available()

    @property
    def settings_sha256(self) -> str:
        return hashlib.sha256(self._bytes).hexdigest()

    @property
    def params(self) -> dict[str, dict]:
        """The parameter sets by modality ({"pet": {...}, "ct": {...}}), checked for the fast path."""
        if self._params is None:
            self._params = _parse_params(self._bytes, self.params_path)
        return self._params

    def feature_names(self) -> list[str]:
        """Feature columns in output order (without ``segment``), whether or not a case has a CT."""
        _import_radiomics()
        return list(_column_names(self.params))

    # ----- extraction -------------------------------------------------------------------------------------

    def extract_case(self, case, workers: int | None = None, *,
                     ct_on_pet_grid: np.ndarray | None = None) -> pd.DataFrame:
        """One row per segment of ``case``, computed on cropped boxes.

        ``workers`` > 1 runs segments in that many processes, largest first; None or 1 runs serially (the
        usual choice: a batch already runs cases in parallel, and a whole-body case takes ~0.6 s).
        ``ct_on_pet_grid`` is the CT already sampled onto the PET grid (``case.ct_on_pet_grid()``), to share
        it with the other feature families instead of resampling the CT twice.
        """
        _import_radiomics()
        params = self.params
        if workers is not None and workers < 1:
            raise InputError(f"workers must be >= 1, got {workers}")
        ct = _ct_array(case, ct_on_pet_grid)
        tasks = []
        for segment in case.segments:
            tasks.append(_crop_task(case, segment.name, segment.mask, ct))
        order = sorted(range(len(tasks)), key=lambda n: -tasks[n]["n_voxels"])  # largest first
        results: dict[int, dict[str, float]] = {}
        if workers is None or workers <= 1 or len(tasks) <= 1:
            for n in order:
                results[n] = _extract_task(tasks[n], params)
        else:
            with process_pool(min(workers, len(tasks)), initializer=_init_worker, initargs=(params,)) as pool:
                futures = {n: pool.submit(_worker_task, tasks[n]) for n in order}
                results = {n: future.result() for n, future in futures.items()}
        return _frame(params, [(t["name"], results[n]) for n, t in enumerate(tasks)])

    def extract_naive(self, case) -> pd.DataFrame:
        """The same features the way pyradiomics' documentation shows: one full-volume label image per
        segment and modality, handed to ``RadiomicsFeatureExtractor.execute``. For tests and benchmarks."""
        _import_radiomics()
        params = self.params
        images = {"pet": case.pet}
        ct = case.ct_on_pet_grid()
        if ct is not None:
            images["ct"] = image_from_array(ct, reference=case.pet)
        rows = []
        for segment in case.segments:
            label = image_from_array(segment.mask.astype(np.uint8), reference=case.pet)
            rows.append((segment.name, _execute_all(params, images, label, segment.name)))
        return _frame(params, rows)


# ----- parameter file ---------------------------------------------------------------------------------------

def _parse_params(data: bytes, path: Path) -> dict[str, dict]:
    try:
        from ruamel.yaml import YAML  # installed with pyradiomics (through pykwalify)
    except ImportError:
        raise InputError(f"{path}: reading radiomics settings needs pyradiomics; {INSTALL_HINT}") from None
    try:
        loaded = YAML(typ="safe", pure=True).load(data.decode("utf-8"))
    except Exception as exc:  # ruamel raises many types; the file is the user's problem
        raise InputError(f"{path}: not valid YAML ({exc})") from None
    if not isinstance(loaded, dict) or not set(loaded) <= set(MODALITIES) or "pet" not in loaded:
        raise InputError(f"{path}: expected top-level sections 'pet' (and optionally 'ct'), each a pyradiomics "
                         f"parameter set; found {sorted(loaded) if isinstance(loaded, dict) else type(loaded)}")
    params = {}
    for modality in MODALITIES:
        if modality not in loaded:
            continue
        section = _plain(loaded[modality])
        setting = section.get("setting") or {}
        bad = [k for k in _UNSUPPORTED_SETTINGS if setting.get(k)]
        image_types = section.get("imageType") or {"Original": {}}
        if bad or set(image_types) != {"Original"} or image_types["Original"]:
            raise InputError(f"{path}: section {modality!r} uses {bad or list(image_types)}; psmadose extracts "
                             "features on cropped boxes, which equals the full volume only for the Original image "
                             "without resampling or normalisation — remove those settings")
        if section.get("voxelSetting"):
            raise InputError(f"{path}: section {modality!r}: voxel-based extraction is not supported")
        if setting.get("label", 1) != 1:
            raise InputError(f"{path}: section {modality!r}: label must be 1 (psmadose passes binary masks)")
        if "additionalInfo" not in setting:
            setting["additionalInfo"] = False
        section["setting"] = setting
        params[modality] = section
    with_shape = [m for m, s in params.items() if SHAPE_CLASS in (s.get("featureClass") or {})]
    if len(with_shape) > 1:
        raise InputError(f"{path}: enable 'shape' in one section only (it does not depend on the modality)")
    return params


def _plain(value: Any) -> Any:
    """ruamel containers -> dict/list (pykwalify and pickling want plain types)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _column_names(params: dict[str, dict]) -> Iterable[str]:
    import radiomics

    classes = radiomics.getFeatureClasses()
    for modality, section in params.items():
        for class_name, names in (section.get("featureClass") or {}).items():
            if class_name not in classes:
                raise InputError(f"unknown pyradiomics feature class {class_name!r} in the radiomics settings")
            if not names:  # pyradiomics: empty = all non-deprecated features of the class
                names = [n for n, deprecated in classes[class_name].getFeatureNames().items() if not deprecated]
            for name in names:
                yield _column(modality, class_name, name)


def _column(modality: str, class_name: str, feature: str) -> str:
    return f"shape_{feature}" if class_name == SHAPE_CLASS else f"{modality}_{class_name}_{feature}"


# ----- extraction ----------------------------------------------------------------------------------------------

_EXTRACTORS: dict[tuple[str, str], Any] = {}  # one configured pyradiomics extractor per process and settings


def _extractor(params: dict[str, dict], modality: str):
    key = (repr(params[modality]), modality)
    extractor = _EXTRACTORS.get(key)
    if extractor is None:
        _, featureextractor = _import_radiomics()
        try:
            with warnings.catch_warnings():
                # pykwalify loads pyradiomics' schema extension with the deprecated load_module()
                warnings.filterwarnings("ignore", "the load_module", DeprecationWarning)
                extractor = featureextractor.RadiomicsFeatureExtractor(params[modality])
        except Exception as exc:  # pykwalify SchemaError and friends: the settings file is wrong
            raise InputError(f"radiomics settings, section {modality!r}, rejected by pyradiomics: {exc}") from None
        _EXTRACTORS[key] = extractor
    return extractor


def _execute_all(params: dict[str, dict], images: dict[str, sitk.Image], mask: sitk.Image,
                 name: str) -> dict[str, float]:
    values: dict[str, float] = {}
    for modality in params:
        image = images.get(modality)
        if image is None:
            continue  # no CT: its columns stay NaN
        try:
            result = _extractor(params, modality).execute(image, mask)
        except ValueError as exc:  # pyradiomics' ROI checks (e.g. a one-voxel segment)
            log.warning("segment %r: no %s radiomics (%s)", name, modality.upper(), exc)
            continue
        for key, value in result.items():
            image_type, class_name, feature = key.split("_", 2)
            if image_type == "original":
                values[_column(modality, class_name, feature)] = float(value)
    return values


def _ct_array(case, ct_on_pet_grid: np.ndarray | None) -> np.ndarray | None:
    if ct_on_pet_grid is not None:
        if ct_on_pet_grid.shape != case.pet_array.shape:
            raise InputError(f"ct_on_pet_grid has shape {ct_on_pet_grid.shape}, the PET {case.pet_array.shape}")
        return ct_on_pet_grid
    return case.ct_on_pet_grid()


def _crop_task(case, name: str, mask: np.ndarray, ct: np.ndarray | None) -> dict:
    """The segment's box (+ margin) of PET, CT and mask, with the geometry of that box: small to pickle."""
    bounds = mask_bounds(mask)
    if bounds is None:
        raise InputError(f"segment {name!r} is empty")
    lo = [max(first - CROP_MARGIN_VOXELS, 0) for first, _ in bounds]
    hi = [min(last + CROP_MARGIN_VOXELS + 1, n) for (_, last), n in zip(bounds, mask.shape)]
    box = tuple(slice(a, b) for a, b in zip(lo, hi))
    origin = case.pet.TransformIndexToPhysicalPoint([int(lo[2]), int(lo[1]), int(lo[0])])
    arrays = {"pet": np.ascontiguousarray(case.pet_array[box])}
    if ct is not None:
        arrays["ct"] = np.ascontiguousarray(ct[box])
    return {"name": name, "n_voxels": int(np.count_nonzero(mask[box])), "arrays": arrays,
            "mask": np.ascontiguousarray(mask[box], dtype=np.uint8), "spacing": case.pet.GetSpacing(),
            "origin": origin, "direction": case.pet.GetDirection()}


def _extract_task(task: dict, params: dict[str, dict]) -> dict[str, float]:
    geometry = {"spacing": task["spacing"], "origin": task["origin"], "direction": task["direction"]}
    images = {m: image_from_array(a, **geometry) for m, a in task["arrays"].items()}
    mask = image_from_array(task["mask"], **geometry)
    return _execute_all(params, images, mask, task["name"])


_WORKER_PARAMS: dict[str, dict] | None = None


def _init_worker(params: dict[str, dict]) -> None:
    global _WORKER_PARAMS
    _WORKER_PARAMS = params
    # Boxes are small: ITK's per-filter thread pool costs more than it saves, and the processes are the
    # parallelism.
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)
    for modality in params:
        _extractor(params, modality)


def _worker_task(task: dict) -> dict[str, float]:
    assert _WORKER_PARAMS is not None
    return _extract_task(task, _WORKER_PARAMS)


def _frame(params: dict[str, dict], rows: list[tuple[str, dict[str, float]]]) -> pd.DataFrame:
    columns = list(_column_names(params))
    data = {"segment": [name for name, _ in rows]}
    for column in columns:
        data[column] = [values.get(column, math.nan) for _, values in rows]
    return pd.DataFrame(data, columns=["segment", *columns])
