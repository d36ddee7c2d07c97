"""Core slots: how many pw.x ranks may run at once across all workers.

Campaigns run many small pw.x jobs. A semaphore created before the worker
pool forks is shared by every worker and every thread in them, so the
elastic stage can launch its strained cells side by side while the machine
is never oversubscribed (MPI ranks busy-wait: two 2-rank jobs on 2 cores
run at half speed). A launch also waits for a minimum of free memory.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import threading
import time
from contextlib import contextmanager

_SLOTS = None
_GATE = None  # serializes multi-slot acquisition so two jobs never deadlock on halves
_TOTAL = 0
_INIT_LOCK = threading.Lock()  # lazy init from several threads (a stage's cells side by side) must create one semaphore


def init(cores: int) -> None:
    """Create the slots (before forking workers)."""
    global _SLOTS, _GATE, _TOTAL
    _TOTAL = max(1, cores)
    _SLOTS = mp.BoundedSemaphore(_TOTAL)
    _GATE = mp.Lock()


def total() -> int:
    return _TOTAL or (os.cpu_count() or 1)


def mem_available_mb() -> float | None:
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


@contextmanager
def hold(ranks: int, min_free_mb: float = 0.0, poll_s: float = 1.0, max_wait_s: float = 3600.0):
    """Hold ``ranks`` slots (all or none) and wait for ``min_free_mb`` of memory."""
    with _INIT_LOCK:
        if _SLOTS is None:
            init(os.cpu_count() or 1)
    sem, ranks = _SLOTS, min(ranks, _TOTAL)  # release exactly what was acquired, even if init runs again
    with _GATE:
        for _ in range(ranks):
            sem.acquire()
    try:
        deadline = time.monotonic() + max_wait_s
        while min_free_mb > 0:
            free = mem_available_mb()
            if free is None or free >= min_free_mb or time.monotonic() > deadline:
                break
            time.sleep(poll_s)
        yield
    finally:
        for _ in range(ranks):
            sem.release()
