"""Append-only journal: one JSON event per state change.

Records are the truth; the journal is the history. Record first, journal
second: a crash between the two leaves a start without an end, which
`reconcile` closes from the record on the next apply.
"""

from __future__ import annotations

import json
import os
from datetime import datetime, timezone
from pathlib import Path

JOURNAL = "journal.jsonl"
END_EVENTS = {"stage_done", "stage_failed", "stage_interrupted"}


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def append(campaign_dir: Path, event: str, **fields) -> None:
    line = json.dumps({"t": now_iso(), "event": event, **fields}, sort_keys=True) + "\n"
    fd = os.open(campaign_dir / JOURNAL, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)  # 0666 & ~umask
    try:
        os.write(fd, line.encode())  # one write: a line is never interleaved
        os.fsync(fd)
    finally:
        os.close(fd)


class Events(list):
    """The journal's events, in order; ``skipped``: the line numbers (1-based)
    of lines that were not events and were left out."""

    def __init__(self, events=(), skipped=()):
        super().__init__(events)
        self.skipped: list[int] = list(skipped)

    def warning(self) -> str | None:
        """One line for the user when lines were skipped, else None."""
        return skipped_warning(self.skipped)


def skipped_warning(lines: list[int], shown: int = 10) -> str | None:
    """``journal.jsonl: 2 unreadable line(s) skipped (lines 12, 40)``; None when none were."""
    if not lines:
        return None
    more = f", ... and {len(lines) - shown} more" if len(lines) > shown else ""
    return (f"{JOURNAL}: {len(lines)} unreadable line(s) skipped "
            f"(line{'s' if len(lines) > 1 else ''} {', '.join(map(str, lines[:shown]))}{more})")


def _event(raw: bytes) -> dict | None:
    try:
        ev = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):  # JSONDecodeError is a ValueError
        return None
    return ev if isinstance(ev, dict) and isinstance(ev.get("event"), str) else None


def read(campaign_dir: Path) -> Events:
    """Every event of the journal, in order.

    The journal is a log, not the truth (records are): a line that is not a
    JSON object with an ``"event"`` (garbage from a worker killed mid-append
    on a shared filesystem, a hand edit, a disk error) is skipped and its
    line number kept in ``Events.skipped``, so one bad line never stops an
    apply. Blank lines are not events and not damage.
    """
    path = campaign_dir / JOURNAL
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return Events()
    events, skipped = [], []
    for n, raw in enumerate(data.split(b"\n"), start=1):
        if not raw.strip():
            continue
        ev = _event(raw)
        if ev is None:
            skipped.append(n)
        else:
            events.append(ev)
    return Events(events, skipped)


def repair_tail(campaign_dir: Path) -> bool:
    """Drop a half-written last line left by a kill mid-append. Returns True if cut."""
    path = campaign_dir / JOURNAL
    if not path.exists():
        return False
    data = path.read_bytes()
    if not data or data.endswith(b"\n"):
        return False
    cut = data.rfind(b"\n") + 1
    with open(path, "r+b") as fh:
        fh.truncate(cut)
        fh.flush()
        os.fsync(fh.fileno())
    return True


def stage_id(ev: dict) -> tuple | None:
    """(set, cand, stage) of a stage event; None when a field is missing or of the wrong type."""
    ident = (ev.get("set"), ev.get("cand"), ev.get("stage"))
    return ident if all(isinstance(x, str) for x in ident) else None


def attempt_id(ev: dict) -> tuple | None:
    """(set, cand, stage, attempt) of a stage event; None when incomplete."""
    ident, n = stage_id(ev), ev.get("attempt")
    return ident + (n,) if ident is not None and isinstance(n, int) and not isinstance(n, bool) else None


def open_attempts(events: list[dict]) -> dict[tuple, dict]:
    """Attempts started and not ended, keyed by (set, cand, stage, attempt).

    An event without those fields names no attempt and is passed over."""
    open_: dict[tuple, dict] = {}
    for ev in events:
        kind = ev.get("event")
        if kind != "stage_start" and kind not in END_EVENTS:
            continue
        key = attempt_id(ev)
        if key is None:
            continue
        if kind == "stage_start":
            open_[key] = ev
        else:
            open_.pop(key, None)
    return open_


def verify(campaign_dir: Path, records: dict[tuple, "object"]) -> list[str]:
    """Problems between journal and records; empty when consistent.

    ``records`` maps (set, cand, stage) to a StageRecord. Every started attempt
    must have ended, and each stage's last end event must agree with its record.
    Unreadable lines and events without their fields are passed over (``read``
    reports the lines).
    """
    events = read(campaign_dir)
    problems = [f"attempt {k} started and never ended" for k in open_attempts(events)]
    last: dict[tuple, dict] = {}
    for ev in events:
        if ev.get("event") in END_EVENTS and (ident := stage_id(ev)) is not None:
            last[ident] = ev
    for key, rec in records.items():
        ev = last.get(key)
        if ev is None:
            problems.append(f"{key}: record without journal events")
            continue
        want = {"done": "stage_done", "failed": "stage_failed"}.get(rec.status)
        if ev["event"] != want or ev.get("key") != rec.key:
            problems.append(f"{key}: journal ends with {ev['event']} {str(ev.get('key') or '')[:8]}, "
                            f"record is {rec.status} {str(rec.key or '')[:8]}")
    return problems
