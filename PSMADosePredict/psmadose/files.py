"""Small text inputs (CSV, JSON) read strictly: UTF-8 (BOM accepted), bounded size and nesting, one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

from .errors import InputError

MAX_JSON_BYTES = 5_000_000


def read_text_utf8(path: Path, what: str, max_bytes: int = 10_000_000) -> str:
    """A small text file as UTF-8 (a BOM is accepted); other encodings and oversized files are refused."""
    path = Path(path)
    size = path.stat().st_size
    if size > max_bytes:
        raise InputError(f"{path}: {size / 1e6:.1f} MB is too large for a {what} (limit {max_bytes / 1e6:g} MB); "
                         "is it the right file?")
    raw = path.read_bytes()
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")) or (len(raw) > 1 and b"\x00" in raw[:4]):
        raise InputError(f"{path}: the {what} is UTF-16; save it as UTF-8 (e.g. 'CSV UTF-8' in a spreadsheet)")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: the {what} is not UTF-8 (byte {exc.start}); save it as UTF-8") from None


def read_json(path: Path, what: str, max_bytes: int = MAX_JSON_BYTES):
    """A JSON document; invalid, non-UTF-8, oversized or absurdly nested files are one-line errors."""
    text = read_text_utf8(path, what, max_bytes)
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"{path}: the {what} is not valid JSON ({exc}); fix the file") from None
    except RecursionError:
        raise InputError(f"{path}: the {what} is nested too deeply to be valid; fix the file") from None
