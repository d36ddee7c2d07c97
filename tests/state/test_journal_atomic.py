from __future__ import annotations

import json

from aimmat.state import journal
from aimmat.state.atomic import write_json_atomic
from aimmat.state.lock import CampaignLock, lock_held


def test_atomic_write_leaves_no_temp(tmp_path):
    write_json_atomic(tmp_path / "a" / "r.json", {"x": 1})
    write_json_atomic(tmp_path / "a" / "r.json", {"x": 2})
    assert json.loads((tmp_path / "a/r.json").read_text()) == {"x": 2}
    assert [p.name for p in (tmp_path / "a").iterdir()] == ["r.json"]


def test_repair_cuts_half_written_tail(tmp_path):
    journal.append(tmp_path, "apply_start")
    with open(tmp_path / "journal.jsonl", "a") as fh:
        fh.write('{"event": "stage_st')
    assert journal.repair_tail(tmp_path)
    assert [e["event"] for e in journal.read(tmp_path)] == ["apply_start"]
    assert not journal.repair_tail(tmp_path)


def test_open_attempts_found():
    evs = [
        {"event": "stage_start", "set": "s", "cand": "c", "stage": "relax", "attempt": 1},
        {"event": "stage_done", "set": "s", "cand": "c", "stage": "relax", "attempt": 1},
        {"event": "stage_start", "set": "s", "cand": "c", "stage": "scf", "attempt": 1},
    ]
    assert list(journal.open_attempts(evs)) == [("s", "c", "scf", 1)]


def test_lock_detection(tmp_path):
    assert not lock_held(tmp_path)
    with CampaignLock(tmp_path):
        assert lock_held(tmp_path)
    assert not lock_held(tmp_path)
