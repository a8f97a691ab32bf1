"""Atomic output directories: work in a temporary sibling, rename into place only when complete.

An existing non-empty output is refused unless ``overwrite``; then it is replaced as a whole, never merged, and
only if psmadose wrote it (a ``.psmadose-output`` marker inside). Whatever the flags, an output is never the
working directory, the home folder or the file-system root, and never is, contains or lies inside an input: a
mistyped ``--out`` (``.``, an unset shell variable, the case folder) cannot delete anyone's data.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import shutil
import socket
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from .errors import InputError

log = logging.getLogger(__name__)

# Called just before an output is committed; a front end registers its pending-stop check here, so a stop
# whose exception Python swallowed (a signal landing in a finalizer) still discards the output.
before_commit: list = []


def _check_before_commit() -> None:
    for check in before_commit:
        check()


MARKER = ".psmadose-output"  # written into every output directory: psmadose replaces only what it wrote
NAME_RESERVE = 80  # bytes of a name kept for the working copy's '.<name>.tmp-<host>-<pid>-XXXXXXXX<suffix>'


def _owner() -> str:
    """'<host>-<pid>-': working copies name the process that owns them, so a later run can tell a dead one's."""
    host = "".join(c if c.isalnum() or c in "._" else "_" for c in socket.gethostname())[:30] or "host"
    return f"{host}-{os.getpid()}-"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: someone else's live process
        return True
    return True


def remove_stale(out: Path) -> int:
    """Remove the working copies that earlier runs to ``out`` on this host left when they were killed (kill -9,
    power loss: nothing could clean up). Only names of psmadose's own pattern whose process is gone; a folder
    also needs psmadose's marker inside. Returns how many were removed."""
    host = _owner().rsplit("-", 2)[0]
    removed = 0
    for kind in ("tmp", "old"):
        prefix = f".{out.name}.{kind}-{host}-"
        try:
            entries = [e for e in out.parent.iterdir() if e.name.startswith(prefix)]
        except OSError:
            return removed
        for entry in entries:
            pid = entry.name[len(prefix):].split("-", 1)[0]
            if not pid.isdigit() or _alive(int(pid)):
                continue
            try:
                if entry.is_dir() and not entry.is_symlink():
                    if kind == "tmp" and not (entry / MARKER).is_file():
                        continue
                    shutil.rmtree(entry)
                else:
                    entry.unlink()
            except OSError:
                continue
            removed += 1
    if removed:
        log.warning("removed %d temporary output(s) that a killed earlier run left beside %s", removed, out.name)
    return removed


def _check_length(out: Path) -> None:
    """Refuse names the file system cannot hold before any work (255 bytes a component, 4096 a path)."""
    longest = max((len(part.encode("utf-8", "surrogateescape")) for part in out.parts), default=0)
    if longest > 255 - NAME_RESERVE:  # room for the working copy's longer name
        raise InputError(f"{str(out)[:80]}...: a folder or file name of {longest} bytes is too long (limit "
                         f"{255 - NAME_RESERVE}); choose a shorter --out")
    if len(str(out).encode("utf-8", "surrogateescape")) > 4000:
        raise InputError(f"{str(out)[:80]}...: the path is too long ({len(str(out))} characters); choose a "
                         "shorter --out")


def _protected(out: Path, inputs) -> None:
    resolved = out.resolve()
    for name, place in (("the working directory", Path.cwd()), ("your home folder", Path.home()),
                        ("the file-system root", Path(resolved.anchor))):
        if resolved == place.resolve():
            raise InputError(f"{out}: is {name}; psmadose writes a new folder for its output: give --out a new "
                             "folder name (e.g. --out results)")
    for given in inputs:
        source = Path(given).resolve()
        if resolved == source or source in resolved.parents or resolved in source.parents:
            relation = "is" if resolved == source else "is inside" if source in resolved.parents else "contains"
            raise InputError(f"{out}: the output {relation} the input {given}; choose an --out outside the inputs")


def check_output_dir(out: Path, overwrite: bool, inputs=()) -> Path:
    """Refuse an output that would destroy data; ``inputs`` are the command's input paths."""
    if str(out).strip() in ("", "."):
        raise InputError("--out is empty or '.': give a new folder name for the output (e.g. --out results)")
    out = Path(out).absolute()
    _check_length(out)
    _protected(out, inputs)
    if out.exists() and not out.is_dir():
        raise InputError(f"{out}: output exists and is not a directory; choose another --out")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise InputError(f"{out}: output directory is not empty; choose a new --out or pass --overwrite")
        if not (out / MARKER).is_file():
            raise InputError(f"{out}: not empty and not written by psmadose (no {MARKER} inside); --overwrite "
                             "replaces only psmadose outputs: choose a new --out")
    parent = out.parent
    if not parent.is_dir():
        raise InputError(f"{parent}: parent of the output directory does not exist; create it first")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise InputError(f"{parent}: not writable; choose an --out where you can write")
    return out


