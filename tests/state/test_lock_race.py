"""Processes that race for the campaign lock at the same instant: the loser's
refusal always names the winner (pid, host, start time), never ``pid ?``.

The winner used to truncate the lock file and write its record only after
flock returned, so a loser reading in between saw an empty file (or the
previous holder's record) in a quarter to a third of the races."""

from __future__ import annotations

import multiprocessing as mp
import os
import re
from datetime import datetime

import pytest

from aimmat.errors import CampaignLocked
from aimmat.state.lock import LOCK, CampaignLock, lock_held
from aimmat.state.procs import HOST

RACERS = 5
ROUNDS = 24
HOLDER_RE = re.compile(r"pid (\d+) on host (\S+) \(since ([^)]+)\)")


def _racer(campaign: str, start, done, out) -> None:
    start.wait()
    try:
        lock = CampaignLock(campaign).acquire()
    except CampaignLocked as exc:
        out.put(("lost", os.getpid(), str(exc)))
        done.wait()
        return
    except BaseException as exc:  # pragma: no cover - reported to the test
        out.put(("error", os.getpid(), repr(exc)))
        done.wait()
        return
    out.put(("won", os.getpid(), ""))
    done.wait()  # hold the lock until every loser has read the holder
    lock.release()


def _race(campaign) -> list[tuple]:
    ctx = mp.get_context("fork")
    start, done = ctx.Barrier(RACERS), ctx.Barrier(RACERS)
    out = ctx.Queue()
    procs = [ctx.Process(target=_racer, args=(str(campaign), start, done, out)) for _ in range(RACERS)]
    for p in procs:
        p.start()
    try:
        results = [out.get(timeout=60) for _ in range(RACERS)]
    finally:
        for p in procs:
            p.join(timeout=60)
            if p.is_alive():  # pragma: no cover - a hung racer
                p.kill()
                p.join()
    assert all(p.exitcode == 0 for p in procs), [p.exitcode for p in procs]
    return results


@pytest.mark.parametrize("same_folder", [True, False], ids=["reused-folder", "fresh-folder"])
def test_every_loser_of_a_simultaneous_race_names_the_winner(tmp_path, same_folder):
    bad = []
    for rnd in range(ROUNDS):
        campaign = tmp_path / ("camp" if same_folder else f"camp{rnd}")
        results = _race(campaign)
        assert not [r for r in results if r[0] == "error"], results
        winners = [r[1] for r in results if r[0] == "won"]
        assert len(winners) == 1, results  # flock: exactly one holder
        for _, _, msg in (r for r in results if r[0] == "lost"):
            m = HOLDER_RE.search(msg)
            if not m or int(m.group(1)) != winners[0] or m.group(2) != HOST:
                bad.append((rnd, msg.splitlines()[0]))
                continue
            datetime.fromisoformat(m.group(3))  # a real start time, not "?"
        assert not lock_held(campaign)
    assert not bad, f"{len(bad)} loser message(s) without the winner: {bad[:5]}"


def test_a_released_lock_names_no_holder(tmp_path):
    """A normal release empties the holder record: the next race's loser
    cannot mistake the previous holder for the winner."""
    with CampaignLock(tmp_path):
        assert HOLDER_RE.search(_refusal(tmp_path)).group(1) == str(os.getpid())
    assert (tmp_path / LOCK).exists() and (tmp_path / LOCK).read_text() == ""


def test_the_record_of_a_killed_holder_is_not_taken_for_the_winner(tmp_path, monkeypatch):
    """A loser reading between the winner's flock and its write sees the record
    of a holder that was killed (a dead pid of this host): it looks again."""
    import subprocess

    from aimmat.state import lock as lock_mod

    dead = subprocess.Popen(["true"])
    dead.wait()
    with CampaignLock(tmp_path):
        mine = (tmp_path / LOCK).read_text()
        stale = mine.replace(f'"pid": {os.getpid()}', f'"pid": {dead.pid}')
        (tmp_path / LOCK).write_text(stale)
        reads = []
        real_pread = os.pread

        def pread(fd, n, off):  # the winner's record lands while the loser waits
            reads.append(1)
            if len(reads) == 3:
                (tmp_path / LOCK).write_text(mine)
            return real_pread(fd, n, off)

        monkeypatch.setattr(lock_mod.os, "pread", pread)
        assert HOLDER_RE.search(_refusal(tmp_path)).group(1) == str(os.getpid())
        assert len(reads) >= 3
        # never replaced: after the wait the leftover record is still shown, not "?"
        (tmp_path / LOCK).write_text(stale)
        monkeypatch.setattr(lock_mod, "INFO_WAIT_S", 0.05)
        assert HOLDER_RE.search(_refusal(tmp_path)).group(1) == str(dead.pid)


def _refusal(campaign) -> str:
    with pytest.raises(CampaignLocked) as e:
        CampaignLock(campaign).acquire()
    return str(e.value)
