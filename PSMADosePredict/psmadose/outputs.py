"""Atomic output directories: work in a temporary sibling, rename into place only when complete.

An existing non-empty output is refused unless ``overwrite``; then it is replaced as a whole, never merged.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from .errors import InputError


def check_output_dir(out: Path, overwrite: bool) -> Path:
    out = Path(out).absolute()
    if out.exists() and not out.is_dir():
        raise InputError(f"{out}: output exists and is not a directory; choose another --out")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise InputError(f"{out}: output directory is not empty; choose a new --out or pass --overwrite")
    parent = out.parent
    if not parent.is_dir():
        raise InputError(f"{parent}: parent of the output directory does not exist; create it first")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise InputError(f"{parent}: not writable; choose an --out where you can write")
    return out


@contextlib.contextmanager
def atomic_output_dir(out: Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary directory that becomes ``out`` when the block completes without error."""
    out = check_output_dir(out, overwrite)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if out.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
        os.replace(out, old / out.name)
        os.replace(tmp, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, out)
    os.chmod(out, 0o755)


@contextlib.contextmanager
def atomic_output_file(out: Path, overwrite: bool = True) -> Iterator[Path]:
    """Yield a temporary file path that is renamed to ``out`` when the block completes."""
    out = Path(out).absolute()
    if out.exists() and not overwrite:
        raise InputError(f"{out}: output file exists; choose another name or pass --overwrite")
    if out.is_dir():
        raise InputError(f"{out}: is a directory; give a file name")
    if not out.parent.is_dir() or not os.access(out.parent, os.W_OK | os.X_OK):
        raise InputError(f"{out.parent}: output folder does not exist or is not writable")
    suffix = "".join(out.suffixes)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{out.name}.tmp-", suffix=suffix, dir=out.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, out)
