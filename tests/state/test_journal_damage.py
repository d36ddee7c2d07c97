"""A damaged journal never stops an apply.

The journal is a log, not the truth (records are). On a cluster filesystem
where workers append, a line can be garbage: one such line in the middle
made every later apply fail with a JSONDecodeError traceback while diff said
"No changes". Bad lines are skipped and reported; apply's result is that of
a run without them; ``verify`` and ``open_attempts`` pass over events that
lack their fields."""

from __future__ import annotations

import json
from types import SimpleNamespace

import yaml

from aimmat.apply import executor
from aimmat.state import journal
from aimmat.state.journal import JOURNAL, append, open_attempts, read, verify
from aimmat.state.scan import scan
from tests.helpers import emt_manifest, final_records, make_emt_campaign

GARBAGE = [
    b'{"event": "stage_st{"attempt": 1, "event": "stage_done"',  # a killed append glued to the next one
    b"\x00\x00\x00\x00\x00\x00",  # a zero-filled block after a crash
    b"\xff\xfe not utf-8 \x80",
    b"[1, 2, 3]",  # JSON, not an object
    b'"stage_done"',
    b"null",
    b'{"set": "s", "cand": "c"}',  # an object without "event"
    b'{"event": 7}',  # "event" that is not a name
    b"<<<<<<< HEAD",  # a merge marker from a hand edit
]


def _write_lines(path, lines: list[bytes]) -> None:
    path.write_bytes(b"".join(line + b"\n" for line in lines))


def test_bad_lines_are_skipped_and_named_by_line_number(tmp_path):
    good = [json.dumps({"event": f"e{i}", "i": i}).encode() for i in range(3)]
    _write_lines(tmp_path / JOURNAL, [good[0], GARBAGE[0], b"", good[1], *GARBAGE[1:], good[2]])
    events = read(tmp_path)
    assert [e["event"] for e in events] == ["e0", "e1", "e2"]
    assert events == [json.loads(g) for g in good]  # still a plain list of events
    bad = [2] + list(range(5, 5 + len(GARBAGE) - 1))  # line 3 is blank: not damage
    assert events.skipped == bad
    assert events.warning() == f"journal.jsonl: {len(bad)} unreadable line(s) skipped (lines {', '.join(map(str, bad))})"


def test_warning_text():
    assert journal.skipped_warning([]) is None
    assert journal.skipped_warning([12, 40]) == "journal.jsonl: 2 unreadable line(s) skipped (lines 12, 40)"
    assert journal.skipped_warning([3]) == "journal.jsonl: 1 unreadable line(s) skipped (line 3)"
    many = journal.skipped_warning(list(range(1, 31)))
    assert many.startswith("journal.jsonl: 30 unreadable line(s) skipped (lines 1, 2,") and many.endswith("... and 20 more)")


def test_a_sound_journal_reports_nothing(tmp_path):
    assert read(tmp_path).skipped == [] and read(tmp_path).warning() is None
    append(tmp_path, "apply_start")
    assert read(tmp_path).skipped == [] and read(tmp_path).warning() is None


def test_appends_after_garbage_are_read(tmp_path):
    append(tmp_path, "apply_start")
    with open(tmp_path / JOURNAL, "ab") as fh:
        fh.write(b"garbage\n")
    append(tmp_path, "apply_end")
    events = read(tmp_path)
    assert [e["event"] for e in events] == ["apply_start", "apply_end"] and events.skipped == [2]


def _ev(event, **kw):
    return {"event": event, **kw}


INCOMPLETE = [
    _ev("stage_start"),  # no set, cand, stage, attempt
    _ev("stage_start", set="s", cand="c", stage="relax"),  # no attempt
    _ev("stage_done", set="s", cand="c"),
    _ev("stage_failed", set=["s"], cand={"c": 1}, stage="relax", attempt=1),  # unhashable fields
    _ev("stage_start", set="s", cand="c", stage="relax", attempt=[1]),
    _ev("stage_interrupted", set=None, cand="c", stage="relax", attempt=1),
    {"set": "s", "cand": "c", "stage": "relax", "attempt": 1},  # no event at all
]


def test_open_attempts_passes_over_events_without_their_fields():
    start = _ev("stage_start", set="s", cand="c", stage="relax", attempt=2)
    assert open_attempts(INCOMPLETE) == {}
    assert open_attempts([*INCOMPLETE, start, *INCOMPLETE]) == {("s", "c", "relax", 2): start}


