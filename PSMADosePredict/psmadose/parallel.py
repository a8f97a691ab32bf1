"""Worker processes that never outlive the command that started them.

``process_pool`` is a ``ProcessPoolExecutor`` whose workers ignore SIGINT (the parent decides), ask the kernel
to SIGTERM them when the parent dies (Linux ``PR_SET_PDEATHSIG``: a ``kill -9`` of the parent leaves no orphan),
and are terminated, not awaited, when the block ends with an error, a cancellation or a signal.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import signal
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor

_PR_SET_PDEATHSIG = 1


_STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP}


def _noop() -> None:
    return None


def _die_with_parent() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOP_SIGNALS)  # blocked while the parent forked us
    for signum in (signal.SIGTERM, signal.SIGHUP):  # a forked child inherits the CLI's handlers: undo them
        signal.signal(signum, signal.SIG_DFL)
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
        except (OSError, AttributeError):  # no prctl: termination by the parent still applies
            pass


def _init_worker(initializer: Callable | None, initargs: tuple) -> None:
    _die_with_parent()
    if initializer is not None:
        initializer(*initargs)


def terminate_workers(pool: ProcessPoolExecutor) -> None:
    """Stop a pool's workers now (queued tasks are dropped, running ones killed)."""
    processes = list((getattr(pool, "_processes", None) or {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    for process in processes:
        if process.is_alive():
            process.terminate()
    for process in processes:
        process.join(timeout=5)
        if process.is_alive():
            process.kill()


@contextlib.contextmanager
def process_pool(workers: int, *, spawn: bool = False, initializer: Callable | None = None,
                 initargs: tuple = ()) -> Iterator[ProcessPoolExecutor]:
    """A process pool that is shut down normally on success and terminated on any exception or signal.

    ``spawn``: fresh interpreters instead of forked children (needed where workers use OpenMP after the
    parent did: a forked libgomp can deadlock).
    """
    context = multiprocessing.get_context("spawn") if spawn else None
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_init_worker,
                               initargs=(initializer, initargs))
    if not spawn:
        # Forked workers start at the first task. A signal handled while Python runs its fork callbacks raises an
        # exception that Python can only print and drop (a traceback on the terminal, a lost Ctrl-C): start the
        # workers now with the stop signals blocked; a signal that came meanwhile is delivered right after.
        previous = signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)
        try:
            pool.submit(_noop).result()
        except BaseException:
            terminate_workers(pool)
            raise
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, previous)
    try:
        yield pool
    except BaseException:
        terminate_workers(pool)
        raise
    pool.shutdown(wait=True)
