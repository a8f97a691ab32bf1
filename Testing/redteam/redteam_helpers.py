"""Helpers of the red-team suite."""

from __future__ import annotations

import hashlib
from pathlib import Path


def tree(path: Path) -> dict[str, str]:
    """Every file and folder below ``path`` with a content hash (folders: '<dir>'): what 'unchanged' means."""
    found = {}
    for item in sorted(Path(path).rglob("*")):
        key = str(item.relative_to(path))
        found[key] = "<dir>" if item.is_dir() else hashlib.sha256(item.read_bytes()).hexdigest()
    return found
