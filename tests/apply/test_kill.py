"""SIGKILL an apply at a random moment, apply again: the same final records
as an uninterrupted run, no temp files, a consistent journal."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time

import pytest

from aimmat.state import journal
from aimmat.state.scan import scan
from tests.helpers import emt_manifest, final_records, make_emt_campaign

ENV = {**os.environ, "PYTHONUNBUFFERED": "1"}


def _apply(manifest, jobs: int) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "aimmat.cli.main", "apply", str(manifest), "-q", "--jobs", str(jobs)]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=ENV)


def _manifest(tmp):
    return make_emt_campaign(tmp, emt_manifest())


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ref")
    path = _manifest(tmp)
    proc = _apply(path, 1)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err.decode()
    return final_records(tmp / "camp/c"), len(journal.read(tmp / "camp/c"))


@pytest.mark.slow
@pytest.mark.parametrize("seed,jobs", [(1, 1), (2, 1), (3, 1), (4, 2), (5, 2), (6, 1)])
def test_kill_then_resume_matches_uninterrupted(seed, jobs, reference, tmp_path):
    ref_records, ref_events = reference
    rng = random.Random(seed)
    path = _manifest(tmp_path)
    camp = tmp_path / "camp/c"
    kills = 0
    # Kill twice at random points of progress (a random journal length, then a
    # random extra delay), the second time during the resume.
    for _ in range(2):
        seen = len(journal.read(camp)) if (camp / "journal.jsonl").exists() else 0
        wait_for = seen + rng.randint(1, max(2, (ref_events - seen) // 2))
        proc = _apply(path, jobs)
        while proc.poll() is None and len(_events(camp)) < wait_for:
            time.sleep(0.005)
        time.sleep(rng.uniform(0, 0.05))
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            kills += 1
        proc.wait(timeout=60)
    assert kills >= 1
    proc = _apply(path, jobs)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err.decode()

    assert final_records(camp) == ref_records
    leftovers = [p for p in camp.rglob(".tmp-*")]
    assert leftovers == []
    obs = scan(camp)
    recs = {(s, c, st): r for (s, c), co in obs.candidates.items() for st, r in co.stages.items()}
    assert all(r.status == "done" for r in recs.values())
    assert journal.verify(camp, recs) == []
    events = journal.read(camp)
    assert sum(e["event"] == "apply_start" for e in events) == 3


def _events(camp) -> list[str]:
    try:
        return (camp / "journal.jsonl").read_text().splitlines()
    except FileNotFoundError:
        return []
