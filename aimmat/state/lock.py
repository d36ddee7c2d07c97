"""The campaign lock: one apply at a time, held with flock(2).

flock is released by the kernel when the holder dies, so a SIGKILLed apply
never leaves a stale lock behind.

The lock file's text names the holder: ``{"pid", "host", "started"}`` (one
JSON object), written by the holder right after flock succeeds and emptied
again before it lets go. A process refused the lock may read the file in the
instant between the winner's flock and its write (empty, or the record of a
holder that was killed): it looks again for a short bounded time
(``INFO_WAIT_S``) until the record parses and does not name a process of
this host that is gone, so the refusal names the winner.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from pathlib import Path

from aimmat.errors import CampaignLocked
from aimmat.state.journal import now_iso
from aimmat.state.procs import HOST, process_alive

LOCK = ".aimmat.lock"
INFO_WAIT_S = 3.0  # how long a refused process waits for the winner's record
_HELD: set[tuple[int, str]] = set()  # (pid, campaign folder) of locks this process holds; forks inherit no claim


def _key(campaign_dir) -> tuple[int, str]:
    return (os.getpid(), os.path.realpath(campaign_dir))


def holder_info(text: str | bytes | None) -> dict | None:
    """The holder record of a lock file's text; None when it is not one
    (empty: free or not yet written; half-written; garbage)."""
    try:
        info = json.loads(text or "")
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    if not isinstance(info, dict):
        return None
    pid, host, started = info.get("pid"), info.get("host"), info.get("started")
    if not (isinstance(pid, int) and not isinstance(pid, bool) and isinstance(host, str) and isinstance(started, str)):
        return None
    return info


def _format(info: dict | None) -> str:
    info = info or {}
    return f"pid {info.get('pid', '?')} on host {info.get('host', '?')} (since {info.get('started', '?')})"


def _read_holder(fd: int, wait_s: float) -> str:
    """The holder named in the lock file, looking again until its record is there.

    A record naming a process of this host that is gone is the leftover of a
    killed holder (the winner has not written yet): it is shown only if
    nothing better turns up in ``wait_s`` seconds (a forked child of a killed
    apply can still hold the lock)."""
    deadline = time.monotonic() + wait_s
    fallback = None
    pause = 0.002
    while True:
        try:
            info = holder_info(os.pread(fd, 65536, 0))
        except OSError:
            info = None
        if info is not None:
            if info["host"] != HOST or process_alive(HOST, info["pid"], None):
                return _format(info)
            fallback = info
        if time.monotonic() >= deadline:
            return _format(fallback)
        time.sleep(pause)
        pause = min(pause * 2, 0.05)


class CampaignLock:
    def __init__(self, campaign_dir: Path):
        self.path = Path(campaign_dir) / LOCK
        self._fd: int | None = None

    def acquire(self) -> "CampaignLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # 0666 & ~umask, as any file aimmat creates; no O_APPEND (pwrite below writes at 0)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            try:
                holder = _read_holder(fd, INFO_WAIT_S)
            finally:
                os.close(fd)
            raise CampaignLocked(
                f"{self.path.parent}: another `aimmat apply` holds the campaign lock: {holder}",
                fix="wait for it to finish (or stop that process); a killed apply releases the lock by itself",
            ) from None
        except BaseException:
            os.close(fd)
            raise
        try:
            data = json.dumps({"pid": os.getpid(), "host": HOST, "started": now_iso()}).encode()
            # one write of the whole record, then cut what a longer old record left after it:
            # a reader never sees an empty file, only the old record, a mix that does not parse, or this one
            os.pwrite(fd, data, 0)
            os.ftruncate(fd, len(data))
        except BaseException:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)
            raise
        self._fd = fd
        _HELD.add(_key(self.path.parent))
        return self

    def release(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            _HELD.discard(_key(self.path.parent))
            try:
                os.ftruncate(fd, 0)  # no holder now: the next race's loser cannot mistake us for the winner
            except OSError:
                pass
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

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
