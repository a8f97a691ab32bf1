"""Run many ``psmadose`` command lines fast, each in its own process.

Importing psmadose with scikit-learn, SimpleITK and skops costs ~2 s per interpreter; 200+ bad-input runs would
spend most of the test budget there. This server imports the CLI once, then for every request forks a child
process that runs the real ``psmadose.cli.main`` (real argument parsing, real files, its own exit status,
stdout and stderr as file descriptors). The parent never runs a command itself, so every child starts from the
same clean state; nothing is mocked. ``test_forked_runs_match_fresh_interpreters`` checks that a sample of cases
gives the same exit status and stderr as ``python -m psmadose.cli``.

Protocol: one JSON request per stdin line {"argv": [...], "cwd": "...", "env": {...}, "timeout": s}; one JSON
answer per stdout line {"returncode": n, "stdout": "...", "stderr": "..."}.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import tempfile
import time


def _preload() -> None:
    import psmadose.batch  # noqa: F401
    import psmadose.cli  # noqa: F401
    import psmadose.dicom.series  # noqa: F401
    import psmadose.evaluation  # noqa: F401
    import psmadose.features.table  # noqa: F401
    import psmadose.predict  # noqa: F401
    import psmadose.simulate.cohort  # noqa: F401
    import psmadose.training  # noqa: F401


def _child(request: dict, out_path: str, err_path: str) -> None:
    try:
        os.chdir(request.get("cwd") or os.getcwd())
        os.environ.update(request.get("env") or {})
        for fd, path in ((1, out_path), (2, err_path)):
            handle = os.open(path, os.O_WRONLY | os.O_TRUNC)
            os.dup2(handle, fd)
            os.close(handle)
        sys.stdout = open(1, "w", encoding="utf-8", closefd=False)
        sys.stderr = open(2, "w", encoding="utf-8", closefd=False)
        from psmadose.cli import main

        code = main(list(request["argv"]))
    except SystemExit as exc:  # argparse
        code = exc.code if isinstance(exc.code, int) else 2
    except BaseException:  # noqa: BLE001 - report as an uncaught traceback would be
        import traceback

        traceback.print_exc()
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _run(request: dict) -> dict:
    with tempfile.NamedTemporaryFile(delete=False) as out, tempfile.NamedTemporaryFile(delete=False) as err:
        out_path, err_path = out.name, err.name
    pid = os.fork()
    if pid == 0:
        _child(request, out_path, err_path)
    deadline = time.monotonic() + float(request.get("timeout", 300))
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            status = -1
            break
        time.sleep(0.01)
    code = os.waitstatus_to_exitcode(status) if status != -1 else -9
    answer = {"returncode": code}
    for key, path in (("stdout", out_path), ("stderr", err_path)):
        with open(path, encoding="utf-8", errors="replace") as handle:
            answer[key] = handle.read()
        os.unlink(path)
    return answer


def main() -> None:
    _preload()
    sys.stdout.write(json.dumps({"ready": True}) + "\n")
    sys.stdout.flush()
    for line in sys.stdin:
        if line.strip():
            sys.stdout.write(json.dumps(_run(json.loads(line))) + "\n")
            sys.stdout.flush()


if __name__ == "__main__":
    main()
