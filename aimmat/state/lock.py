"""The campaign lock: one apply at a time, held with flock(2).

flock is released by the kernel when the holder dies, so a SIGKILLed apply
never leaves a stale lock behind.
"""

from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path

from aimmat.errors import CampaignLocked
from aimmat.state.journal import now_iso
from aimmat.state.procs import HOST

LOCK = ".aimmat.lock"
_HELD: set[tuple[int, str]] = set()  # (pid, campaign folder) of locks this process holds; forks inherit no claim


def _key(campaign_dir) -> tuple[int, str]:
    return (os.getpid(), os.path.realpath(campaign_dir))


def _holder_text(fh) -> str:
    fh.seek(0)
    try:
        info = json.loads(fh.read() or "{}")
    except json.JSONDecodeError:
        info = {}
    return f"pid {info.get('pid', '?')} on host {info.get('host', '?')} (since {info.get('started', '?')})"


class CampaignLock:
    def __init__(self, campaign_dir: Path):
        self.path = Path(campaign_dir) / LOCK
        self._fh = None

    def acquire(self) -> "CampaignLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fh = open(self.path, "a+")
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder_text(fh)
            fh.close()
            raise CampaignLocked(
                f"{self.path.parent}: another `aimmat apply` holds the campaign lock: {holder}",
                fix="wait for it to finish (or stop that process); a killed apply releases the lock by itself",
            ) from None
        fh.seek(0)
        fh.truncate()
        fh.write(json.dumps({"pid": os.getpid(), "host": HOST, "started": now_iso()}))
        fh.flush()
        self._fh = fh
        _HELD.add(_key(self.path.parent))
        return self

    def release(self) -> None:
        if self._fh is not None:
            _HELD.discard(_key(self.path.parent))
            fcntl.flock(self._fh, fcntl.LOCK_UN)
            self._fh.close()
            self._fh = None

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()


def lock_held(campaign_dir: Path) -> bool:
    """True when some apply holds the lock. Opens read-only: never writes."""
    path = Path(campaign_dir) / LOCK
    if not path.exists():
        return False
    with open(path) as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(fh, fcntl.LOCK_UN)
    return False


def held_here(campaign_dir: Path) -> bool:
    """True when this process holds the campaign lock (an apply or render in progress here)."""
    return bool(_HELD) and _key(campaign_dir) in _HELD
