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
    fd = os.open(campaign_dir / JOURNAL, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())  # one write: a line is never interleaved
        os.fsync(fd)
    finally:
        os.close(fd)


def read(campaign_dir: Path) -> list[dict]:
    path = campaign_dir / JOURNAL
    if not path.exists():
        return []
    events = []
    for raw in path.read_text().splitlines():
        if raw.strip():
            events.append(json.loads(raw))
    return events


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


def open_attempts(events: list[dict]) -> dict[tuple, dict]:
    """Attempts started and not ended, keyed by (set, cand, stage, attempt)."""
    open_: dict[tuple, dict] = {}
    for ev in events:
        key = (ev.get("set"), ev.get("cand"), ev.get("stage"), ev.get("attempt"))
        if ev["event"] == "stage_start":
            open_[key] = ev
        elif ev["event"] in END_EVENTS:
            open_.pop(key, None)
    return open_


def verify(campaign_dir: Path, records: dict[tuple, "object"]) -> list[str]:
    """Problems between journal and records; empty when consistent.

    ``records`` maps (set, cand, stage) to a StageRecord. Every started attempt
    must have ended, and each stage's last end event must agree with its record.
    """
    events = read(campaign_dir)
    problems = [f"attempt {k} started and never ended" for k in open_attempts(events)]
    last: dict[tuple, dict] = {}
    for ev in events:
        if ev["event"] in END_EVENTS:
            last[(ev["set"], ev["cand"], ev["stage"])] = ev
    for key, rec in records.items():
        ev = last.get(key)
        if ev is None:
            problems.append(f"{key}: record without journal events")
            continue
        want = {"done": "stage_done", "failed": "stage_failed"}.get(rec.status)
        if ev["event"] != want or ev.get("key") != rec.key:
            problems.append(f"{key}: journal ends with {ev['event']} {ev.get('key', '')[:8]}, record is {rec.status} {rec.key[:8]}")
    return problems
