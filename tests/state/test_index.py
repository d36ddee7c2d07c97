"""The record index: a cache whose presence, absence or damage changes no result."""

from __future__ import annotations

import hashlib
import json
import marshal
import os
import shutil
import sqlite3
import time

import pytest
import yaml

from aimmat.apply.prepare import prepare
from aimmat.manifest import load_manifest
from aimmat.plan import plan
from aimmat.state import index as idx
from aimmat.state.index_write import save_index
from aimmat.state.layout import INDEX_FILE
from aimmat.state.scan import scan
from aimmat.state.source_hashes import stats
from aimmat.state.summary import CandidateSummary
from aimmat.state.show import status_table
from tests.helpers import applied_campaign, tree_digest


@pytest.fixture(scope="module")
def applied(tmp_path_factory):
    """An EMT campaign applied once (screen + relax), copied by each test."""
    return applied_campaign(tmp_path_factory.mktemp("indexed"), ("screen", "relax"))


@pytest.fixture
def work(applied, tmp_path, monkeypatch):
    """A copy of the applied campaign, with its (now invalid) index removed.
    No racy window: files written before a scan count as settled, so the
    index's rows are trusted and the signature comparison is what decides."""
    monkeypatch.setattr(idx, "RACY_NS", 0)
    work = tmp_path / "w"
    shutil.copytree(applied, work)
    (work / "camp/c" / INDEX_FILE).unlink(missing_ok=True)
    return work


def _camp(work):
    return work / "camp" / "c"


def _index(cli, manifest) -> None:
    """Refresh the index: apply's job (it has nothing else to do here)."""
    code, out, err = cli("apply", manifest, "-q", "--jobs", "1")
    assert code == 0 and "Nothing to do" in out, err


def _plan(manifest, observed):
    return plan(prepare(load_manifest(manifest), observed, generate=False).resolved, observed)


def _record_files(camp) -> list:
    return sorted(camp.glob("*/*/candidate.json")) + sorted(camp.glob("*/*/*/record.json"))


def _outputs(cli, manifest) -> dict:
    out = {}
    for cmd in (("diff", "--json"), ("status", "--json"), ("evidence",)):
        code, text, err = cli(cmd[0], manifest, *cmd[1:])
        assert code == 0 and err == "", (cmd, err)
        out[cmd[0]] = json.loads(text)
    return out


def _rewrite_same_size(path, old: str, new: str) -> None:
    """Overwrite in place (same inode, same size), as an editor or a stray script would."""
    assert len(old) == len(new)
    text = path.read_text()
    assert old in text
    with open(path, "r+") as fh:
        fh.write(text.replace(old, new, 1))
    assert len(path.read_text()) == len(text)


def _settle(path) -> None:
    """Wait until a change to ``path`` would get a new ctime tick (coarse file-system clocks)."""
    before = os.stat(path).st_ctime_ns
    while time.time_ns() <= before + 20_000_000:
        time.sleep(0.01)


def test_indexed_scan_equals_plain_scan(work, cli):
    camp, manifest = _camp(work), work / "manifest.yaml"
    assert not (camp / INDEX_FILE).exists()
    cold = _outputs(cli, manifest)
    assert not (camp / INDEX_FILE).exists()  # diff, status and evidence write nothing
    _index(cli, manifest)
    n = len(_record_files(camp))
    assert stats(camp) == {"records": n, "dirs": 5}
    warm = scan(camp)
    plain = scan(camp, use_index=False)
    assert warm.index.hits == n  # every record came from the index ...
    assert warm.candidates == plain.candidates and warm.set_dirs == plain.set_dirs  # ... and equals the files
    for key, cobs in plain.candidates.items():
        assert warm.candidates[key].record.model_dump() == cobs.record.model_dump()
        assert {s: r.model_dump() for s, r in warm.candidates[key].stages.items()} == {s: r.model_dump() for s, r in cobs.stages.items()}
        assert type(warm.candidates[key].stages["relax"].attempts[0]).__name__ == "Attempt"
    spec = load_manifest(manifest)
    assert status_table(spec, warm) == status_table(spec, plain)
    assert _plan(manifest, warm).to_json() == _plan(manifest, plain).to_json()
    assert _outputs(cli, manifest) == cold
    code, out, _ = cli("diff", manifest, "--exit-code")  # the index file is no orphan, no change
    assert code == 0 and "No changes" in out


