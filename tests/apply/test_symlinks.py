"""Symlinks inside the campaign folder are never followed: the scan names
them, diff and apply refuse (exit 4), ``--prune`` removes an orphan link
(not its target), and apply's writers refuse a path through a link made
after the scan."""

from __future__ import annotations

import json
import shutil

import pytest

from aimmat.apply import executor
from aimmat.apply.prune import prune
from aimmat.apply.runner import StageTask, run_task
from aimmat.errors import CampaignError
from aimmat.plan.actions import Action, StageAction
from aimmat.state import journal
from aimmat.state.scan import scan
from tests.helpers import applied_campaign, copy_campaign, emt_manifest, make_emt_campaign, tree_digest


@pytest.fixture(scope="module")
def applied(tmp_path_factory):
    """A screen-only EMT campaign applied once, copied by each test."""
    return applied_campaign(tmp_path_factory.mktemp("links"), ("screen",))


@pytest.fixture
def work(applied, tmp_path):
    return copy_campaign(applied, tmp_path / "w")


def _camp(work):
    return work / "camp" / "c"


def _move_out(path, elsewhere):
    """Move ``path`` to ``elsewhere`` and leave a symlink to it in its place."""
    elsewhere.parent.mkdir(parents=True, exist_ok=True)
    path.rename(elsewhere)
    path.symlink_to(elsewhere, target_is_directory=elsewhere.is_dir())


def test_symlinked_candidate_folder_of_a_new_campaign_is_refused(tmp_path, cli):
    path = make_emt_campaign(tmp_path, emt_manifest(stages=("screen",)))
    elsewhere = tmp_path / "elsewhere/Cu"
    elsewhere.mkdir(parents=True)
    link = tmp_path / "camp/c/1-element/Cu"
    link.parent.mkdir(parents=True)
    link.symlink_to(elsewhere, target_is_directory=True)
    for cmd in (("diff",), ("apply", "-q", "--jobs", "1")):
        code, _, err = cli(cmd[0], path, *cmd[1:])
        assert code == 4 and "Traceback" not in err, cmd
        assert f"{link} -> {elsewhere}: a symlink" in err and "replace it with a real folder" in err
    assert list(elsewhere.iterdir()) == []  # nothing written through the link
    assert not (tmp_path / "camp/c/2-element").exists()  # refused before the first write
    # the other candidates can be worked on; the link is a warning
    code, out, err = cli("apply", path, "-q", "--jobs", "1", "--target", "2-element")
    assert code == 0, err
    assert f"warning: {link} -> {elsewhere}" in err and "outside --target" in err
    assert (tmp_path / "camp/c/2-element/NiAl/screen/record.json").is_file()
    assert list(elsewhere.iterdir()) == []


@pytest.mark.parametrize("what", ["set", "candidate", "stage", "record", "candidate.json"])
def test_every_kind_of_link_is_named_by_diff_and_apply(work, cli, what):
    camp = _camp(work)
    path = {"set": camp / "1-element", "candidate": camp / "1-element/Cu", "stage": camp / "1-element/Cu/screen",
            "record": camp / "1-element/Cu/screen/record.json", "candidate.json": camp / "1-element/Cu/candidate.json"}[what]
    elsewhere = work / "elsewhere" / path.name
    _move_out(path, elsewhere)
    before = tree_digest(elsewhere.parent)
    for cmd in (("diff",), ("diff", "--rescan"), ("apply", "-q", "--jobs", "1"), ("status",), ("evidence",)):
        code, _, err = cli(cmd[0], work / "manifest.yaml", *cmd[1:])
        assert code == 4 and "Traceback" not in err, cmd
        assert f"{path} -> {elsewhere}: a symlink" in err, (cmd, err)
    assert tree_digest(elsewhere.parent) == before
    kind = "file" if what in ("record", "candidate.json") else "folder"
    assert f"replace it with a real {kind}" in err
    obs = scan(camp)
    assert obs.links == [(str(path), str(elsewhere))]