def test_verify_passes_over_events_without_their_fields(tmp_path):
    for ev in INCOMPLETE:
        append(tmp_path, ev.pop("event", "note"), **ev)
    append(tmp_path, "stage_start", set="s", cand="c", stage="relax", attempt=1)
    append(tmp_path, "stage_done", set="s", cand="c", stage="relax", attempt=1, key="k" * 64)
    append(tmp_path, "stage_done", set="s", cand="d", stage="relax", attempt=1, key=None)  # a key that is no string
    append(tmp_path, "stage_done", set="s", cand="e", stage="relax", attempt=1)  # no key
    with open(tmp_path / JOURNAL, "ab") as fh:
        fh.write(b"\n".join(GARBAGE) + b"\n")
    recs = {("s", "c", "relax"): SimpleNamespace(status="done", key="k" * 64)}
    assert verify(tmp_path, recs) == []
    recs[("s", "d", "relax")] = SimpleNamespace(status="done", key="d" * 64)
    recs[("s", "e", "relax")] = SimpleNamespace(status="done", key="e" * 64)
    problems = verify(tmp_path, recs)
    assert len(problems) == 2 and all("journal ends with stage_done" in p and "record is done" in p for p in problems)


# ------------------------------------------------------------ apply end to end
def _manifest(tmp, fmax=0.05):
    m = emt_manifest(stages=("screen", "relax"), profile={"fmax_ev_per_a": fmax})
    m["candidate_sets"] = m["candidate_sets"][:1]  # Cu, Al, Ni: quick
    return make_emt_campaign(tmp, m)


def _comparable(events) -> dict[tuple, list[dict]]:
    """Each candidate's events in order (candidates run in any order), without
    what differs between any two runs (times, pids, wall times)."""
    drop = {"t", "pid", "wall_s", "started"}
    out: dict[tuple, list[dict]] = {}
    for e in events:
        out.setdefault((e.get("set"), e.get("cand")), []).append({k: v for k, v in e.items() if k not in drop})
    return out


def test_apply_over_a_damaged_journal_equals_a_run_without_the_damage(tmp_path, cli, monkeypatch):
    seen = []
    real = executor.reconcile_journal

    def reconcile(cdir, observed):
        seen.append((cdir.parent.parent.name, real(cdir, observed)))
        return seen[-1][1]

    monkeypatch.setattr(executor, "reconcile_journal", reconcile)
    runs = {}
    for name in ("clean", "damaged"):
        path = _manifest(tmp_path / name)
        assert cli("apply", path, "-q")[0] == 0
        camp = tmp_path / name / "camp/c"
        # a crash left an attempt open (reconcile closes it from the done record)
        append(camp, "stage_start", set="1-element", cand="Cu", stage="relax", attempt=1, key="x" * 64)
        runs[name] = (path, camp)

    camp = runs["damaged"][1]
    lines = (camp / JOURNAL).read_bytes().split(b"\n")
    mid = len(lines) // 2
    _write_lines(camp / JOURNAL, [*lines[:mid], GARBAGE[0], *lines[mid:-1], *GARBAGE[1:]])
    bad = [mid + 1] + list(range(len(lines) + 1, len(lines) + len(GARBAGE)))

    for name, (path, camp) in runs.items():
        m = yaml.safe_load(path.read_text())
        m["profiles"]["emt"]["fmax_ev_per_a"] = 0.03  # the relaxes rerun
        path.write_text(yaml.safe_dump(m))
        code, out, err = cli("apply", path, "-q")
        assert code == 0, err
        assert "Traceback" not in err and "JSONDecodeError" not in err
        assert "3 stage task(s) run" in out
        assert cli("diff", path, "--exit-code")[0] == 0

    assert seen[-2:] == [("clean", None),
                         ("damaged", f"journal.jsonl: {len(bad)} unreadable line(s) skipped (lines {', '.join(map(str, bad))})")]
    clean, damaged = runs["clean"][1], runs["damaged"][1]
    assert final_records(damaged) == final_records(clean)
    assert _comparable(read(damaged)) == _comparable(read(clean))
    assert read(damaged).skipped == bad and read(clean).skipped == []
    for camp in (clean, damaged):
        obs = scan(camp)
        recs = {(s, c, st): r for (s, c), co in obs.candidates.items() for st, r in co.stages.items()}
        assert journal.verify(camp, recs) == []
        assert open_attempts(read(camp)) == {}


def test_apply_says_it_skipped_journal_lines(tmp_path, cli):
    """The skipped lines are reported on stderr by the apply that met them."""
    from tests.helpers import emt_manifest, make_emt_campaign

    path = make_emt_campaign(tmp_path, emt_manifest(stages=("screen",)))
    assert cli("apply", path, "-q", "--jobs", "1")[0] == 0
    journal = tmp_path / "camp/c/journal.jsonl"
    lines = journal.read_text().splitlines()
    journal.write_text("\n".join(lines[:2] + ["{not json"] + lines[2:]) + "\n")
    code, out, err = cli("apply", path, "-q", "--jobs", "1")
    assert code == 0 and "Nothing to do" in out
    assert "warning: journal.jsonl: 1 unreadable line(s) skipped (line 3)" in err
