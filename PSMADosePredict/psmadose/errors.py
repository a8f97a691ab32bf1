"""Exception types shared by the core.

``InputError`` is the user's problem (bad file, bad value, bad option): the CLI prints its message as one
line and exits with status 2. Its message must name the problem and the fix.
"""


class PsmaDoseError(Exception):
    """Base class of the errors raised deliberately by psmadose."""


class InputError(PsmaDoseError, ValueError):
    """Bad input or usage; the message says what is wrong and how to fix it."""


class CancelledError(PsmaDoseError):
    """A long job was cancelled by its caller through the progress callback."""


def free_mb(path) -> float | None:
    """Free space (MB) of the file system holding ``path`` (or its nearest existing parent)."""
    import shutil
    from pathlib import Path

    place = Path(path).absolute()
    while not place.exists() and place != place.parent:
        place = place.parent
    try:
        return shutil.disk_usage(place).free / 1e6
    except OSError:
        return None


def os_error_message(exc: BaseException) -> str | None:
    """One line for an operating-system failure the user can fix; None for anything else."""
    import errno

    if not isinstance(exc, OSError):
        return None
    where = exc.filename or "the output"
    code = exc.errno
    if code in (errno.ENOSPC, errno.EDQUOT):
        free = free_mb(where) if exc.filename else None
        shown = f"; free {free:.0f} MB" if free is not None else ""
        return f"no space left on the device of {where}{shown}: free some space or choose another --out"
    if code == errno.ENAMETOOLONG:
        return f"{str(where)[:120]}...: path or file name too long; choose a shorter --out"
    if code in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"{where}: permission denied or read-only; choose a place where you can write"
    if code == errno.EMFILE:
        return "too many open files; raise the limit (ulimit -n) or use fewer --workers"
    return None
