"""The campaign lock: one holder at a time, the holder named in the refusal,
released on exit (normal, exception, or the holder being killed)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from aimmat.errors import CampaignError, CampaignLocked
from aimmat.state.lock import LOCK, CampaignLock, held_here, lock_held
from aimmat.state.procs import HOST

ROOT = Path(__file__).resolve().parents[2]

HOLDER = """
import sys, time
from aimmat.state.lock import CampaignLock
lock = CampaignLock(sys.argv[1]).acquire()
print("held", flush=True)
sys.stdin.readline()  # hold until told (or killed)
lock.release()
print("released", flush=True)
"""


@pytest.fixture
def holder(tmp_path):
    """Another process holding the lock of ``tmp_path``."""
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    p = subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp_path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         text=True, env=env)
    try:
        assert p.stdout.readline().strip() == "held"
        yield p
    finally:
        if p.poll() is None:
            p.kill()
        p.wait(timeout=10)


def test_acquire_writes_the_holder_and_release_frees(tmp_path):
    lock = CampaignLock(tmp_path / "camp").acquire()  # creates the folder
    try:
        info = json.loads((tmp_path / "camp" / LOCK).read_text())
        assert info["pid"] == os.getpid() and info["host"] == HOST and info["started"].endswith("+00:00")
        assert lock_held(tmp_path / "camp") and held_here(tmp_path / "camp")
    finally:
        lock.release()
    assert not lock_held(tmp_path / "camp") and not held_here(tmp_path / "camp")
    lock.release()  # releasing twice is harmless


def test_second_acquisition_is_refused_naming_the_holder(tmp_path):
    with CampaignLock(tmp_path):
        with pytest.raises(CampaignLocked) as e:
            CampaignLock(tmp_path).acquire()
        msg = str(e.value)
        assert f"pid {os.getpid()} on host {HOST}" in msg and str(tmp_path) in msg
        assert e.value.fix and "wait" in e.value.fix
        assert isinstance(e.value, CampaignError) and e.value.exit_code == 4
        # the refused attempt did not disturb the holder's record or the lock
        assert json.loads((tmp_path / LOCK).read_text())["pid"] == os.getpid()
        assert lock_held(tmp_path) and held_here(tmp_path)
    assert not lock_held(tmp_path)
    CampaignLock(tmp_path).acquire().release()  # free again


def test_released_when_the_with_block_raises(tmp_path):
    with pytest.raises(RuntimeError):
        with CampaignLock(tmp_path):
            raise RuntimeError("stage crashed")
    assert not lock_held(tmp_path) and not held_here(tmp_path)


def test_refused_while_another_process_holds_it_and_free_after(tmp_path, holder):
    assert lock_held(tmp_path) and not held_here(tmp_path)  # held, but not by this process
    with pytest.raises(CampaignLocked) as e:
        CampaignLock(tmp_path).acquire()
    assert f"pid {holder.pid} on host {HOST}" in str(e.value)
    holder.stdin.write("\n")
    holder.stdin.flush()
    assert holder.stdout.readline().strip() == "released"
    holder.wait(timeout=10)
    with CampaignLock(tmp_path):
        assert json.loads((tmp_path / LOCK).read_text())["pid"] == os.getpid()


def test_a_killed_holder_leaves_no_stale_lock(tmp_path, holder):
    assert lock_held(tmp_path)
    holder.send_signal(signal.SIGKILL)
    holder.wait(timeout=10)
    assert not lock_held(tmp_path)
    with CampaignLock(tmp_path):  # the stale pid in the file does not matter
        assert lock_held(tmp_path)


def test_lock_held_never_creates_or_writes(tmp_path):
    assert not lock_held(tmp_path) and not (tmp_path / LOCK).exists()
    (tmp_path / LOCK).write_text("garbage, not json")
    os.chmod(tmp_path / LOCK, 0o444)
    try:
        assert not lock_held(tmp_path)
        assert (tmp_path / LOCK).read_text() == "garbage, not json"
    finally:
        os.chmod(tmp_path / LOCK, 0o644)


def test_unreadable_holder_record_still_refuses(tmp_path):
    with CampaignLock(tmp_path):
        (tmp_path / LOCK).write_text("{broken")  # a holder that died mid-write of its record
        with pytest.raises(CampaignLocked) as e:
            CampaignLock(tmp_path).acquire()
        assert "pid ? on host ?" in str(e.value)


def test_held_here_is_per_folder(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    with CampaignLock(a):
        assert held_here(a) and held_here(tmp_path / "b" / ".." / "a")  # the real path counts
        assert not held_here(b)
        with CampaignLock(b):
            assert held_here(a) and held_here(b)
        assert held_here(a) and not held_here(b)
