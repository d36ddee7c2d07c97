"""A process-wide stop request: SIGINT/SIGTERM to apply (or to a worker).

pw.x runs in its own session (so that our hard timeout can kill the
launcher and every rank at once), which also means the terminal's Ctrl-C
never reaches it, and stages run pw.x from threads (the converge ladder's
two cells, the elastic stage's strained cells) where Python delivers no
KeyboardInterrupt. Without this flag an interrupted apply waited for every
running pw.x to finish and its retry ladders launched new ones ("interrupted"
is retried once). ``install`` makes the signal set the flag before Python's
own handling; ``aimmat.engines.qe.execute`` polls it, stops its pw.x and
launches no other.

The flag is one byte of an anonymous shared mapping made at import, so the
workers apply forks (``--jobs N``) see a request made in apply itself: a
signal sent to apply's pid alone (``kill PID``, a batch system's stop) used
to set apply's flag only, and apply then waited while its workers ran their
stages to the end and launched new pw.x. A signal the process started with
ignored (SIGINT in a background job of a non-interactive shell) stays
ignored, as the shell asked and as Python does for KeyboardInterrupt.
"""

from __future__ import annotations

import mmap
import signal
import threading

_STOP = mmap.mmap(-1, 1)  # MAP_SHARED | MAP_ANONYMOUS: one byte shared with every process forked after import


class StopRequested(KeyboardInterrupt):
    """Raised where a run is refused or ended because a stop was requested."""


def requested() -> bool:
    return _STOP[0] != 0


def request() -> None:
    """Ask this process and every worker forked from it to stop."""
    _STOP[0] = 1


def clear() -> None:
    """Forget a request (a new apply in the same process: tests call the CLI in-process)."""
    _STOP[0] = 0


def install(signals=(signal.SIGINT, signal.SIGTERM)) -> dict:
    """Chain a handler that sets the flag in front of each signal's current one.

    Main thread only (Python's rule for signal handlers); elsewhere it does
    nothing. SIGTERM without a Python handler then raises KeyboardInterrupt
    like SIGINT, so a scheduler's stop unwinds the same way. Returns the
    handlers it replaced (for ``restore``)."""
    replaced: dict = {}
    if threading.current_thread() is not threading.main_thread():
        return replaced
    for sig in signals:
        previous = signal.getsignal(sig)
        if getattr(previous, "_aimmat_stop", False) or previous == signal.SIG_IGN:
            continue  # already ours, or ignored on purpose by whoever started us

        def handler(signum, frame, previous=previous):
            request()
            if callable(previous):
                return previous(signum, frame)
            raise KeyboardInterrupt(f"signal {signum}")

        handler._aimmat_stop = True
        replaced[sig] = previous
        signal.signal(sig, handler)
    return replaced


def restore(replaced: dict) -> None:
    """Put back the handlers ``install`` replaced."""
    if threading.current_thread() is not threading.main_thread():
        return
    for sig, previous in replaced.items():
        signal.signal(sig, previous if previous is not None else signal.SIG_DFL)
