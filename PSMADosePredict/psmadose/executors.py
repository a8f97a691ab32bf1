"""Where cohort tasks run: local processes (the default) or a Dask cluster (``--scheduler ADDRESS``).

One task per case (or per cross-validation run). ``Executor.run`` streams results back as they complete, calls the
progress callback with the number of completed tasks, and returns the results **in task order**, so every output
is byte for byte the one of a serial run. Without a scheduler nothing here imports Dask.

Dask path (``psmadose[distributed]``):

- ``tcp://host:8786`` (or ``tls://...``, or ``host:port``) connects to a running scheduler; ``local`` starts a
  ``distributed.LocalCluster`` of single-threaded worker processes for the command's lifetime.
- An unreachable scheduler, a scheduler without workers, or Dask not installed is one ``InputError`` naming the
  address and the fix.
- Data locality: before any task, every worker checks (``Client.run``) that it sees the same input paths and the
  output folder as this process (a token file written here must be readable there, and the folder writable), and
  runs the same psmadose version; the first worker that cannot is named.
- A worker that dies mid-task: Dask reruns its tasks elsewhere (``distributed.scheduler.allowed-failures``); the
  writing tasks are idempotent (staging folder per attempt, renamed into place), so nothing is lost or duplicated.
  A task that keeps killing workers (``KilledWorker``) is that task's failure, reported through ``on_error``.
- Cancellation (Ctrl-C, SIGTERM, a progress callback returning False): every pending future is cancelled on the
  cluster, the client is closed (a LocalCluster is shut down with its workers) and the exception propagates.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import uuid
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from .errors import CancelledError, InputError

log = logging.getLogger(__name__)

Progress = Callable[[int, int], "bool | None"]
OnError = Callable[[int, BaseException], Any]

CONNECT_TIMEOUT_S = float(os.environ.get("PSMADOSE_SCHEDULER_TIMEOUT_S", "10"))
PROBE_NAME = ".psmadose-locality-probe"
INSTALL_HINT = "pip install 'psmadose[distributed]'"


def normalise_scheduler(address: str | None) -> str | None:
    """``None``, ``"local"`` or a ``scheme://host:port`` address; anything else is an ``InputError``."""
    if address is None:
        return None
    text = address.strip()
    if text == "local":
        return text
    if "://" not in text:
        text = f"tcp://{text}"
    scheme, _, rest = text.partition("://")
    host, _, port = rest.rpartition(":")
    if scheme not in ("tcp", "tls") or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise InputError(f"--scheduler {address!r} is not a Dask scheduler address; use tcp://HOST:PORT (e.g. "
                         "tcp://10.0.0.5:8786, printed by 'dask scheduler') or 'local' for a LocalCluster")
    return text


class LocalExecutor:
    """Local processes (``parallel.process_pool``), as every cohort command did before Dask; ``workers`` <= 1 runs
    serially in this process."""

    kind = "local"

    def __init__(self, workers: int = 1, *, spawn: bool = False):
        self.workers = max(1, int(workers))
        self.spawn = spawn

    def check_locality(self, inputs: Sequence[Path] = (), output_dir: Path | None = None) -> None:
        """Local processes see what this process sees."""

    def run(self, fn: Callable, tasks: Sequence, *, progress: Progress | None = None, on_error: OnError | None = None,
            shared: Any = None, name: str = "task", names: Sequence[str] | None = None) -> list:
        from concurrent.futures import as_completed

        from .parallel import process_pool

        call = fn if shared is None else _Bound(fn, shared)
        results: list = [None] * len(tasks)
        done = 0

        def finish(index: int, get: Callable[[], Any]) -> None:
            nonlocal done
            try:
                results[index] = get()
            except Exception as exc:
                if on_error is None:
                    raise
                results[index] = on_error(index, exc)
            done += 1
            if progress and progress(done, len(tasks)) is False:
                raise CancelledError(f"{name} cancelled")

        if self.workers <= 1 or len(tasks) <= 1:
            for index, task in enumerate(tasks):
                finish(index, lambda task=task: call(task))
            return results
        with process_pool(min(self.workers, len(tasks)), spawn=self.spawn) as pool:
            futures = {pool.submit(call, task): index for index, task in enumerate(tasks)}
            for future in as_completed(futures):
                finish(futures[future], future.result)
        return results

    def close(self) -> None:
        pass


class _Bound:
    """``fn(shared, task)`` as a picklable one-argument callable."""

    def __init__(self, fn: Callable, shared: Any):
        self.fn, self.shared = fn, shared

    def __call__(self, task):
        return self.fn(self.shared, task)


