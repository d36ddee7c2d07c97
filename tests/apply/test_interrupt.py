"""Ctrl-C (SIGINT to apply's process group, as a terminal sends it), or
SIGTERM to apply alone, ends a QE campaign promptly: pw.x runs in its own session and, in the converge
ladder, from threads, so neither sees the signal by itself. Apply must end
them and launch no other (an `interrupted` class is otherwise retried once),
leave no pw.x behind, and resume on the next apply."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.engines.qe.test_orphans import _alive
from tests.stages.test_qe_pipeline import _campaign, al_prim

pytestmark = [pytest.mark.slow]
FAKE = """#!/bin/sh
# a pw.x that prints its banner on an empty input (the version probe) and otherwise computes for a minute
if [ ! -f pw.in ]; then echo "     Program PWSCF v.6.7MaX starts on  3Dec2026"; exit 0; fi
echo $$ >> {pids}
exec sleep 60
"""


def _ignore_sigint():
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # as a non-interactive shell starts a background job


def _default_sigint():
    # as a terminal starts a foreground job, whatever this test process inherited
    # (run in the background itself, it may have SIGINT ignored)
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.parametrize("jobs, how", [
    ("1", "ctrl-c"),  # SIGINT to the whole foreground group, as a terminal sends it
    ("2", "ctrl-c"),
    ("2", "kill"),  # SIGTERM to apply's pid alone (kill PID, a batch system): its forked workers must stop too
    ("2", "background"),  # started with SIGINT ignored: kill -INT stays ignored, as the shell asked; kill PID stops it
])
def test_ctrl_c_ends_running_pw_and_launches_no_other(tmp_path, jobs, how):
    pids = tmp_path / "pids"
    exe = tmp_path / "fake-pw.x"
    exe.write_text(FAKE.format(pids=pids))
    exe.chmod(exe.stat().st_mode | stat.S_IXUSR)
    path = _campaign(tmp_path, {"Al": al_prim()}, {"pseudo": {"family": "debian", "files": {"Al": "Al.pz-vbc.UPF"}},
                                                   "ecutwfc_ry": 20, "kspacing_per_a": 0.5, "pw_command": str(exe)})
    m = yaml.safe_load(path.read_text())
    m["stages"] = {"converge": {"profile": "qe"}, **m["stages"]}  # two pw.x side by side, from threads
    path.write_text(yaml.safe_dump(m))
    proc = subprocess.Popen([sys.executable, "-m", "aimmat.cli.main", "apply", str(path), "-q", "--jobs", jobs],
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                            preexec_fn=_ignore_sigint if how == "background" else _default_sigint)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not (pids.exists() and len(pids.read_text().split()) >= 2):
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.1)
        started = [int(p) for p in pids.read_text().split()]
        assert len(started) == 2 and all(_alive(p) for p in started)
        if how == "background":
            os.kill(proc.pid, signal.SIGINT)
            time.sleep(3)
            assert proc.poll() is None and all(_alive(p) for p in started), "an ignored SIGINT stopped apply"
        t0 = time.monotonic()
        if how == "ctrl-c":
            os.killpg(proc.pid, signal.SIGINT)  # the terminal's Ctrl-C: the whole foreground group
        else:
            os.kill(proc.pid, signal.SIGTERM)
        out, err = proc.communicate(timeout=45)
        took = time.monotonic() - t0
        assert proc.returncode == 130, err
        assert took < 30, f"apply took {took:.0f} s to stop"  # the fake pw.x would run 60 s
        assert "run `aimmat apply` again to resume" in err
        assert not any(_alive(p) for p in started), "a pw.x outlived the interrupted apply"
        assert sorted(int(p) for p in pids.read_text().split()) == sorted(started)  # none launched after Ctrl-C
    finally:  # a failed assertion must not leave an apply (and its fake pw.x) running
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