def test_same_size_rewrite_with_new_mtime_is_picked_up(work, cli):
    camp, manifest = _camp(work), work / "manifest.yaml"
    _index(cli, manifest)
    cand = camp / "1-element/Cu/candidate.json"
    _settle(cand)
    size = cand.stat().st_size
    _rewrite_same_size(cand, '"formula": "Cu"', '"formula": "Zz"')
    assert cand.stat().st_size == size
    obs = scan(camp)
    assert obs.candidates[("1-element", "Cu")].record.formula == "Zz"
    assert obs.index.hits == len(_record_files(camp)) - 1  # only the rewritten file was read again
    rows = {r["candidate"]: r["formula"] for r in json.loads(cli("status", manifest, "--json")[1])["candidates"]}
    assert rows["Cu"] == "Zz"


def test_same_size_rewrite_with_restored_mtime_is_picked_up(work, cli):
    """``cp -p`` or ``touch -d`` can restore size and mtime; the ctime still moves."""
    camp, manifest = _camp(work), work / "manifest.yaml"
    _index(cli, manifest)
    rec = camp / "1-element/Cu/relax/record.json"
    before = rec.stat()
    _settle(rec)
    _rewrite_same_size(rec, '"formula": "Cu"', '"formula": "Zz"')
    os.utime(rec, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = rec.stat()
    assert (after.st_size, after.st_mtime_ns, after.st_ino) == (before.st_size, before.st_mtime_ns, before.st_ino)
    assert after.st_ctime_ns != before.st_ctime_ns
    assert scan(camp).candidates[("1-element", "Cu")].stages["relax"].outputs["formula"] == "Zz"


def test_rewrite_with_new_size_is_picked_up(work, cli):
    camp, manifest = _camp(work), work / "manifest.yaml"
    _index(cli, manifest)
    screen = camp / "1-element/Cu/screen/record.json"
    text = screen.read_text()
    with open(screen, "w") as fh:  # in place, one byte longer: the screen now fails
        fh.write(text.replace('"strict_pass": true', '"strict_pass": false'))
    status = json.loads(cli("status", manifest, "--json")[1])
    assert {r["candidate"]: r["status"] for r in status["candidates"]}["Cu"] == "screened_out"
    acts = {(a["cand_id"], a["stage"]): a for a in json.loads(cli("diff", manifest, "--json")[1])["actions"]}
    assert acts[("Cu", "screen")]["state"] == "screened_out"
    assert acts[("Cu", "relax")]["action"] == "blocked"


def test_added_and_removed_folders_are_seen(work, cli):
    camp, manifest = _camp(work), work / "manifest.yaml"
    _index(cli, manifest)
    _settle(camp / "1-element/Cu")
    (camp / "1-element/Cu/elastic").mkdir()  # a stage the manifest does not enable
    shutil.rmtree(camp / "1-element/Al/relax")
    shutil.copytree(camp / "1-element/Ni", camp / "1-element/Zn")  # no source file gives it
    acts = {(a["cand_id"], a["stage"]): a for a in json.loads(cli("diff", manifest, "--json")[1])["actions"]}
    assert acts[("Cu", "elastic")]["action"] == "orphan"
    assert acts[("Al", "relax")]["action"] == "create"
    assert acts[("Zn", "candidate")]["action"] == "orphan"
    plain = scan(camp, use_index=False)
    assert scan(camp).candidates == plain.candidates
    cli("apply", manifest, "-q", "--jobs", "1", "--target", "2-element")  # refreshes the index, runs nothing of 1-element
    n = len(_record_files(camp))
    assert stats(camp)["records"] == n  # the vanished relax row was deleted, Zn's rows added


def test_deleting_the_index_changes_no_output(work, cli):
    camp, manifest = _camp(work), work / "manifest.yaml"
    _index(cli, manifest)
    m = yaml.safe_load(manifest.read_text())
    m["profiles"]["emt"]["fmax_ev_per_a"] = 0.02  # something pending, so the plan is not trivial
    manifest.write_text(yaml.safe_dump(m))
    with_index = _outputs(cli, manifest)
    assert with_index["diff"]["summary"]["rerun"] == 5
    (camp / INDEX_FILE).unlink()
    assert _outputs(cli, manifest) == with_index
    assert not (camp / INDEX_FILE).exists()  # read-only commands made none


@pytest.mark.parametrize("damage", ["garbage", "truncated", "other schema", "empty"])
def test_damaged_index_is_rebuilt_silently(work, cli, damage):
    camp, manifest = _camp(work), work / "manifest.yaml"
    _index(cli, manifest)
    good = _outputs(cli, manifest)
    path = camp / INDEX_FILE
    if damage == "garbage":
        path.write_bytes(b"not a database\n" * 500)
    elif damage == "truncated":
        path.write_bytes(path.read_bytes()[: 3 * 4096 + 100])
    elif damage == "empty":
        path.write_bytes(b"")
    else:
        with sqlite3.connect(path) as conn:
            conn.execute("UPDATE meta SET v = 'from another aimmat' WHERE k = 'fingerprint'")
    assert _outputs(cli, manifest) == good
    _index(cli, manifest)  # apply rebuilds it
    assert stats(camp)["records"] == len(_record_files(camp))
    assert scan(camp).index.hits == len(_record_files(camp))


def test_rescan_reads_the_files_and_rebuilds_the_index(work, cli):
    camp, manifest = _camp(work), work / "manifest.yaml"
    _index(cli, manifest)

    def tamper():
        """A row whose signature still matches but whose content is wrong: only --rescan can tell."""
        with sqlite3.connect(camp / INDEX_FILE) as conn:
            entries = list(marshal.loads(conn.execute("SELECT recs FROM cands WHERE path = '1-element/Cu'").fetchone()[0]))
            i = next(i for i, e in enumerate(entries) if e[0] is None)  # candidate.json's summary
            summary = list(entries[i][2])
            summary[CandidateSummary._fields.index("formula")] = "Zz"
            entries[i] = (None, entries[i][1], tuple(summary))
            conn.execute("UPDATE cands SET recs = ? WHERE path = '1-element/Cu'", (marshal.dumps(tuple(entries)),))

    def formula():
        return {r["candidate"]: r["formula"] for r in json.loads(cli("status", manifest, "--json")[1])["candidates"]}["Cu"]

    tamper()
    assert formula() == "Zz"  # trusted: the signature matches
    code, out, _ = cli("status", manifest, "--json", "--rescan")
    assert code == 0 and {r["candidate"]: r["formula"] for r in json.loads(out)["candidates"]}["Cu"] == "Cu"
    assert formula() == "Zz"  # status is read-only: the index is as it was
    for cmd in ("diff", "evidence"):
        code, out, _ = cli(cmd, manifest, "--rescan")
        assert code == 0 and '"Zz"' not in out, cmd
    assert cli("apply", manifest, "-q", "--jobs", "1", "--rescan")[0] == 0
    assert formula() == "Cu"  # rebuilt from the files
    # a body (the full record) is trusted the same way, and rebuilt by --rescan
    with sqlite3.connect(camp / INDEX_FILE) as conn:
        rel = "1-element/Cu/candidate.json"
        body = json.loads(conn.execute("SELECT body FROM bodies WHERE path = ?", (rel,)).fetchone()[0])
        body["formula"] = "Zz"
        conn.execute("UPDATE bodies SET body = ? WHERE path = ?", (json.dumps(body).encode(), rel))
    assert scan(camp).candidates[("1-element", "Cu")].record.formula == "Zz"
    assert scan(camp, rescan=True).candidates[("1-element", "Cu")].record.formula == "Cu"
    assert cli("apply", manifest, "-q", "--jobs", "1", "--rescan")[0] == 0
    assert scan(camp).candidates[("1-element", "Cu")].record.formula == "Cu"


def test_recent_files_are_not_trusted(work, cli, monkeypatch):
    """A file changed within RACY_NS of the scan could be rewritten again in
    the same timestamp tick with the same size: its row is stored so that it
    never matches, and the file is read again."""
    monkeypatch.setattr(idx, "RACY_NS", 3600 * 10**9)
    camp, manifest = _camp(work), work / "manifest.yaml"
    _index(cli, manifest)
    with sqlite3.connect(camp / INDEX_FILE) as conn:
        assert {m for (m,) in conn.execute("SELECT mtime_ns FROM bodies")} == {-1}
        assert {m for (m,) in conn.execute("SELECT mtime_ns FROM cands")} == {-1}  # folder signatures too
    obs = scan(camp)
    assert obs.index.hits == 0
    assert obs.candidates == scan(camp, use_index=False).candidates


def test_scan_and_failed_commands_write_no_index(work, cli):
    camp, manifest = _camp(work), work / "manifest.yaml"
    before = tree_digest(camp)
    scan(camp)
    assert tree_digest(camp) == before
    (work / "structures/1-element/Broken.cif").write_text("data_x\n_cell_length_a oops\n")
    for cmd in ("diff", "apply"):
        code, _, err = cli(cmd, manifest)
        assert code == 3 and "Broken.cif" in err
    assert tree_digest(camp) == before
    (work / "structures/1-element/Broken.cif").unlink()
    for cmd in ("diff", "status", "evidence"):
        assert cli(cmd, manifest)[0] == 0
    assert tree_digest(camp) == before  # read-only commands write no index either
    _index(cli, manifest)
    assert INDEX_FILE in set(tree_digest(camp))
    # the index holds the records' contents: no more readable than the record files
    record_mode = os.stat(_record_files(camp)[0]).st_mode & 0o777
    assert os.stat(camp / INDEX_FILE).st_mode & 0o777 & ~record_mode == 0


def test_apply_writes_the_index_under_its_lock(work, cli):
    camp, manifest = _camp(work), work / "manifest.yaml"
    shutil.rmtree(camp / "1-element/Cu/relax")
    code, out, _ = cli("apply", manifest, "-q", "--jobs", "1")
    assert code == 0 and "relax done 1" in out
    assert stats(camp)["records"] == len(_record_files(camp))
    assert scan(camp).index.hits == len(_record_files(camp))
    # apply lists every folder (temp files), yet an apply with nothing to do rewrites no row
    before = (camp / INDEX_FILE).read_bytes()
    code, out, _ = cli("apply", manifest, "-q", "--jobs", "1")
    assert code == 0 and "Nothing to do" in out
    assert (camp / INDEX_FILE).read_bytes() == before


def test_locked_index_falls_back_to_the_files(work, cli, monkeypatch):
    monkeypatch.setattr(idx, "TIMEOUT_S", 0.05)
    camp, manifest = _camp(work), work / "manifest.yaml"
    _index(cli, manifest)
    good = _outputs(cli, manifest)
    cand = camp / "1-element/Cu/candidate.json"
    _settle(cand)
    _rewrite_same_size(cand, '"formula": "Cu"', '"formula": "Zz"')
    holder = sqlite3.connect(camp / INDEX_FILE, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")  # another process mid-write
    try:
        before = (camp / INDEX_FILE).read_bytes()
        obs = scan(camp)
        assert obs.index.hits == 0 and obs.candidates[("1-element", "Cu")].record.formula == "Zz"
        assert save_index(obs.index) is False
        now = _outputs(cli, manifest)
        assert now["diff"] == good["diff"]
        assert {r["candidate"]: r["formula"] for r in now["status"]["candidates"]}["Cu"] == "Zz"
        assert (camp / INDEX_FILE).read_bytes() == before
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert scan(camp).index.hits == len(_record_files(camp)) - 1


def test_plan_reads_summaries_and_decodes_records_only_when_asked(work, cli):
    """A warm diff compares the packed summaries; no full record is decoded
    (the bodies stay in the index) unless a command asks for one."""
    camp, manifest = _camp(work), work / "manifest.yaml"
    _index(cli, manifest)
    warm, plain = scan(camp), scan(camp, use_index=False)
    assert warm.index.hits == len(_record_files(camp))
    assert _plan(manifest, warm).to_json() == _plan(manifest, plain).to_json()
    assert all(c._pending for c in warm.candidates.values())  # nothing was decoded by the plan
    key = ("1-element", "Cu")
    with sqlite3.connect(camp / INDEX_FILE) as conn:  # a body gone from the index: the file answers
        conn.execute("DELETE FROM bodies WHERE path = ?", ("1-element/Cu/relax/record.json",))
    assert warm.candidates[key].stages["relax"].model_dump() == plain.candidates[key].stages["relax"].model_dump()
    assert warm.candidates[key].record.model_dump() == plain.candidates[key].record.model_dump()
    assert not warm.candidates[key]._pending


def test_source_hashes_are_cached_by_signature(work, cli):
    """load_manifest takes a source file's sha256 from the index while the
    file's stat signature matches; an in-place edit that keeps size and
    mtime still changes ctime and is hashed again; --rescan hashes all."""
    camp, manifest = _camp(work), work / "manifest.yaml"
    _index(cli, manifest)
    cif = work / "structures/1-element/Cu.cif"
    with sqlite3.connect(camp / INDEX_FILE) as conn:
        rows = dict(conn.execute("SELECT path, sha256 FROM sources").fetchall())
    spec = load_manifest(manifest)
    assert rows == {str(s.file): s.sha256 for s in spec.candidates}
    assert rows[str(cif)] == hashlib.sha256(cif.read_bytes()).hexdigest()
    with sqlite3.connect(camp / INDEX_FILE) as conn:  # a wrong hash under a matching signature is trusted ...
        conn.execute("UPDATE sources SET sha256 = ? WHERE path = ?", ("0" * 64, str(cif)))
    acts = {(a["cand_id"], a["stage"]): a for a in json.loads(cli("diff", manifest, "--json")[1])["actions"]}
    assert acts[("Cu", "import")]["action"] == "rerun" and "source file sha256" in acts[("Cu", "import")]["reasons"][0]
    code, out, _ = cli("diff", manifest, "--json", "--rescan")  # ... until --rescan hashes the files
    assert code == 0 and json.loads(out)["has_changes"] is False
    assert json.loads(cli("diff", manifest, "--json")[1])["has_changes"] is True  # diff wrote nothing
    assert cli("apply", manifest, "-q", "--jobs", "1", "--rescan")[0] == 0
    assert json.loads(cli("diff", manifest, "--json")[1])["has_changes"] is False  # apply fixed the rows
    # an in-place edit, same size, mtime restored: ctime tells
    _settle(cif)
    before = os.stat(cif)
    text = cif.read_text()
    i = text.index("_cell_length_a")
    j = text.index("\n", i)
    old = text[i:j]
    new = old[:-1] + ("1" if old[-1] != "1" else "2")
    _rewrite_same_size(cif, old, new)
    os.utime(cif, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert (os.stat(cif).st_size, os.stat(cif).st_mtime_ns) == (before.st_size, before.st_mtime_ns)
    acts = {(a["cand_id"], a["stage"]): a for a in json.loads(cli("diff", manifest, "--json")[1])["actions"]}
    assert acts[("Cu", "import")]["action"] == "rerun"


@pytest.mark.parametrize("bulk_after", [0, 1, 10**6])
def test_records_from_bodies_equal_files_one_by_one_or_in_bulk(work, cli, monkeypatch, bulk_after):
    """Full records come from the index one lookup at a time, or from one
    pass over its bodies once a command has asked for many: either way they
    equal the files."""
    monkeypatch.setattr(idx.Index, "BULK_AFTER", bulk_after)
    camp, manifest = _camp(work), work / "manifest.yaml"
    _index(cli, manifest)
    warm, plain = scan(camp), scan(camp, use_index=False)
    assert warm.index.hits == len(_record_files(camp))
    for key, cobs in plain.candidates.items():
        got = warm.candidates[key]
        assert got.record.model_dump() == cobs.record.model_dump()
        assert {s: r.model_dump() for s, r in got.stages.items()} == {s: r.model_dump() for s, r in cobs.stages.items()}
        assert list(got.stages) == list(cobs.stages)  # the files' order
    assert (warm.index._bodies is not None) == (bulk_after < len(_record_files(camp)))
