"""Working copies left by a run that was killed (kill -9, power loss: nothing could clean up) are removed by the
next run to the same output, and nothing else is: not a live run's, not another host's, not a folder without
psmadose's marker, not a similar name of the user's (psmadose.outputs.remove_stale)."""

from __future__ import annotations

import logging
import subprocess
import sys

from psmadose import outputs


def _dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                          check=True)
    return int(done.stdout)


def _working_copy(parent, name, host, pid, marker=True, kind="tmp", tag="abcd1234"):
    folder = parent / f".{name}.{kind}-{host}-{pid}-{tag}"
    folder.mkdir()
    (folder / "doses.csv").write_text("segment\n", encoding="utf-8")
    if marker:
        (folder / outputs.MARKER).write_text("", encoding="utf-8")
    return folder


def test_only_a_dead_runs_working_copies_are_removed(tmp_path, caplog):
    host = outputs._owner().rsplit("-", 2)[0]
    dead = _dead_pid()
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        gone = [_working_copy(tmp_path, "out", host, dead),
                _working_copy(tmp_path, "out", host, dead, marker=False, kind="old")]
        stale_file = tmp_path / f".doses.csv.tmp-{host}-{dead}-abcd1234.csv"
        stale_file.write_text("x", encoding="utf-8")
        kept = [_working_copy(tmp_path, "out", host, live.pid),  # a run still working
                _working_copy(tmp_path, "out", "otherhost", dead),  # another machine's (shared storage)
                _working_copy(tmp_path, "out", host, dead, marker=False, tag="efgh5678"),  # not psmadose's
                _working_copy(tmp_path, "output", host, dead),  # another output's
                _working_copy(tmp_path, "out", host, "notapid")]
        user_file = tmp_path / ".out.tmp-notes.txt"
        user_file.write_text("mine", encoding="utf-8")
        with caplog.at_level(logging.WARNING, logger="psmadose.outputs"):
            with outputs.atomic_output_dir(tmp_path / "out") as work:
                (work / "doses.csv").write_text("segment\n", encoding="utf-8")
        assert "removed 2 temporary output(s)" in caplog.text
        with outputs.atomic_output_file(tmp_path / "doses.csv") as target:
            target.write_text("segment\n", encoding="utf-8")
    finally:
        live.kill()
        live.wait()
    assert not any(p.exists() for p in gone) and not stale_file.exists()
    assert all(p.is_dir() and (p / "doses.csv").is_file() for p in kept)
    assert user_file.read_text(encoding="utf-8") == "mine"
    assert (tmp_path / "out" / "doses.csv").is_file() and (tmp_path / "doses.csv").is_file()


def test_the_working_copy_names_its_host_and_process(tmp_path):
    with outputs.atomic_output_dir(tmp_path / "out") as work:
        assert work.name.startswith(f".out.tmp-{outputs._owner()}")
