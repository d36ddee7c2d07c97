"""Worker guard: a Parsl worker stops itself once its apply is gone.

A thread in each worker process re-reads the campaign lock file. When
another apply has taken the lock, or (on the apply's own host) the apply
process has died, it SIGKILLs the worker and its pw.x process groups: no
orphan keeps writing records behind a newer apply's back.
"""

from __future__ import annotations

import os
import signal
import threading
import time

from aimmat.state.lock import holder_info
from aimmat.state.procs import HOST, process_alive, stat_fields

GUARD_PERIOD_S = 2.0
_GUARDED: dict = {}  # "key": (lock path, lock text) of the last guard this worker process started


def _holder(lock_text: str | None) -> tuple | None:
    """(pid, host, started) of a lock file's text; None when it names no holder.

    The text is ``aimmat.state.lock``'s holder record (``holder_info`` reads
    it). None covers a file being written (look again) and one emptied by a
    holder that let go (no new holder yet); the guard must tell those from a
    new holder (stop).
    """
    info = holder_info(lock_text)
    return (info["pid"], info["host"], info["started"]) if info is not None else None


def _holder_gone(holder: tuple | None) -> bool:
    # Only this host's processes can be looked at; the lock records no start tick.
    return holder is not None and holder[1] == HOST and not process_alive(HOST, holder[0], None)


def _parent_pid(pid: int) -> int | None:
    """Parent pid (Linux), or None once the process is gone."""
    fields = stat_fields(pid)
    return int(fields[1]) if fields else None


def _children(pid: int) -> list[int]:
    return [int(e) for e in os.listdir("/proc") if e.isdigit() and _parent_pid(int(e)) == pid]


def _stop_self() -> None:
    """SIGKILL this worker and its children's process groups (pw.x runs in its own session)."""
    for child in _children(os.getpid()):
        try:
            if os.getpgid(child) == child:
                os.killpg(child, signal.SIGKILL)
            else:
                os.kill(child, signal.SIGKILL)
        except OSError:
            pass
    os.kill(os.getpid(), signal.SIGKILL)


def _guard_loop(lock_path: str, lock_text: str | None, period_s: float) -> None:
    mine = _holder(lock_text)
    while True:
        time.sleep(period_s)
        try:
            with open(lock_path) as fh:
                now = _holder(fh.read())
        except FileNotFoundError:
            now = ("gone",)  # compares unequal to any holder: the campaign was removed
        except OSError:  # a filesystem hiccup: look again next time
            continue
        if (now is not None and now != mine) or _holder_gone(mine):
            _stop_self()


def start_guard(lock_path: str, lock_text: str | None, period_s: float = GUARD_PERIOD_S) -> None:
    """Once per worker process and apply: stop when the submitting apply has lost the campaign.

    Parameters
    ----------
    lock_path : str
        The campaign's lock file (``aimmat.state.lock.LOCK`` in its folder).
    lock_text : str or None
        The lock file's text when the apply submitted the task: its holder.
    period_s : float
        Seconds between looks at the lock file.
    """
    key = (lock_path, lock_text)
    if _GUARDED.get("key") == key:
        return
    _GUARDED["key"] = key
    threading.Thread(target=_guard_loop, args=(lock_path, lock_text, period_s), daemon=True, name="aimmat-guard").start()