@contextlib.contextmanager
def atomic_output_dir(out: Path, overwrite: bool = False, inputs=()) -> Iterator[Path]:
    """Yield a temporary directory that becomes ``out`` when the block completes without error."""
    out = check_output_dir(out, overwrite, inputs)
    remove_stale(out)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-{_owner()}", dir=out.parent))
    try:
        (tmp / MARKER).write_text("written by psmadose; --overwrite may replace this folder as a whole\n",
                                  encoding="utf-8")
        yield tmp
        _check_before_commit()
        _commit_dir(tmp, out, overwrite, inputs)
    except BaseException:
        _remove_tree(tmp)
        raise
    os.chmod(out, 0o755)


def _remove_tree(path: Path, attempts: int = 50) -> None:
    """Remove a working copy, also while a task that cannot be interrupted (a Dask worker's, after a cancel) is
    still adding to it: rmtree then meets a folder that is no longer empty; retry until it is gone (~5 s at most).
    A task that starts writing after that fails, as its folder is gone."""
    for _ in range(attempts):
        shutil.rmtree(path, ignore_errors=True)
        if not os.path.lexists(path):
            return
        time.sleep(0.1)


def _commit_dir(tmp: Path, out: Path, overwrite: bool, inputs) -> None:
    """Rename the finished temporary folder to ``out``; without ``overwrite`` never replace what appeared there
    meanwhile (a concurrent run to the same --out): rename(2) onto a non-empty folder fails, and we say so."""
    if overwrite and out.exists():
        check_output_dir(out, overwrite, inputs)  # still a psmadose output (re-checked at the last moment)
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-{_owner()}", dir=out.parent))
        os.replace(out, old / out.name)
        os.replace(tmp, out)
        shutil.rmtree(old, ignore_errors=True)
        return
    try:
        os.rename(tmp, out)
    except OSError as exc:
        if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOTDIR, errno.EISDIR):
            raise
        raise InputError(f"{out}: was written by someone else while this run worked (a concurrent run?); this "
                         "run's result was discarded: choose a new --out or pass --overwrite") from None


def _link_new(tmp: Path, out: Path) -> None:
    try:
        os.link(tmp, out)  # atomic and never replaces: fails if out appeared meanwhile
    except FileExistsError:
        raise InputError(f"{out}: was written by someone else while this run worked (a concurrent run?); this "
                         "run's result was discarded: choose another name or pass --overwrite") from None
    except OSError:  # a file system without hard links: exclusive create, then replace the placeholder
        try:
            os.close(os.open(out, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            raise InputError(f"{out}: was written by someone else while this run worked (a concurrent run?); "
                             "choose another name or pass --overwrite") from None
        os.replace(tmp, out)


def check_output_file(out: Path, overwrite: bool, inputs=()) -> Path:
    """Refuse an output file that exists (unless ``overwrite``), is a folder, or is one of the inputs."""
    if str(out).strip() in ("", "."):
        raise InputError("--out is empty or '.': give a file name for the output (e.g. --out suv.nrrd)")
    out = Path(out).absolute()
    _check_length(out)
    if out.is_dir():
        raise InputError(f"{out}: is a directory; give a file name")
    for given in inputs:
        source = Path(given).resolve()
        if out.resolve() == source or source in out.resolve().parents:
            raise InputError(f"{out}: the output is or is inside the input {given}; choose an --out elsewhere")
    if out.exists() and not overwrite:
        raise InputError(f"{out}: output file exists; choose another name or pass --overwrite")
    return out


@contextlib.contextmanager
def atomic_output_file(out: Path, overwrite: bool = False, inputs=()) -> Iterator[Path]:
    """Yield a temporary file path that becomes ``out`` when the block completes; without ``overwrite`` an
    existing ``out`` (also one created meanwhile by a concurrent run) is never replaced."""
    out = check_output_file(out, overwrite, inputs)
    if not out.parent.is_dir() or not os.access(out.parent, os.W_OK | os.X_OK):
        raise InputError(f"{out.parent}: output folder does not exist or is not writable")
    suffix = "".join(out.suffixes)
    remove_stale(out)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{out.name}.tmp-{_owner()}", suffix=suffix, dir=out.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        _check_before_commit()
        if overwrite:
            os.replace(tmp, out)
        else:
            _link_new(tmp, out)
            tmp.unlink(missing_ok=True)  # the hard link (or, without links, nothing) is left
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")  # what a spreadsheet may run as a formula (OWASP CSV injection)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def csv_cell(value):
    """A text cell a spreadsheet will show, never run: a leading ' before =, +, -, @, tab or CR (numbers kept)."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS) and not _is_number(value):
        return "'" + value
    return value


def csv_text(cell: str) -> str:
    """Undo ``csv_cell`` when reading a CSV psmadose (or a careful spreadsheet) wrote."""
    if cell.startswith("'") and cell[1:].startswith(FORMULA_STARTS):
        return cell[1:]
    return cell


def write_csv_table(frame, path: Path) -> None:
    """A pandas table as UTF-8 CSV with text cells neutralised (``csv_cell``)."""
    from pandas.api.types import is_string_dtype

    frame = frame.copy()
    for column in frame.columns:
        # pandas >= 3 stores text as the "str" dtype, not object: both must be neutralised
        if frame[column].dtype == object or is_string_dtype(frame[column].dtype):
            frame[column] = frame[column].map(csv_cell)
    frame.to_csv(path, index=False, float_format="%.6g", encoding="utf-8")
