"""Core slots: totals, all-or-none acquisition, the bounded memory wait."""

from __future__ import annotations

import threading
import time

import pytest

from aimmat.runtime import slots


@pytest.fixture
def two_slots(monkeypatch):
    """Two fresh slots; the module's previous state comes back afterwards."""
    for name in ("_SLOTS", "_GATE", "_TOTAL"):
        monkeypatch.setattr(slots, name, getattr(slots, name))
    slots.init(2)
    return slots


def test_total_and_init(two_slots, monkeypatch):
    assert two_slots.total() == 2
    two_slots.init(0)  # never fewer than one slot
    assert two_slots.total() == 1
    monkeypatch.setattr(slots, "_TOTAL", 0)  # not initialised: the machine's cores
    assert slots.total() >= 1


def test_more_ranks_than_slots_runs_alone(two_slots):
    with two_slots.hold(5):  # capped at the total instead of waiting forever
        assert not two_slots._SLOTS.acquire(block=False)
    assert two_slots._SLOTS.acquire(block=False)
    two_slots._SLOTS.release()


def test_acquisition_is_all_or_none(two_slots):
    # a 2-slot job waiting behind a held slot keeps a 1-slot job from
    # slipping in between: it takes both slots first, the small one after
    order = []
    big_waiting = threading.Event()

    def job(name, ranks, started=None):
        if started:
            started.set()
        with two_slots.hold(ranks):
            order.append(name)
            time.sleep(0.05)

    with two_slots.hold(1):
        big = threading.Thread(target=job, args=("big", 2, big_waiting))
        big.start()
        big_waiting.wait()
        time.sleep(0.05)  # big now holds the gate and one of the two slots
        small = threading.Thread(target=job, args=("small", 1))
        small.start()
        time.sleep(0.05)
        assert order == []  # neither runs while one slot is held
    big.join(5)
    small.join(5)
    assert order == ["big", "small"]


def test_memory_wait_gives_up_at_its_deadline(two_slots, monkeypatch):
    monkeypatch.setattr(slots, "mem_available_mb", lambda: 1.0)
    t0 = time.monotonic()
    with two_slots.hold(1, min_free_mb=1e9, poll_s=0.01, max_wait_s=0.1):
        waited = time.monotonic() - t0
    assert 0.1 <= waited < 2.0


def test_memory_wait_ends_when_memory_is_free_or_unknown(two_slots, monkeypatch):
    free = iter([10.0, 10.0, 5000.0])
    monkeypatch.setattr(slots, "mem_available_mb", lambda: next(free))
    with two_slots.hold(1, min_free_mb=1000, poll_s=0.01, max_wait_s=60):
        pass
    monkeypatch.setattr(slots, "mem_available_mb", lambda: None)  # no /proc/meminfo: do not wait
    t0 = time.monotonic()
    with two_slots.hold(1, min_free_mb=1e9, poll_s=1.0, max_wait_s=60):
        assert time.monotonic() - t0 < 0.5
