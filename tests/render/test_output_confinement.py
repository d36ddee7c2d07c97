"""Render writes only inside <campaign>/manuscript (and evidence/): a
symlink on the way out is refused with a RenderError naming it, and
nothing is written when any destination is bad."""

from __future__ import annotations

import pytest

from aimmat.apply.render_step import confined
from aimmat.errors import RenderError
from tests.helpers import ROOT, emt_manifest, make_emt_campaign, tree_digest


def _listing(folder) -> dict:
    """Every path under ``folder`` (links not followed): its bytes, or where a link points."""
    out = {}
    for p in sorted(folder.rglob("*")):
        rel = str(p.relative_to(folder))
        if rel == ".aimmat.lock":  # render takes the campaign lock
            continue
        out[rel] = f"-> {p.readlink()}" if p.is_symlink() else (p.read_bytes() if p.is_file() else "dir")
    return out


@pytest.fixture
def campaign(tmp_path):
    m = emt_manifest(stages=("screen",))
    m["render"] = [{"template": str(ROOT / "templates/project.md.j2")},
                   {"template": str(ROOT / "templates/status_by_set.md.j2"), "output": "tables/status.md"}]
    path = make_emt_campaign(tmp_path, m)
    (tmp_path / "camp/c").mkdir(parents=True)
    return path


def _camp(manifest):
    return manifest.parent / "camp" / "c"


def _outside(tmp_path):
    out = tmp_path / "outside"
    out.mkdir(exist_ok=True)
    (out / "keep.txt").write_text("not aimmat's\n")
    return out


@pytest.mark.parametrize("link", ["manuscript", "manuscript/tables", "manuscript/project.md", "evidence"])
def test_a_symlink_out_of_the_manuscript_is_refused_and_nothing_written(campaign, cli, tmp_path, link):
    camp = _camp(campaign)
    outside = _outside(tmp_path)
    target = outside / "project.md" if link.endswith(".md") else outside
    (camp / link).parent.mkdir(parents=True, exist_ok=True)
    (camp / link).symlink_to(target, target_is_directory=not link.endswith(".md"))
    before_out, before_camp = tree_digest(outside), _listing(camp)
    code, _, err = cli("render", campaign)
    assert code == 3 and "Traceback" not in err
    assert f"{camp / link} is a symlink to {target}" in err, err
    assert "nothing was written" in err and "fix:" in err
    assert tree_digest(outside) == before_out  # nothing written through the link
    assert _listing(camp) == before_camp  # nor anywhere else: every destination is checked first
    assert not (outside / "project.md").exists()


def test_a_symlink_that_stays_inside_the_manuscript_is_allowed(campaign, cli):
    man = _camp(campaign) / "manuscript"
    (man / "real").mkdir(parents=True)
    (man / "tables").symlink_to(man / "real", target_is_directory=True)
    code, _, err = cli("render", campaign)
    assert code == 0, err
    assert (man / "real/status.md").is_file() and (man / "project.md").is_file()


def test_apply_render_step_refuses_too(campaign, cli, tmp_path):
    outside = _outside(tmp_path)
    (_camp(campaign) / "manuscript").symlink_to(outside, target_is_directory=True)
    code, _, err = cli("apply", campaign, "-q", "--jobs", 1)
    assert code == 3 and "Traceback" not in err and "is a symlink to" in err
    assert tree_digest(outside) == {"keep.txt": tree_digest(outside)["keep.txt"]}


def test_destinations_that_leave_their_folder(tmp_path):
    camp = tmp_path / "c"
    camp.mkdir()
    assert confined(camp, ["manuscript/a.md", "manuscript/x/b.md", "evidence/snapshot.json"]) == [
        camp / "manuscript/a.md", camp / "manuscript/x/b.md", camp / "evidence/snapshot.json"]
    for rel in ("manuscript/../1-element/x.md", "manuscript/../../x.md", "journal.jsonl", "manuscript", "evidence/../x"):
        with pytest.raises(RenderError) as e:
            confined(camp, ["manuscript/ok.md", rel])
        assert rel in str(e.value) and "1 render output(s)" in str(e.value)
