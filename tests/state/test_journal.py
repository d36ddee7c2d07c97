"""The append-only journal: appends, reads, open attempts, tail repair, verify."""

from __future__ import annotations

import json
import threading
from datetime import datetime
from types import SimpleNamespace

from aimmat.state import journal
from aimmat.state.journal import END_EVENTS, JOURNAL, append, open_attempts, read, repair_tail, verify


def test_append_writes_one_sorted_json_line_per_event(tmp_path):
    append(tmp_path, "apply_start", jobs=2)
    append(tmp_path, "stage_start", set="s", cand="c", stage="relax", attempt=1)
    lines = (tmp_path / JOURNAL).read_text().splitlines()
    assert len(lines) == 2
    first = json.loads(lines[0])
    assert first["event"] == "apply_start" and first["jobs"] == 2
    assert list(first) == sorted(first)  # sorted keys: lines are stable text
    t = datetime.fromisoformat(first["t"])
    assert t.utcoffset().total_seconds() == 0  # UTC, with its offset
    assert [e["event"] for e in read(tmp_path)] == ["apply_start", "stage_start"]
    assert read(tmp_path)[1] == {**json.loads(lines[1])}


def test_now_iso_is_utc_milliseconds():
    t = journal.now_iso()
    assert t.endswith("+00:00") and len(t.split(".")[1]) == len("123+00:00")


def test_read_of_missing_journal_is_empty_and_blank_lines_are_skipped(tmp_path):
    assert read(tmp_path) == []
    (tmp_path / JOURNAL).write_text('{"event": "a"}\n\n   \n{"event": "b"}\n')
    assert [e["event"] for e in read(tmp_path)] == ["a", "b"]


def test_appends_from_many_threads_are_never_interleaved(tmp_path):
    pad = "x" * 5000  # larger than a pipe buffer: a split write would show

    def worker(k):
        for i in range(40):
            append(tmp_path, "tick", worker=k, i=i, pad=pad)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    events = read(tmp_path)  # every line parses
    assert len(events) == 160
    for k in range(4):
        assert [e["i"] for e in events if e["worker"] == k] == list(range(40))  # in order per writer


def test_repair_cuts_a_truncated_last_line(tmp_path):
    append(tmp_path, "apply_start")
    append(tmp_path, "stage_start", set="s", cand="c", stage="relax", attempt=1)
    path = tmp_path / JOURNAL
    whole = path.read_bytes()
    path.write_bytes(whole[:-7])  # killed in the middle of the second append
    assert repair_tail(tmp_path) is True
    assert path.read_bytes() == whole[: whole.index(b"\n") + 1]
    assert [e["event"] for e in read(tmp_path)] == ["apply_start"]
    assert repair_tail(tmp_path) is False  # nothing left to cut
    append(tmp_path, "apply_end")  # and the journal is appendable again
    assert [e["event"] for e in read(tmp_path)] == ["apply_start", "apply_end"]


def test_repair_of_a_single_partial_line_empties_the_journal(tmp_path):
    (tmp_path / JOURNAL).write_bytes(b'{"event": "apply_st')
    assert repair_tail(tmp_path) is True
    assert (tmp_path / JOURNAL).read_bytes() == b"" and read(tmp_path) == []


def test_repair_leaves_sound_or_missing_journals_alone(tmp_path):
    assert repair_tail(tmp_path) is False and not (tmp_path / JOURNAL).exists()
    (tmp_path / JOURNAL).write_bytes(b"")
    assert repair_tail(tmp_path) is False
    append(tmp_path, "a")
    before = (tmp_path / JOURNAL).read_bytes()
    assert repair_tail(tmp_path) is False and (tmp_path / JOURNAL).read_bytes() == before


def _ev(event, stage="relax", attempt=1, cand="c", **kw):
    return {"event": event, "set": "s", "cand": cand, "stage": stage, "attempt": attempt, **kw}


def test_open_attempts_closes_on_every_end_event():
    assert END_EVENTS == {"stage_done", "stage_failed", "stage_interrupted"}
    evs = []
    for i, end in enumerate(sorted(END_EVENTS)):
        evs += [_ev("stage_start", attempt=i), _ev(end, attempt=i)]
    evs.append(_ev("stage_start", attempt=9))
    evs.append(_ev("apply_end"))  # events of other kinds are ignored
    opened = open_attempts(evs)
    assert list(opened) == [("s", "c", "relax", 9)] and opened[("s", "c", "relax", 9)] == evs[-2]


def test_open_attempts_keys_by_attempt_and_candidate():
    evs = [_ev("stage_start", attempt=1), _ev("stage_start", attempt=2), _ev("stage_done", attempt=1),
           _ev("stage_start", cand="d"), _ev("stage_done", stage="scf")]  # an end without a start is harmless
    assert sorted(open_attempts(evs)) == [("s", "c", "relax", 2), ("s", "d", "relax", 1)]
    assert open_attempts([]) == {}


def test_open_attempts_keeps_the_latest_start_of_a_restarted_attempt():
    evs = [_ev("stage_start", pid=1), _ev("stage_start", pid=2)]
    assert open_attempts(evs)[("s", "c", "relax", 1)]["pid"] == 2


def _rec(status, key):
    return SimpleNamespace(status=status, key=key)


def test_verify_consistent_journal_has_no_problems(tmp_path):
    append(tmp_path, "stage_start", set="s", cand="c", stage="relax", attempt=1)
    append(tmp_path, "stage_failed", set="s", cand="c", stage="relax", attempt=1, key="k0" * 32)
    append(tmp_path, "stage_start", set="s", cand="c", stage="relax", attempt=2)
    append(tmp_path, "stage_done", set="s", cand="c", stage="relax", attempt=2, key="k1" * 32)
    assert verify(tmp_path, {("s", "c", "relax"): _rec("done", "k1" * 32)}) == []


def test_verify_names_each_inconsistency(tmp_path):
    append(tmp_path, "stage_start", set="s", cand="c", stage="relax", attempt=1)
    append(tmp_path, "stage_done", set="s", cand="c", stage="relax", attempt=1, key="a" * 64)
    append(tmp_path, "stage_start", set="s", cand="c", stage="scf", attempt=1)
    records = {("s", "c", "relax"): _rec("failed", "a" * 64),  # journal says done
               ("s", "d", "relax"): _rec("done", "b" * 64)}  # no journal events at all
    problems = verify(tmp_path, records)
    assert len(problems) == 3
    assert any("('s', 'c', 'scf', 1)" in p and "never ended" in p for p in problems)
    assert any("('s', 'd', 'relax')" in p and "record without journal events" in p for p in problems)
    assert any("('s', 'c', 'relax')" in p and "stage_done" in p and "failed" in p for p in problems)


def test_verify_sees_a_key_mismatch(tmp_path):
    append(tmp_path, "stage_start", set="s", cand="c", stage="relax", attempt=1)
    append(tmp_path, "stage_done", set="s", cand="c", stage="relax", attempt=1, key="a" * 64)
    problems = verify(tmp_path, {("s", "c", "relax"): _rec("done", "b" * 64)})
    assert len(problems) == 1 and "aaaaaaaa" in problems[0] and "bbbbbbbb" in problems[0]
