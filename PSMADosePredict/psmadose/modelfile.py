"""Model files: skops (no pickle), a JSON model card, sha256 verification and explicit trust.

A model directory holds ``model.skops`` and ``model_card.json``. The card records the sha256 of the skops
file; loading refuses a file whose hash differs (tampered or corrupted). The bundled model's hash is also
pinned in this module, so it is verified against code, not only against its own card. Any other model
needs ``trust=True`` (``--trust-model``), and even then skops builds only the types in ALLOWED_TYPES:
loading never runs code from the file.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import zipfile
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path

import numpy as np

from .errors import InputError
from .files import read_json

MODEL_FILE = "model.skops"
CARD_FILE = "model_card.json"
RADIOMICS_FILE = "radiomics_params.yaml"  # pyradiomics settings, present when the model uses radiomics
BUNDLED_MODEL_NAME = "psmadose-virtual-v2"
# Pinned by tools/build_bundled_model.py (model bytes; card content digest); checked at every load and by tests.
BUNDLED_MODEL_SHA256 = "5f15b4844306c8cded6fc577849dd10151aed13108e7275542a1a115c3284fd5"
BUNDLED_CARD_SHA256 = "25aa086d8393f9208ecbbf74149088b4748442b22971f5d63f415fc575c2f205"

ALLOWED_TYPES = sorted({
    "psmadose.model.DoseModelSet", "psmadose.model.DoseModel", "psmadose.model.PopulationMeanRegressor",
    "psmadose.model.MixedEffectsRegressor", "psmadose.model.PhysicsBaseline", "psmadose.model.PhysicsCorrected",
    "sklearn.ensemble._hist_gradient_boosting.gradient_boosting.HistGradientBoostingRegressor",
    "sklearn.ensemble._hist_gradient_boosting.binning._BinMapper",
    "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
    "sklearn._loss.loss.HalfSquaredError", "sklearn._loss.link.IdentityLink",
    "sklearn._loss.link.Interval", "sklearn._loss._loss.CyHalfSquaredError",
    "sklearn.pipeline.Pipeline", "sklearn.impute._base.SimpleImputer", "sklearn.preprocessing._data.StandardScaler",
    "sklearn.feature_selection._univariate_selection.SelectKBest",
    "sklearn.feature_selection._univariate_selection.f_regression",
    "sklearn.linear_model._ridge.RidgeCV", "sklearn.linear_model._ridge._RidgeGCV",
    "numpy.float64", "numpy.int64", "numpy.dtype", "numpy.ndarray", "builtins.float", "builtins.int",
    "builtins.str", "builtins.list", "builtins.dict", "builtins.tuple", "builtins.NoneType", "builtins.bool",
    "numpy.float32", "numpy.uint8", "numpy.uint32", "numpy.int32", "numpy.bool_",
    "sklearn.utils._bunch.Bunch", "numpy.random.mtrand.RandomState",
})


@dataclass
class LoadedModel:
    model_set: object  # DoseModelSet
    card: dict
    path: Path
    sha256: str
    bundled: bool

    @property
    def model_id(self) -> str:
        return self.card.get("model_id", "unknown")

    @property
    def radiomics_params(self) -> Path | None:
        """The model's own pyradiomics settings (verified at load), or None when it needs no radiomics."""
        return self.path / RADIOMICS_FILE if "radiomics" in self.model_set.feature_families else None


def _skops_io():
    """``skops.io``, imported without letting it import Dask: at import, skops lists scikit-learn's estimators by
    walking every sklearn module, including sklearn's array-API shim for Dask, which imports Dask when installed
    (psmadose[distributed]). The list is the same without it (the shim holds no estimator); a command without
    --scheduler must not pay for or depend on Dask."""
    import sys

    if "skops.io" in sys.modules or "dask" in sys.modules:
        import skops.io

        return skops.io
    sys.modules["dask"] = None  # makes 'import dask' raise ImportError, which the walk skips
    try:
        import skops.io
    finally:
        if sys.modules.get("dask", 0) is None:
            del sys.modules["dask"]
    return skops.io


