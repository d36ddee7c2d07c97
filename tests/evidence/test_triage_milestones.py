"""Uncertainty triage of the shortlist and declared milestones: computed from the records, shown in status,
the snapshot, the Markdown tables and the figures; bad declarations are refused before anything is touched."""

from __future__ import annotations

import json

import pytest
import yaml

from tests.helpers import ROOT, emt_manifest, make_emt_campaign, tree_digest
from tests.model.tiny import write_tiny_checkpoint

MILESTONES = {
    "R1": "validated.pass_both >= 1",
    "R2": "validated.pass_both >= 50",
    "R3": "screening.triage present",
    "R4": "screening.sets.1-element.status.not_shortlisted == 1",
    "R5": "validated.pass_bot >= 1",  # a typo: not met, and says why
    "R6": "public.structures > 4.5",
}


def _manifest(tmp_path, **extra):
    sha = write_tiny_checkpoint(tmp_path / "tiny.pt", seed=1)
    m = emt_manifest()
    m["models"] = {"tiny": {"path": "tiny.pt", "sha256": sha}}
    m["candidate_sets"][0]["rank"] = {"model": "tiny", "top_k": 2, "weights": {"log10_k_vrh": 1.0}}
    m.update(extra)
    return m


@pytest.mark.slow
def test_triage_and_milestones_from_the_records(tmp_path, cli):
    m = _manifest(tmp_path, milestones=MILESTONES)
    m["evidence"] = {"triage": {"bins_dex": [0.1, 0.3]}}
    names = ["project.md.j2", "status_by_set.md.j2", "shortlist.md.j2", "validated.md.j2", "rerun_priority.md.j2",
             "protocol.md.j2", "report.html.j2"]
    m["render"] = [{"template": str(ROOT / "templates" / n)} for n in names]
    path = make_emt_campaign(tmp_path, m)
    assert cli("apply", path, "-q", "--jobs", 1)[0] == 0
    snap = json.loads(cli("evidence", path)[1])
    scr, val = snap["scopes"]["screening"], snap["scopes"]["validated"]

    # triage: every shortlisted candidate in the bin its predicted uncertainty falls in, conversion per bin
    rows = [r for r in scr["ranking"]["1-element"]["rows"] if r["shortlisted"]]
    assert len(rows) == 2
    assert scr["triage"]["bins_dex"] == [0.1, 0.3]
    [tri] = scr["triage"]["models"]  # one ranking checkpoint
    assert tri["model"] == "tiny" and tri["sets"] == ["1-element"]
    assert [b["label"] for b in tri["bins"]] == ["[0, 0.1)", "[0.1, 0.3)", ">= 0.3"]
    expect = [[r for r in rows if lo <= r["uncertainty_dex"] < hi] for lo, hi in ((0, 0.1), (0.1, 0.3), (0.3, 1e9))]
    status = {f"1-element/{r['candidate']}": "elasticready" for r in rows}
    for b, members in zip(tri["bins"], expect):
        assert b["candidates"] == [f"1-element/{r['candidate']}" for r in members]
        assert b["shortlisted"] == len(members) and b["elasticready"] == len(members)  # EMT converts every one
        valid = {r["relpath"]: r["pass_both"] for r in val["rows"]}
        assert b["pass_both"] == sum(valid[c] for c in b["candidates"])
        if members:
            lo, hi = b["elasticready_wilson95"]
            assert lo < b["elasticready_rate"] <= hi
        else:
            assert b["elasticready_rate"] is None and b["elasticready_wilson95"] is None
    assert len(status) == tri["shortlisted"]

    # milestones, each inside the scope it reads, with the figure that decides it
    ms = {r["name"]: r for scope in ("public", "screening", "validated") for r in snap["scopes"][scope]["milestones"]}
    assert {n: r["met"] for n, r in ms.items()} == {"R1": val["pass_both"] >= 1, "R2": False, "R3": True, "R4": True,
                                                    "R5": False, "R6": True}
    assert ms["R1"]["figure"] == val["pass_both"] and ms["R6"]["figure"] == 5 and ms["R6"]["scope"] == "public"
    assert ms["R5"]["why"] == "validated.pass_bot is not in the snapshot"
    assert [r["name"] for r in snap["scopes"]["validated"]["milestones"]] == ["R1", "R2", "R5"]

    code, out, _ = cli("status", path)
    met = sum(r["met"] for r in ms.values())
    assert code == 0 and f"milestones: {met} of 6 met" in out
    assert "R2         NOT met" in out and "validated.pass_bot is not in the snapshot" in out
    assert "uncertainty triage (bins 0.1, 0.3 dex, frozen with the shortlist at" in out
    cells = "   ".join(f"{b['label']}: {b['shortlisted']} -> {b['elasticready']} -> {b['pass_both']}" for b in tri["bins"])
    assert f"  tiny       {cells}" in out
    table = json.loads(cli("status", path, "--json")[1])
    assert [r["name"] for r in table["milestones"]] == ["R6", "R3", "R4", "R1", "R2", "R5"]

    manuscript = tmp_path / "camp" / "c" / "manuscript"
    shortlist = (manuscript / "shortlist.md").read_text()
    assert "Uncertainty triage, tiny" in shortlist and "| [0.1, 0.3) |" in shortlist
    validated = (manuscript / "validated.md").read_text()
    assert "| R2 | `validated.pass_both >= 50` |" in validated and "not met" in validated
    assert "R3" not in validated and "| R3 |" in (manuscript / "status_by_set.md").read_text()
    report = (manuscript / "report.html").read_text()
    assert "<td>R4</td>" in report and 'src="figures/uncertainty_triage.png"' in report
    assert (manuscript / "figures" / "uncertainty_triage.pdf").stat().st_size > 1000
    lock = json.loads((manuscript / "render.lock.json").read_text())
    assert "manuscript/figures/uncertainty_triage.png" in {o["path"] for o in lock["outputs"]}

    # the bins were frozen with the shortlist: declared otherwise afterwards, they are reported, not used
    frozen = json.loads((tmp_path / "camp/c/shortlists/1-element.json").read_text())
    assert len(frozen) == 1 and frozen[0]["triage_bins_dex"] == [0.1, 0.3] and len(frozen[0]["members"]) == 2
    m["evidence"] = {"triage": {"bins_dex": [0.05]}}
    path.write_text(yaml.safe_dump(m, sort_keys=False))
    tri = json.loads(cli("evidence", path)[1])["scopes"]["screening"]["triage"]
    assert tri["bins_dex"] == [0.1, 0.3] and tri["manifest_bins_dex"] == [0.05] and tri["manifest_bins_ignored"]
    assert tri["bins_source"].startswith("frozen with the shortlist at")
    assert cli("apply", path, "-q", "--jobs", 1)[0] == 0  # the same shortlist: its frozen entry is not rewritten
    assert json.loads((tmp_path / "camp/c/shortlists/1-element.json").read_text()) == frozen
    assert "not used, since bins are fixed" in (manuscript / "shortlist.md").read_text()


