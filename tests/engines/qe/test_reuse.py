"""A run that an earlier attempt of the same stage key finished with the same
input is read, not computed again (``RunProfile.reuse_from``): an interrupted
converge ladder or elastic stage resumes without repeating its finished pw.x
runs. Runs that did not end on their own, or whose input differs, are run."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from aimmat.engines.qe.execute import execute
from aimmat.engines.run_profile import RunProfile
from aimmat.stages.base import EARLIER_ATTEMPTS, reuse_sources

FAKE = """#!/bin/sh
# counts its launches; prints what pw.x prints at the end of a run
echo run >> {log}
echo "     Program PWSCF v.6.7MaX starts on  4Dec2026"
echo "   JOB DONE."
"""


@pytest.fixture
def pw(tmp_path):
    log = tmp_path / "launches"
    exe = tmp_path / "fake-pw.x"
    exe.write_text(FAKE.format(log=log))
    exe.chmod(exe.stat().st_mode | stat.S_IXUSR)
    return exe, log


def _folder(root: Path, text: str = "&CONTROL\n   calculation = 'scf'\n/\n") -> Path:
    root.mkdir(parents=True)
    (root / "pw.in").write_text(text)
    return root


def _launches(log: Path) -> int:
    return len(log.read_text().split()) if log.exists() else 0


def test_a_finished_run_with_the_same_input_is_read_not_run(tmp_path, pw):
    exe, log = pw
    first = _folder(tmp_path / "attempt-1" / "p00" / "eq" / "a1")
    assert execute(RunProfile(command=str(exe)), first)[0] == 0 and _launches(log) == 1
    again = _folder(tmp_path / "attempt-2" / "p00" / "eq" / "a1")
    rc, timed_out, _ = execute(RunProfile(command=str(exe), reuse_from=(str(first),)), again)
    assert (rc, timed_out) == (0, False) and _launches(log) == 1  # no launch
    assert (again / "pw.out").read_text() == (first / "pw.out").read_text()
    assert json.loads((again / "run.json").read_text())["reused_from"] == str(first)
    # a third attempt reading the second still names where the run was computed
    third = _folder(tmp_path / "attempt-3" / "p00" / "eq" / "a1")
    execute(RunProfile(command=str(exe), reuse_from=(str(again),)), third)
    assert _launches(log) == 1 and json.loads((third / "run.json").read_text())["reused_from"] == str(first)


@pytest.mark.parametrize("spoil", ["other input", "interrupted", "timed out", "no JOB DONE"])
def test_runs_that_do_not_qualify_are_run_again(tmp_path, pw, spoil):
    exe, log = pw
    first = _folder(tmp_path / "attempt-1" / "a1")
    execute(RunProfile(command=str(exe)), first)
    if spoil == "interrupted":  # stopped by apply: run.json is written only when pw.x ended on its own
        (first / "run.json").unlink()
    elif spoil == "timed out":  # killed by our hard timeout
        facts = json.loads((first / "run.json").read_text())
        (first / "run.json").write_text(json.dumps({**facts, "timed_out": True}))
    elif spoil == "no JOB DONE":
        (first / "pw.out").write_text("     Program PWSCF v.6.7MaX starts on  4Dec2026\n")
    text = "&CONTROL\n   calculation = 'relax'\n/\n" if spoil == "other input" else None
    again = _folder(tmp_path / "attempt-2" / "a1", *([text] if text else []))
    execute(RunProfile(command=str(exe), reuse_from=(str(first),)), again)
    assert _launches(log) == 2 and "reused_from" not in json.loads((again / "run.json").read_text())


def test_reuse_sources_are_the_same_folder_in_earlier_attempts(tmp_path):
    for n in (1, 2):
        (tmp_path / f"attempt-{n}" / "p03" / "shear" / "a1").mkdir(parents=True)
    (tmp_path / "attempt-3").mkdir()
    cfg = {EARLIER_ATTEMPTS: [str(tmp_path / "attempt-2"), str(tmp_path / "attempt-1")]}
    here = tmp_path / "attempt-3"
    assert reuse_sources(cfg, here, here / "p03" / "shear" / "a1") == [
        str(tmp_path / "attempt-2" / "p03" / "shear" / "a1"), str(tmp_path / "attempt-1" / "p03" / "shear" / "a1")]
    assert reuse_sources(cfg, here, here / "p04" / "eq" / "a1") == []  # never ran there
    assert reuse_sources({}, here, here / "p03" / "shear" / "a1") == []
