"""Is the process that wrote a `running` record still alive?"""

from __future__ import annotations

import os
import socket

HOST = socket.gethostname()


def stat_fields(pid: int) -> list[str] | None:
    """The fields of ``/proc/<pid>/stat`` after the command name (Linux;
    field 3, the state, is index 0), or None once the process is gone."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            stat = fh.read()
    except OSError:
        return None
    # comm may contain spaces and parentheses: split after the last ')'.
    return stat.rsplit(")", 1)[1].split()


def pid_start_tick(pid: int) -> int | None:
    """Start time of ``pid`` in clock ticks since boot (Linux), or None."""
    fields = stat_fields(pid)
    return int(fields[19]) if fields else None


def process_alive(host: str | None, pid: int | None, start: int | None) -> bool:
    """True when the process is certainly alive; records from other hosts are
    treated as alive (we cannot look) unless the caller holds the campaign lock."""
    if pid is None:
        return False
    if host != HOST:
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    if start is not None:
        return pid_start_tick(pid) == start
    return True