def bundled_model_dir() -> Path:
    return Path(str(files("psmadose") / "models" / BUNDLED_MODEL_NAME))


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def deterministic_skops_bytes(obj) -> bytes:
    """skops archive with fixed zip timestamps, so the same model gives the same bytes and hash."""
    sio = _skops_io()

    raw = sio.dumps(obj)
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(raw)) as source, zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as target:
        schema = source.read("schema.json").decode("utf-8")
        # skops names array files after id(): rename them in order of first reference in the schema.
        names = list(dict.fromkeys(re.findall(r'"([0-9]+\.npy)"', schema)))
        renamed = {name: f"{index:05d}.npy" for index, name in enumerate(names)}
        schema = re.sub(r'"([0-9]+\.npy)"', lambda m: f'"{renamed[m.group(1)]}"', schema)
        # "__id__" (object identity for shared references) is id() too: renumber, keeping equalities.
        ids = {value: str(index + 1) for index, value in
               enumerate(dict.fromkeys(re.findall(r'"__id__": ([0-9]+)', schema)))}
        schema = re.sub(r'"__id__": ([0-9]+)', lambda m: f'"__id__": {ids[m.group(1)]}', schema)
        entries = {"schema.json": schema.encode("utf-8")}
        for name in source.namelist():
            if name != "schema.json":
                entries[renamed.get(name, name)] = source.read(name)
        for name in sorted(entries):
            info = zipfile.ZipInfo(name, date_time=(2026, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            target.writestr(info, entries[name])
    return out.getvalue()


def save_model(model_set, card: dict, directory: Path) -> dict:
    """Write model.skops and model_card.json (with sha256 and model id) into an existing directory."""
    data = deterministic_skops_bytes(model_set)
    digest = sha256_bytes(data)
    card = dict(card)
    card["sha256"] = digest
    card.setdefault("model_id", f"{card.get('name', 'psmadose-model')}-{digest[:12]}")
    card["model_file"] = MODEL_FILE
    card["format"] = "skops (no pickle); load with psmadose.modelfile.load_model"
    (Path(directory) / MODEL_FILE).write_bytes(data)
    return write_card(directory, card)


MAX_ARCHIVE_BYTES = 200_000_000  # uncompressed; psmadose models are ~2 MB
MAX_ARRAY_BYTES = 50_000_000


def _declared_npy_bytes(head: bytes) -> int | None:
    """Bytes an .npy member declares (shape x item size) from its header, or None if it has no valid header."""
    if not head.startswith(b"\x93NUMPY") or len(head) < 10:
        return None
    size_bytes = 2 if head[6] == 1 else 4
    length = int.from_bytes(head[8:8 + size_bytes], "little")
    header = head[8 + size_bytes: 8 + size_bytes + length].decode("latin-1")
    shape = re.search(r"'shape':\s*\(([^)]*)\)", header)
    descr = re.search(r"'descr':\s*'([^']+)'", header)
    try:
        if descr is not None:  # the common case, without the slow literal_eval
            itemsize = np.dtype(descr.group(1)).itemsize
        else:  # structured dtypes (the trees' node arrays)
            import ast

            itemsize = np.lib.format.descr_to_dtype(ast.literal_eval(header)["descr"]).itemsize
        dims = [int(d) for d in shape.group(1).replace(" ", "").split(",") if d]
    except (ValueError, TypeError, SyntaxError, KeyError, AttributeError, MemoryError, RecursionError):
        return None
    return int(np.prod(dims, dtype=np.float64)) * itemsize


def check_archive(data: bytes, model_path: Path) -> None:
    """Before skops reads anything: a zip whose declared sizes are bounded, whose arrays' headers declare what the
    members hold (no 8 GB array behind a small file) and where every array is used by the schema."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        members = archive.infolist()
        if "schema.json" not in archive.namelist():
            raise zipfile.BadZipFile("no schema.json")
    except (zipfile.BadZipFile, ValueError, OSError) as exc:
        raise InputError(f"{model_path}: not a skops model file ({exc}); give a model written by "
                         "'psmadose train'") from None
    total = sum(member.file_size for member in members)
    if total > MAX_ARCHIVE_BYTES:
        raise InputError(f"{model_path}: the archive declares {total / 1e6:.0f} MB of content (limit "
                         f"{MAX_ARCHIVE_BYTES / 1e6:.0f} MB); this is not a psmadose model")
    used = set(re.findall(r'"([^"]+\.npy)"', archive.read("schema.json").decode("utf-8", "replace")))
    for member in members:
        if not member.filename.endswith(".npy"):
            continue
        if member.filename not in used:
            raise InputError(f"{model_path}: holds {member.filename}, which the model does not use; the archive was "
                             "altered — restore or retrain the model")
        with archive.open(member) as handle:
            declared = _declared_npy_bytes(handle.read(4096))
        if declared is None:
            raise InputError(f"{model_path}: array {member.filename} is damaged (no readable .npy header); restore "
                             "or retrain the model")
        if declared > MAX_ARRAY_BYTES or declared > member.file_size:
            raise InputError(f"{model_path}: array {member.filename} declares {declared / 1e6:.0f} MB in a member of "
                             f"{member.file_size / 1e6:.3f} MB; the archive is damaged or forged — restore or "
                             "retrain the model")


def card_digest(card: dict) -> str:
    """sha256 of the card's content (canonical JSON, without the ``card_sha256`` field that holds it)."""
    content = {key: value for key, value in card.items() if key != "card_sha256"}
    return sha256_bytes(json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode())


def write_card(directory: Path, card: dict) -> dict:
    """Write model_card.json with its content digest (``card_sha256``): an edited card is refused at load."""
    from .modelcard import validate_card

    card = dict(card)
    card["card_sha256"] = card_digest(card)
    validate_card(card, Path(directory) / CARD_FILE)
    (Path(directory) / CARD_FILE).write_text(json.dumps(card, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return card


def check_card(card: dict, card_path: Path, digest: str, is_bundled: bool) -> None:
    """The card belongs to this model.skops and was not edited since psmadose wrote it."""
    if card.get("card_sha256") != card_digest(card):
        raise InputError(f"{card_path}: the model card was edited after training (its content does not match its "
                         "card_sha256); restore the model folder as written by 'psmadose train'")
    if not str(card.get("model_id", "")).endswith(digest[:12]):
        raise InputError(f"{card_path}: model_id {card.get('model_id')!r} does not name this model.skops "
                         f"(sha256 {digest[:12]}...); restore the model folder")
    if is_bundled and card["card_sha256"] != BUNDLED_CARD_SHA256:
        raise InputError(f"{card_path}: the bundled model's card differs from the one pinned in psmadose; "
                         "reinstall psmadose")


def load_model(path: Path | None = None, *, trust: bool = False) -> LoadedModel:
    """Load the bundled model (path None) or a model directory / model.skops path."""
    sio = _skops_io()

    bundled_dir = bundled_model_dir()
    directory = Path(path) if path is not None else bundled_dir
    if directory.is_file():
        directory = directory.parent
    model_path, card_path = directory / MODEL_FILE, directory / CARD_FILE
    if not model_path.is_file() or not card_path.is_file():
        raise InputError(f"{directory}: not a psmadose model directory (needs {MODEL_FILE} and {CARD_FILE}); "
                         "give the folder written by 'psmadose train'")
    try:
        card = read_json(card_path, "model card")
        if not isinstance(card, dict):
            raise ValueError("not an object")
    except (ValueError, UnicodeDecodeError) as exc:
        if isinstance(exc, InputError):
            raise
        raise InputError(f"{card_path}: model card is not valid JSON ({exc}); the model folder is damaged") from None
    data = model_path.read_bytes()
    digest = sha256_bytes(data)
    if card.get("sha256") != digest:
        raise InputError(f"{model_path}: sha256 {digest[:12]}... does not match its model card "
                         f"({str(card.get('sha256'))[:12]}...): the file was modified or corrupted; "
                         "retrain or restore the model")
    is_bundled = directory.resolve() == bundled_dir.resolve()
    if is_bundled and digest != BUNDLED_MODEL_SHA256:
        raise InputError(f"{model_path}: the bundled model's sha256 differs from the one pinned in psmadose; "
                         "reinstall psmadose")
    if not is_bundled and not trust:
        raise InputError(f"{directory}: this is not the bundled model; loading another model requires explicit "
                         "trust (--trust-model) — only do that for a model you or your site trained")
    check_card(card, card_path, digest, is_bundled)
    check_archive(data, model_path)
    try:
        untrusted = sio.get_untrusted_types(data=data)
    except Exception as exc:  # not a skops archive at all
        raise InputError(f"{model_path}: not a skops model file ({type(exc).__name__}); "
                         "give a model written by 'psmadose train'") from None
    foreign = sorted(set(untrusted) - set(ALLOWED_TYPES))
    if foreign:
        raise InputError(f"{model_path}: refuses to load types psmadose does not use ({', '.join(foreign[:3])}"
                         f"{'...' if len(foreign) > 3 else ''}); this is not a psmadose model")
    try:
        model_set = sio.loads(data, trusted=[t for t in untrusted if t in ALLOWED_TYPES])
    except Exception as exc:
        raise InputError(f"{model_path}: cannot load the model ({type(exc).__name__}: {exc}); it was written "
                         "by an incompatible version — retrain it") from None
    from .model import DoseModelSet

    if not isinstance(model_set, DoseModelSet):
        raise InputError(f"{model_path}: holds a {type(model_set).__name__}, not a psmadose model set")
    if not isinstance(getattr(model_set, "intervals", None), dict) or \
            not all("multivariate" in d for d in getattr(model_set, "domain", {}).values()):
        raise InputError(f"{model_path}: the model was written by an older psmadose (no conformal interval "
                         "calibration or multivariate domain check); retrain it with 'psmadose train'")
    if "radiomics" in model_set.feature_families:
        settings = directory / RADIOMICS_FILE
        expected = card.get("radiomics_settings", {}).get("sha256")
        if not settings.is_file() or sha256_bytes(settings.read_bytes()) != expected:
            raise InputError(f"{directory}: the model uses radiomics but {RADIOMICS_FILE} is missing or differs "
                             "from the settings recorded in its card; restore the model folder")
    from .modelcard import validate_card

    validate_card(card, card_path)  # after the archive checks: what reaches the outputs follows the schema
    return LoadedModel(model_set, card, directory, digest, is_bundled)
