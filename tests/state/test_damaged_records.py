"""Damaged records: every command names each one (all at once), says how to
fix it, exits 4 without a traceback; ``--target`` works on the others."""

from __future__ import annotations

import json
import os
import shutil

import pytest

from aimmat.errors import CampaignError
from aimmat.state.scan import check_observed, read_stage_record, scan
from tests.helpers import applied_campaign, copy_campaign, tree_digest

COMMANDS = (("diff",), ("status",), ("evidence",), ("apply", "-q", "--jobs", "1"))


@pytest.fixture(scope="module")
def applied(tmp_path_factory):
    """A screen-only EMT campaign applied once, copied by each test."""
    return applied_campaign(tmp_path_factory.mktemp("damaged"), ("screen",))


@pytest.fixture
def work(applied, tmp_path):
    return copy_campaign(applied, tmp_path / "w")


def _camp(work):
    return work / "camp" / "c"


def _record(work, cand="1-element/Cu", stage="screen"):
    return _camp(work) / cand / stage / "record.json"


def _as_folder(path):
    path.unlink()
    path.mkdir()


DAMAGE = {
    "a folder": (_as_folder, "is a folder, not a file"),
    "invalid JSON": (lambda p: p.write_text('{"stage": "screen", '), "not a valid StageRecord: Invalid JSON"),
    "wrong schema": (lambda p: p.write_text(json.dumps({"stage": "screen", "status": "exploded"})), "not a valid StageRecord"),
    "empty": (lambda p: p.write_bytes(b""), "not a valid StageRecord"),
}


@pytest.mark.parametrize("rescan", [False, True], ids=["index", "rescan"])
@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_unreadable_record_is_a_clear_error_in_every_command(work, cli, damage, rescan):
    make, what = DAMAGE[damage]
    rec = _record(work)
    make(rec)
    manifest = work / "manifest.yaml"
    before = tree_digest(_camp(work))
    for cmd in COMMANDS:
        code, out, err = cli(*cmd, manifest, *(["--rescan"] if rescan else []))
        assert code == 4, (cmd, out, err)
        assert "Traceback" not in err
        assert f"{rec}: {what}" in err, err
        assert f"delete the stage folder {rec.parent} to recompute" in err and "restore it from a backup" in err
    assert tree_digest(_camp(work)) == before  # apply refused before writing anything


def test_a_stage_folder_that_is_a_file_is_named(work, cli):
    sdir = _camp(work) / "1-element/Cu/screen"
    shutil.rmtree(sdir)
    sdir.write_text("not a folder\n")
    code, _, err = cli("apply", work / "manifest.yaml", "-q", "--jobs", "1")
    assert code == 4 and "Traceback" not in err
    assert f"{sdir}: is a file where a stage folder should be" in err and f"delete it ({sdir})" in err


def test_a_record_without_read_permission_is_named(work, cli, monkeypatch):
    rec = _record(work)
    rec.chmod(0)
    if os.geteuid() == 0:  # root reads whatever the mode says: refuse the open as the kernel would for others
        real_open = os.open

        def no_permission(path, flags, *a, **kw):
            if str(path) == str(rec):
                raise PermissionError(13, "Permission denied", str(path))
            return real_open(path, flags, *a, **kw)

        monkeypatch.setattr(os, "open", no_permission)
    try:
        for cmd in (("diff", "--rescan"), ("status",), ("apply", "-q", "--jobs", "1")):
            code, _, err = cli(cmd[0], work / "manifest.yaml", *cmd[1:])
            assert code == 4 and "Traceback" not in err, cmd
            assert f"{rec}: cannot be read: Permission denied" in err, err
    finally:
        rec.chmod(0o644)


def test_every_damaged_record_is_reported_at_once(work, cli):
    bad = [_record(work, "1-element/Cu"), _record(work, "1-element/Al"), _record(work, "2-element/NiAl")]
    _as_folder(bad[0])
    bad[1].write_text("{")
    bad[2].write_text("[]")
    cand = _camp(work) / "2-element/CuAu/candidate.json"
    cand.write_text("{}")
    for cmd in COMMANDS:
        code, _, err = cli(*cmd, work / "manifest.yaml")
        assert code == 4, cmd
        assert "4 unreadable record(s)" in err
        assert all(str(p) in err for p in bad + [cand]), err
        assert f"delete the candidate folder {cand.parent} to import it again" in err


def test_target_works_on_undamaged_candidates(work, cli):
    manifest = work / "manifest.yaml"
    rec = _record(work, "1-element/Cu")
    _as_folder(rec)
    (_camp(work) / "2-element/NiAl/screen").rename(_camp(work) / "2-element/NiAl/gone")  # work left to do
    for target in ("2-element", "2-element/NiAl", "1-element/Al"):
        code, out, err = cli("diff", manifest, "--target", target)
        assert code == 0, err
        assert f"warning: {rec}: is a folder, not a file (outside --target: left alone)" in err
    code, out, err = cli("apply", manifest, "-q", "--jobs", "1", "--target", "2-element")
    assert code == 0, err
    assert "screen done 1" in out and f"warning: {rec}" in err
    assert json.loads(_record(work, "2-element/NiAl").read_text())["status"] == "done"
    assert rec.is_dir()  # left alone
    # in scope: refused, and the warm index (saved by the targeted apply) still sees it
    for cmd in (("diff", "--target", "1-element"), ("apply", "-q", "--target", "1-element/Cu"), ("diff",)):
        code, _, err = cli(cmd[0], manifest, *cmd[1:])
        assert code == 4 and f"{rec}: is a folder, not a file" in err, cmd


def test_repaired_record_is_read_again(work, cli):
    rec = _record(work)
    good = rec.read_bytes()
    rec.write_text("{")
    assert cli("diff", work / "manifest.yaml")[0] == 4
    rec.write_bytes(good)
    code, out, _ = cli("diff", work / "manifest.yaml", "--exit-code")
    assert code == 0 and "No changes" in out


def test_scan_collects_instead_of_raising(work):
    _as_folder(_record(work, "1-element/Cu"))
    _record(work, "2-element/CuAu").write_text("{")
    for kw in ({}, {"rescan": True}, {"use_index": False}):
        obs = scan(_camp(work), **kw)
        assert sorted(p for p, _ in obs.damaged) == sorted(str(_record(work, c)) for c in ("1-element/Cu", "2-element/CuAu"))
        assert "screen" not in obs.candidates[("1-element", "Cu")].summaries
        assert obs.candidates[("1-element", "Al")].summaries["screen"].status == "done"
    every = [("1-element", c) for c in ("Al", "Cu", "Ni")] + [("2-element", c) for c in ("CuAu", "NiAl")]
    with pytest.raises(CampaignError) as e:
        check_observed(obs, every)
    assert "2 unreadable record(s)" in str(e.value)
    with pytest.raises(CampaignError) as e:
        check_observed(obs, every, ("2-element", None))
    assert "1 unreadable record(s)" in str(e.value) and "(and 1 more outside" in str(e.value)
    warnings = check_observed(obs, every, ("1-element", "Al"))
    assert len(warnings) == 2 and all("outside --target" in w for w in warnings)
    # an orphan (not in the manifest) is a warning, never an error
    assert len(check_observed(obs, [("1-element", "Al")])) == 2


def test_a_single_read_raises_a_campaign_error(work):
    rec = _record(work)
    _as_folder(rec)
    with pytest.raises(CampaignError) as e:
        read_stage_record(rec)
    assert str(rec) in str(e.value) and "is a folder, not a file" in str(e.value)