def test_prune_removes_a_symlinked_orphan_not_its_target(work, cli):
    camp = _camp(work)
    elsewhere = work / "elsewhere/Ni"
    _move_out(camp / "1-element/Ni", elsewhere)
    (work / "structures/1-element/Ni.cif").unlink()  # Ni is an orphan now
    before = tree_digest(elsewhere)
    code, out, err = cli("diff", work / "manifest.yaml")
    assert code == 0 and "orphan  candidate" in out and "[Ni]" in out
    assert f"warning: {camp / '1-element/Ni'} -> {elsewhere}" in err and "removes the link, not its target" in err
    code, out, err = cli("apply", work / "manifest.yaml", "-q", "--jobs", "1", "--prune")
    assert code == 0, err
    assert "Traceback" not in err and "warning" not in err
    assert f"pruned 1-element/Ni (a symlink to {elsewhere}: the link was removed, not its target)" in out
    assert not (camp / "1-element/Ni").exists() and not (camp / "1-element/Ni").is_symlink()
    assert tree_digest(elsewhere) == before  # the target is untouched
    pruned = [e for e in journal.read(camp) if e["event"] == "pruned"]
    assert pruned[-1]["path"] == "1-element/Ni" and pruned[-1]["symlink_to"] == str(elsewhere)
    assert cli("diff", work / "manifest.yaml", "--exit-code")[0] == 0


def test_prune_removes_a_symlinked_orphan_set(work, cli):
    camp = _camp(work)
    elsewhere = work / "elsewhere/old-set"
    (elsewhere / "X").mkdir(parents=True)
    (camp / "old-set").symlink_to(elsewhere, target_is_directory=True)
    code, out, err = cli("apply", work / "manifest.yaml", "-q", "--jobs", "1", "--prune")
    assert code == 0, err
    assert f"pruned old-set (a symlink to {elsewhere}" in out
    assert not (camp / "old-set").is_symlink() and (elsewhere / "X").is_dir()


def _candidate_task(work, cand="1-element/Cu") -> StageTask:
    camp = _camp(work)
    rec = json.loads((camp / cand / "candidate.json").read_text())
    s, c = cand.split("/")
    return StageTask(campaign_dir=str(camp), set_name=s, cand_id=c, stage="import", key=rec["key"], key_inputs={},
                     candidate=rec)


def test_writers_refuse_a_path_through_a_link_made_after_the_scan(work):
    camp = _camp(work)
    task = _candidate_task(work)
    elsewhere = work / "elsewhere/Cu"
    _move_out(camp / "1-element/Cu", elsewhere)
    before = tree_digest(elsewhere)
    r = run_task(task)
    assert (r.status, r.failure_code) == ("failed", "symlink")
    assert f"{camp / '1-element/Cu'} is a symlink to {elsewhere}" in r.message
    stage = StageTask(campaign_dir=str(camp), set_name="1-element", cand_id="Cu", stage="screen", key="k", key_inputs={},
                      run="aimmat.stages.screen:run", structure=task.candidate["structure"], stage_cfg={})
    r = run_task(stage)
    assert (r.status, r.failure_code) == ("failed", "symlink")
    assert tree_digest(elsewhere) == before
    # prune refuses to reach through a link too
    orphan = StageAction("1-element", "Cu", "elastic", Action.ORPHAN, ["stage 'elastic' is not in the manifest"])
    (elsewhere / "elastic").mkdir()
    with pytest.raises(CampaignError, match="is a symlink to"):
        prune(camp, [orphan])
    assert (elsewhere / "elastic").is_dir()


def test_apply_with_a_link_made_between_scan_and_write(work, cli, monkeypatch):
    """A candidate folder swapped for a link while apply runs: its task fails
    (`symlink`), the others finish, the journal is closed, exit 4."""
    camp = _camp(work)
    for c in ("1-element/Cu", "1-element/Al"):
        shutil.rmtree(camp / c / "screen")
    elsewhere = work / "elsewhere/Cu"
    real = executor.run_task

    def swap_then_run(task):
        if task.cand_id == "Cu" and not (camp / "1-element/Cu").is_symlink():
            _move_out(camp / "1-element/Cu", elsewhere)
        return real(task)

    monkeypatch.setattr(executor, "run_task", swap_then_run)
    code, out, err = cli("apply", work / "manifest.yaml", "-q", "--jobs", "1")
    assert code == 4 and "Traceback" not in err
    assert "failed 1-element/Cu screen: symlink: refused to write" in err and str(elsewhere) in err
    assert not (elsewhere / "screen").exists()
    assert json.loads((camp / "1-element/Al/screen/record.json").read_text())["status"] == "done"
    events = journal.read(camp)
    assert events[-1]["event"] == "apply_end" and journal.open_attempts(events) == {}
