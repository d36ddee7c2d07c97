"""A pw.x run dies with the process that launched it: killing a worker (or
the whole apply) must not leave pw.x computing in its own session."""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import stat
import time
from pathlib import Path

from aimmat.engines.qe.execute import _execute
from aimmat.engines.run_profile import RunProfile


def _fake_pw(folder: Path) -> Path:
    exe = folder / "fake-pw.x"
    exe.write_text("#!/bin/sh\necho $$ > pid\nexec sleep 60\n")  # exec: the pid stays the sleeping process's
    exe.chmod(exe.stat().st_mode | stat.S_IXUSR)
    return exe


def _worker(exe: str, folder: str) -> None:
    _execute(RunProfile(command=exe, walltime_s=120), Path(folder))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as fh:  # a zombie waiting for init's reaping is gone too
        return fh.read().split(")")[-1].split()[0] != "Z"


def test_pw_dies_when_its_worker_is_killed(tmp_path):
    exe = _fake_pw(tmp_path)
    proc = mp.get_context("fork").Process(target=_worker, args=(str(exe), str(tmp_path)))
    proc.start()
    pid_file = tmp_path / "pid"
    deadline = time.monotonic() + 20
    while not (pid_file.exists() and pid_file.read_text().strip()) and time.monotonic() < deadline:
        time.sleep(0.05)
    pw = int(pid_file.read_text())
    assert _alive(pw)
    os.kill(proc.pid, signal.SIGKILL)  # the worker dies as an OOM kill or a killed apply would take it
    proc.join()
    deadline = time.monotonic() + 10
    while _alive(pw) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(pw), "pw.x outlived the process that launched it"
