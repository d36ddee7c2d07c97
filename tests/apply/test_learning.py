"""One active-learning cycle (`aimmat model update`): the hashed holdout is never learned from, the child
records its parent and what it learned from, re-running changes nothing, the child is pinned and ranks
the next shortlist, and the snapshot and report carry before / after."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from aimmat.candidates import learning
from aimmat.model import checkpoint
from aimmat.model.sample import _sample_generator, draw_latents, guidance_score
from tests.helpers import emt_manifest, make_emt_campaign, tree_digest
from tests.model.tiny import write_tiny_checkpoint

FILES = ["1-element/Al", "1-element/Cu", "1-element/Ni", "2-element/CuAu", "2-element/NiAl"]


def test_holdout_is_a_function_of_the_candidate_and_near_its_fraction():
    ids = [f"set/c{i:05d}" for i in range(4000)]
    held = [i for i in ids if learning.held_out(i, "salt", 0.25)]
    assert 0.22 < len(held) / len(ids) < 0.28
    assert held == [i for i in ids if learning.held_out(i, "salt", 0.25)]  # same answer every time
    assert set(held) != {i for i in ids if learning.held_out(i, "other", 0.25)}  # the salt chooses


def test_guided_latents_lean_toward_seek_and_away_from_avoid():
    gens = lambda: [_sample_generator(5, i) for i in range(64)]  # noqa: E731
    plain = draw_latents(4, gens())
    # one proposal is the unguided draw: the same latents, so earlier candidates are unchanged
    one = draw_latents(4, gens(), {"proposals": 1, "bandwidth": 1.0, "seek": [[3.0] * 4], "avoid": []})
    assert torch.equal(plain, one)
    seek, avoid = [1.5, 1.5, 0.0, 0.0], [-1.5, -1.5, 0.0, 0.0]
    g = {"proposals": 8, "bandwidth": 1.5, "seek": [seek], "avoid": [avoid]}
    guided = draw_latents(4, gens(), g)
    d = lambda z, p: torch.linalg.norm(z - torch.tensor(p), dim=-1).mean()  # noqa: E731
    assert d(guided, seek) < d(plain, seek) - 0.3
    assert d(guided, avoid) > d(plain, avoid) + 0.3
    assert guidance_score(guided, g).mean() > guidance_score(plain, g).mean()
    assert torch.equal(guided, draw_latents(4, gens(), g))  # deterministic per (seed, index)


def _salt(fraction: float) -> str:
    """A salt whose holdout takes at least one of the five EMT crystals and leaves at least two."""
    for i in range(1000):
        n = sum(learning.held_out(f, f"s{i}", fraction) for f in FILES)
        if 1 <= n <= 3:
            return f"s{i}"
    raise AssertionError("no salt found")


def _campaign(tmp, sha, salt):
    m = emt_manifest(stages=("screen", "relax", "elastic"))
    m["models"] = {"tiny": {"path": "tiny.pt", "sha256": sha}}
    m["stages"]["screen"] = {"min_distance_a": 0.01, "density_min_g_cm3": 0.0, "density_max_g_cm3": 30.0,
                             "charge_neutral": False}
    m["candidate_sets"].append({"name": "gen-2", "elements": 2,
                                "source": {"kind": "generator", "model": "tiny", "count": 4, "seed": 3},
                                "rank": {"top_k": 2, "weights": {"log10_k_vrh": 1.0}}})
    m["learning"] = {"name": "cycle1", "parent": "tiny", "select": {"tensors": ["pass_pd"]},
                     "update": {"epochs": 3, "proposals": 4}, "holdout": {"fraction": 0.4, "salt": salt}}
    return m


@pytest.mark.slow
def test_one_learning_cycle(cli, tmp_path, monkeypatch):
    sha = write_tiny_checkpoint(tmp_path / "tiny.pt", seed=1)
    salt = _salt(0.4)
    m = _campaign(tmp_path, sha, salt)
    path = make_emt_campaign(tmp_path, m)
    camp = tmp_path / "camp" / "c"
    code, out, err = cli("apply", path, "--jobs", "1")
    assert code in (0, 1), err

    seen = []
    real = learning._finetune

    def spy(parent, items, cfg, seed):
        seen.extend(i.ident for i in items)
        return real(parent, items, cfg, seed)

    monkeypatch.setattr(learning, "_finetune", spy)
    before = tree_digest(camp)
    code, out, err = cli("model", "update", path)
    assert code == 0, err
    rec = json.loads((camp / "learning/cycle1/record.json").read_text())
    held = set(rec["holdout"])
    expect_held = {f for f in FILES if learning.held_out(f, salt, 0.4)}
    assert expect_held <= held and held  # the hashed holdout, whatever the outcome
    # the holdout is untouched: no tensor, seek or avoid latent of a held-out candidate reached the update
    lf = rec["learned_from"]
    learned = {t["candidate"] for t in lf["tensors"]} | set(lf["seek"]) | set(lf["avoid"])
    assert seen and not (set(seen) & held) and not (learned & held)
    assert set(seen) == {t["candidate"] for t in lf["tensors"]}
    assert rec["holdout_before"]["n"] == rec["holdout_after"]["n"] >= 1
    assert rec["parent_sha256"] == sha
    # only the learning folder was written; the checkpoint is the one the record names, with its parent
    after = tree_digest(camp)
    assert {k for k in after if after[k] != before.get(k)} == {"learning/cycle1/record.json",
                                                               "learning/cycle1/checkpoint.pt"}
    ck = checkpoint.load(camp / "learning/cycle1/checkpoint.pt", rec["child_sha256"])
    assert ck.meta["parent_sha256"] == sha and ck.meta["learning"]["holdout"] == rec["holdout"]
    assert ck.meta["guidance"]["proposals"] == 4
    assert len(ck.meta["guidance"]["avoid"]) == len(lf["avoid"])  # generated failures only
    parent = checkpoint.load(tmp_path / "tiny.pt", sha)
    assert any(not torch.equal(a, b) for a, b in zip(ck.elastic.state_dict().values(), parent.elastic.state_dict().values()))
    assert all(torch.equal(a, b) for a, b in zip(ck.vae.state_dict().values(), parent.vae.state_dict().values()))
    assert "pin it in the manifest" in out and rec["child_sha256"] in out

    # unchanged inputs: nothing written
    code, out, err = cli("model", "update", path)
    assert code == 0 and "up to date" in out
    assert tree_digest(camp) == after
    # changed inputs under the same name: refused (a pinned child must not change), unless --replace
    changed = yaml.safe_load(path.read_text())
    changed["learning"]["update"]["epochs"] = 4
    path_c = tmp_path / "changed.yaml"
    path_c.write_text(yaml.safe_dump(changed, sort_keys=False))
    code, out, err = cli("model", "update", path_c)
    assert code == 2 and "exists" in err and "--replace" in err
    assert tree_digest(camp) == after

    # the child pinned like any other checkpoint ranks the next shortlist
    m2 = yaml.safe_load(path.read_text())
    m2["models"]["cycle1"] = {"path": "camp/c/learning/cycle1/checkpoint.pt", "sha256": rec["child_sha256"]}
    m2["candidate_sets"].append({"name": "gen-2-c1", "elements": 2,
                                 "source": {"kind": "generator", "model": "cycle1", "count": 4, "seed": 3},
                                 "rank": {"top_k": 2, "weights": {"log10_k_vrh": 1.0}}})
    m2["render"] = [{"template": "learning.md.j2"}]
    (tmp_path / "learning.md.j2").write_text((Path(__file__).parents[2] / "templates/learning.md.j2").read_text())
    path2 = tmp_path / "next.yaml"
    path2.write_text(yaml.safe_dump(m2, sort_keys=False))
    code, out, err = cli("apply", path2, "--jobs", "1")
    assert code in (0, 1), err
    c1 = json.loads(next((camp / "gen-2-c1").glob("*/candidate.json")).read_text())
    assert c1["provenance"]["checkpoint_sha256"] == rec["child_sha256"]
    snap = json.loads((camp / "evidence/snapshot.json").read_text())
    lrn = snap["scopes"]["screening"]["learning"]
    assert [c["name"] for c in lrn["cycles"]] == ["cycle1"]
    assert lrn["cycles"][0]["holdout_before"] == rec["holdout_before"]
    conv = {c["model"]: c for c in lrn["shortlist_conversion"]}
    assert set(conv) == {"tiny", "cycle1"} and conv["cycle1"]["learned_in_cycle"] == "cycle1"
    assert conv["tiny"]["shortlisted"] == 2 and conv["cycle1"]["shortlisted"] == 2
    md = (camp / "manuscript/learning.md").read_text()
    assert "| cycle1 |" in md and rec["child_sha256"][:12] in md

    # a later cycle from the child may not change the lineage's holdout
    m3 = yaml.safe_load(path2.read_text())
    m3["learning"] = {**m3["learning"], "name": "cycle2", "parent": "cycle1",
                      "holdout": {"fraction": 0.4, "salt": salt + "x"}}
    path3 = tmp_path / "bad.yaml"
    path3.write_text(yaml.safe_dump(m3, sort_keys=False))
    snapshot_before = tree_digest(camp)
    code, out, err = cli("model", "update", path3)
    assert code == 2 and "differs from the parent's lineage" in err
    assert tree_digest(camp) == snapshot_before
    # with the lineage's holdout, cycle 2 keeps every candidate cycle 1 held out out of its training
    m3["learning"]["holdout"] = {"fraction": 0.4, "salt": salt}
    path3.write_text(yaml.safe_dump(m3, sort_keys=False))
    seen.clear()
    code, out, err = cli("model", "update", path3)
    assert code == 0, err
    rec2 = json.loads((camp / "learning/cycle2/record.json").read_text())
    assert held <= set(rec2["holdout"]) and not (set(seen) & set(rec2["holdout"]))
    assert rec2["parent_sha256"] == rec["child_sha256"] and sha in rec2["lineage_sha256"]


def test_update_without_a_learning_block_is_refused(cli, tmp_path):
    path = make_emt_campaign(tmp_path)
    code, out, err = cli("model", "update", path)
    assert code == 2 and "no `learning:` block" in err
    assert not (tmp_path / "camp").exists()


def test_learning_parent_must_be_a_declared_model(cli, tmp_path):
    m = emt_manifest()
    m["learning"] = {"name": "c1", "parent": "nope"}
    path = make_emt_campaign(tmp_path, m)
    code, out, err = cli("diff", path)
    assert code == 3 and "learning.parent" in err and "unknown model 'nope'" in err
