"""Liveness of the process that wrote a `running` record: pid, host and the
start tick that tells a reused pid from the original process."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from aimmat.state.procs import HOST, pid_start_tick, process_alive

pytestmark = pytest.mark.skipif(not os.path.exists("/proc/self/stat"), reason="needs Linux /proc")


def _tick_of_self_by_field_22() -> int:
    # proc(5): field 22 is starttime; this process's comm ("python...") has no spaces
    return int(open("/proc/self/stat").read().split()[21])


def test_own_start_tick_and_liveness():
    tick = pid_start_tick(os.getpid())
    assert tick == _tick_of_self_by_field_22()
    assert process_alive(HOST, os.getpid(), tick)
    assert process_alive(HOST, os.getpid(), None)  # no tick recorded: the pid alone decides


def test_reused_pid_is_detected_by_its_start_tick():
    tick = pid_start_tick(os.getpid())
    # the same pid with another start time is another process: the writer is dead
    assert not process_alive(HOST, os.getpid(), tick - 1)
    assert not process_alive(HOST, os.getpid(), tick + 12345)


def test_dead_process_is_not_alive():
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait(timeout=30)  # reaped: the pid is free
    assert pid_start_tick(p.pid) is None
    assert not process_alive(HOST, p.pid, None)


def test_start_tick_of_a_process_whose_name_has_spaces_and_parentheses():
    code = ("import sys; t = open('/proc/self/stat').read().split()[21]; "
            "open('/proc/self/comm', 'w').write('a) b (c'); print(t, flush=True); sys.stdin.readline()")
    p = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        tick = int(p.stdout.readline())
        with open(f"/proc/{p.pid}/stat") as fh:
            assert ") b (c)" in fh.read()  # the renamed comm really is in the stat line
        assert pid_start_tick(p.pid) == tick
        assert process_alive(HOST, p.pid, tick)
        assert not process_alive(HOST, p.pid, tick + 1)
    finally:
        p.stdin.close()
        p.wait(timeout=30)
    assert not process_alive(HOST, p.pid, tick)


def test_child_started_later_has_a_later_tick():
    p = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.readline()"], stdin=subprocess.PIPE)
    try:
        assert pid_start_tick(p.pid) >= pid_start_tick(os.getpid())
    finally:
        p.stdin.close()
        p.wait(timeout=30)


def test_no_pid_is_never_alive_and_other_hosts_are_assumed_alive():
    assert not process_alive(HOST, None, None)
    assert not process_alive("elsewhere", None, 5)
    # we cannot look at another host's processes: assumed alive, even for a pid that is dead here
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait(timeout=30)
    assert process_alive(HOST + "-other-node", p.pid, 1)


def test_process_of_another_user_counts_as_alive():
    # pid 1 exists on every Linux; signalling it is refused unless we are root, which must not read as dead
    tick = pid_start_tick(1)
    assert tick is not None
    assert process_alive(HOST, 1, tick)
    assert not process_alive(HOST, 1, tick + 1)


def test_start_tick_of_a_nonexistent_pid_is_none():
    with open("/proc/sys/kernel/pid_max") as fh:
        pid_max = int(fh.read())
    assert pid_start_tick(pid_max + 1) is None