@pytest.mark.parametrize("bad, where", [
    ({"milestones": {"R1": "validated.pass_both >= lots"}}, "milestones.R1"),
    ({"milestones": {"R1": "__import__('os').system('x') >= 1"}}, "milestones.R1"),
    ({"milestones": {"R1": "projects.n >= 1"}}, "milestones.R1"),
    ({"evidence": {"triage": {"bins_dex": [0.2, 0.1]}}}, "evidence.triage.bins_dex"),
])
def test_bad_milestones_and_bins_are_refused_and_touch_nothing(tmp_path, cli, bad, where):
    path = make_emt_campaign(tmp_path, _manifest(tmp_path, **bad))
    before = tree_digest(tmp_path)
    code, _, err = cli("diff", path)
    assert code == 3 and where in err and "manifest.yaml:" in err, err
    assert tree_digest(tmp_path) == before


def test_triage_needs_a_ranked_set(tmp_path, cli):
    m = emt_manifest()
    m["evidence"] = {"triage": {"bins_dex": [0.1]}}
    path = make_emt_campaign(tmp_path, m)
    code, _, err = cli("diff", path)
    assert code == 3 and "evidence.triage" in err and "rank" in err
    path.write_text(yaml.safe_dump(emt_manifest()))
    assert cli("diff", path)[0] == 0


@pytest.mark.slow
def test_bins_declared_after_the_shortlist_was_frozen_are_labelled_as_such(tmp_path, cli):
    # review finding: bins declared after the shortlist froze read as "no shortlist frozen yet" and could change freely
    m = _manifest(tmp_path)
    path = make_emt_campaign(tmp_path, m)
    assert cli("apply", path, "-q", "--jobs", 1)[0] == 0
    m["evidence"] = {"triage": {"bins_dex": [0.1, 0.3]}}
    path.write_text(yaml.safe_dump(m, sort_keys=False))
    tri = json.loads(cli("evidence", path)[1])["scopes"]["screening"]["triage"]
    assert "declared after the shortlist was frozen" in tri["bins_source"] and "not pre-registered" in tri["bins_source"]
    assert cli("apply", path, "-q", "--jobs", 1)[0] == 0
    m["evidence"] = {"triage": {"bins_dex": [0.05]}}
    path.write_text(yaml.safe_dump(m, sort_keys=False))
    tri = json.loads(cli("evidence", path)[1])["scopes"]["screening"]["triage"]
    assert tri["bins_dex"] == [0.1, 0.3] and tri["manifest_bins_ignored"]
    assert tri["bins_source"].startswith("recorded at") and "not pre-registered" in tri["bins_source"]