class DaskExecutor:
    """Tasks on a Dask cluster: ``Client(address)`` for ``tcp://``, a ``LocalCluster`` for ``local``."""

    kind = "dask"

    def __init__(self, address: str, *, workers: int | None = None):
        self.address = normalise_scheduler(address)
        try:
            import distributed  # noqa: F401
        except ImportError:
            raise InputError(f"--scheduler needs Dask, which is not installed: {INSTALL_HINT} (or drop --scheduler "
                             "to use local processes)") from None
        self.cluster = None
        self.client = self._connect(workers)

    def _connect(self, workers: int | None):
        from distributed import Client, LocalCluster

        # Dask logs through its own stderr handler, warnings and errors only (its INFO chatter is not the user's
        # business, and its records stay off the command's held-warnings handler).
        dask_log = logging.getLogger("distributed")
        dask_log.propagate = False
        dask_log.setLevel(logging.WARNING)

        if self.address == "local":
            import dask

            n = workers or os.cpu_count() or 1
            # One thread per worker process: the tasks are CPU-bound Python/numpy (the GIL would serialise threads).
            # Dask's nanny sets MALLOC_TRIM_THRESHOLD_=65536 in its workers, which pins glibc's mmap threshold at
            # 128 kB: every image-sized numpy temporary is then mmapped and faulted in afresh (measured: 12x the page
            # faults, 10x the system time, 2.8x the wall time of a simulated patient). psmadose's workers keep glibc's
            # default (see docs/CLUSTER.md for clusters started by hand).
            with dask.config.set({"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None}):
                self.cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True,
                                            dashboard_address=None, silence_logs=logging.ERROR)
            return Client(self.cluster)
        try:
            with warnings.catch_warnings(record=True) as caught:  # e.g. VersionMismatchWarning: held by the CLI
                warnings.simplefilter("always")
                client = Client(self.address, timeout=CONNECT_TIMEOUT_S)
            for warning in caught:
                log.warning("Dask: %s", " ".join(str(warning.message).split()))
        except (OSError, TimeoutError) as exc:
            raise InputError(f"cannot reach the Dask scheduler at {self.address} within {CONNECT_TIMEOUT_S:g} s "
                             f"({type(exc).__name__}); start it ('dask scheduler') or fix --scheduler") from None
        try:
            client.wait_for_workers(1, timeout=CONNECT_TIMEOUT_S)
        except (OSError, TimeoutError):
            client.close()
            raise InputError(f"the Dask scheduler at {self.address} has no workers; start some with "
                             f"'dask worker {self.address} --nthreads 1' on machines that see the data") from None
        return client

    # -- data locality ---------------------------------------------------------------------------------------------
    def check_locality(self, inputs: Sequence[Path] = (), output_dir: Path | None = None) -> None:
        """Every worker must read ``inputs`` as this process does, write ``output_dir`` and run this psmadose."""
        from . import __version__

        expected = {str(Path(p).absolute()): _fingerprint(Path(p)) for p in inputs}
        token = None
        if output_dir is not None:
            token = uuid.uuid4().hex
            (Path(output_dir) / PROBE_NAME).write_text(token, encoding="utf-8")
        try:
            answers = self.client.run(_worker_check, expected, str(output_dir) if output_dir else None, token,
                                      on_error="return")
        finally:
            if output_dir is not None:
                (Path(output_dir) / PROBE_NAME).unlink(missing_ok=True)
        if not answers:
            raise InputError(f"the Dask scheduler at {self.address} has no workers; start some with 'dask worker "
                             f"{self.address} --nthreads 1'")
        for worker, answer in sorted(answers.items()):
            if isinstance(answer, BaseException):
                hint = (f"install psmadose {__version__} with {INSTALL_HINT} in the workers' environment"
                        if isinstance(answer, ImportError) else "check that worker's environment")
                raise InputError(f"Dask worker {worker} cannot run psmadose tasks ({type(answer).__name__}: "
                                 f"{answer}); {hint}")
            host, version, problem = answer
            if version != __version__:
                raise InputError(f"Dask worker {worker} (host {host}) runs psmadose {version}, this command "
                                 f"{__version__}; install the same version on every worker")
            if problem:
                raise InputError(f"Dask worker {worker} (host {host}) {problem}; inputs and outputs must be on "
                                 "storage every worker sees at the same path (see docs/CLUSTER.md)")

    # -- running -----------------------------------------------------------------------------------------------------
    def run(self, fn: Callable, tasks: Sequence, *, progress: Progress | None = None, on_error: OnError | None = None,
            shared: Any = None, name: str = "task", names: Sequence[str] | None = None) -> list:
        from distributed import as_completed

        client = self.client
        token = uuid.uuid4().hex[:8]
        shared_future = None
        if shared is not None:
            shared_future = client.scatter(shared, broadcast=False, hash=False)
        futures = {}
        for index, task in enumerate(tasks):
            label = names[index] if names is not None else str(index)
            key = f"psmadose-{name}-{label}-{token}"
            future = (client.submit(fn, task, key=key, pure=False) if shared_future is None
                      else client.submit(fn, shared_future, task, key=key, pure=False))
            futures[future] = index
        results: list = [None] * len(tasks)
        done = 0
        try:
            for future in as_completed(list(futures)):
                index = futures[future]
                if future.status == "error":
                    exc = future.exception()
                    if on_error is None:
                        raise exc
                    results[index] = on_error(index, exc)
                else:
                    results[index] = future.result()
                future.release()
                done += 1
                if progress and progress(done, len(tasks)) is False:
                    raise CancelledError(f"{name} cancelled")
        except BaseException:
            # Stop the cluster's work: queued tasks never start; a running one finishes its case, and its result
            # is dropped (it cannot write into the output, which is removed).
            with contextlib.suppress(Exception):
                client.cancel(list(futures), force=True)
            raise
        finally:
            if shared_future is not None:
                with contextlib.suppress(Exception):
                    shared_future.release()
        return results

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.client.close(timeout=10)
        if self.cluster is not None:
            with contextlib.suppress(Exception):
                self.cluster.close(timeout=10)


Executor = LocalExecutor | DaskExecutor


def check_options(scheduler: str | None, workers: int | None) -> None:
    """Refuse bad --scheduler / --workers combinations before any work (``open_executor`` checks them again)."""
    scheduler = normalise_scheduler(scheduler)
    if scheduler is not None and scheduler != "local" and workers is not None:
        raise InputError(f"--workers sets local processes; with --scheduler {scheduler} the cluster's workers run the "
                         "tasks: drop --workers")
    if workers is not None and workers < 1:
        raise InputError(f"--workers must be >= 1, got {workers}")


@contextlib.contextmanager
def open_executor(scheduler: str | None = None, workers: int | None = None, *,
                  spawn: bool = False) -> Iterator[LocalExecutor | DaskExecutor]:
    """The executor of a cohort command: local processes without ``scheduler``, else Dask (closed on exit)."""
    check_options(scheduler, workers)
    scheduler = normalise_scheduler(scheduler)
    if scheduler is None:
        from .features.table import available_workers

        yield LocalExecutor(available_workers(workers), spawn=spawn)
        return
    executor = DaskExecutor(scheduler, workers=workers)
    try:
        yield executor
    finally:
        executor.close()


def executor_or_local(executor, workers: int | None) -> LocalExecutor | DaskExecutor:
    if executor is not None:
        return executor
    from .features.table import available_workers

    return LocalExecutor(available_workers(workers))


# -- runs on the workers ---------------------------------------------------------------------------------------------
def _fingerprint(path: Path):
    """What a worker must see at ``path``: the entry names of a folder (up to 2000), or a file's size."""
    if path.is_dir():
        return sorted(p.name for p in path.iterdir())[:2000]
    return path.stat().st_size


def _worker_check(expected: dict, output_dir: str | None, token: str | None) -> tuple[str, str, str | None]:
    """(host, psmadose version, first problem or None) on one worker."""
    from . import __version__

    host = socket.gethostname()
    for path, fingerprint in expected.items():
        place = Path(path)
        try:
            seen = _fingerprint(place)
        except FileNotFoundError:
            return host, __version__, f"cannot find the input {path}"
        except OSError as exc:
            return host, __version__, f"cannot read the input {path} ({exc.strerror or exc})"
        if seen != fingerprint:
            return host, __version__, f"sees different contents at the input {path} (another disk?)"
        if place.is_dir():
            for entry in fingerprint[:2000]:
                sub = place / entry
                if sub.is_dir() and not os.access(sub, os.R_OK | os.X_OK):
                    return host, __version__, f"cannot read {sub}"
    if output_dir is not None:
        probe = Path(output_dir) / PROBE_NAME
        try:
            seen_token = probe.read_text(encoding="utf-8")
        except OSError:
            return host, __version__, f"cannot see the output folder {output_dir}"
        if seen_token != token:
            return host, __version__, f"sees another folder at the output {output_dir} (another disk?)"
        check = Path(output_dir) / f".psmadose-write-check-{uuid.uuid4().hex}"
        try:
            check.write_bytes(b"")
            check.unlink()
        except OSError:
            return host, __version__, f"cannot write into the output folder {output_dir}"
    return host, __version__, None
