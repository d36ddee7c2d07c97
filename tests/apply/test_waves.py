"""Pre-registered rerun waves: frozen before they run, refused when changed, every attempt tagged, and the
evidence per wave attributes each conversion to the wave's intervention."""

from __future__ import annotations

import json
import re

import pytest
import yaml

from tests.helpers import emt_manifest, make_emt_campaign, tree_digest
from tests.model.tiny import write_tiny_checkpoint


def _write(path, m):
    path.write_text(yaml.safe_dump(m, sort_keys=False))


@pytest.mark.slow
def test_a_wave_reruns_failed_relaxations_with_its_overrides(tmp_path, cli):
    m = emt_manifest(profile={"max_steps": 1})  # one BFGS step: relaxations stop unconverged
    path = make_emt_campaign(tmp_path, m)
    cli("apply", path, "-q", "--jobs", 1)
    camp = tmp_path / "camp" / "c"
    snap = json.loads(cli("evidence", path)[1])
    stuck = snap["scopes"]["screening"]["overall"]["status"]["outputpresentnotconverged"]
    assert stuck >= 2
    m["waves"] = [{"name": "w1", "select": {"statuses": ["outputpresentnotconverged"], "max_candidates": 2},
                   "overrides": {"max_steps": 300}, "max_attempts": 1}]
    _write(path, m)
    before = tree_digest(camp)
    for cmd in ("diff", "apply"):  # declared, not frozen: refused before anything runs
        code, _, err = cli(cmd, path)
        assert code == 3 and "wave 'w1' is declared but not frozen" in err and "aimmat waves freeze" in err
    assert tree_digest(camp) == before

    code, out, err = cli("waves", "freeze", path, "w1")
    assert code == 0 and "froze wave w1" in out and "2 candidate(s)" in out, err
    frozen = json.loads((camp / "waves" / "w1.json").read_text())
    picked = [r["candidate"] for r in frozen["selected"]]
    assert len(picked) == 2 and all(r["stage"] == "relax" for r in frozen["selected"])
    assert frozen["policy"]["overrides"] == {"max_steps": 300} and frozen["frozen_at"]
    assert cli("waves", "freeze", path, "w1")[1].startswith("already frozen")  # same policy: unchanged
    assert json.loads((camp / "waves" / "w1.json").read_text()) == frozen

    code, out, _ = cli("diff", path)
    assert re.search(r"rerun +relax +2 +wave w1: max_steps=300 \(after ionic_not_converged\)", out), out
    assert cli("apply", path, "-q", "--jobs", 1)[0] in (0, 1)
    for cand in picked:
        rec = json.loads((camp / cand / "relax" / "record.json").read_text())
        wave_attempts = [a for a in rec["attempts"] if a.get("wave") == "w1"]
        assert wave_attempts and wave_attempts[0]["intervention"] == "wave w1: max_steps=300"
        assert all(a["key"] == rec["key"] for a in wave_attempts) and rec["key_inputs"]["wave"]["name"] == "w1"
        assert rec["status"] == "done"
    # the candidates the wave did not select were not touched
    others = [p for p in camp.glob("*/*/relax/record.json") if "/".join(p.parts[-4:-2]) not in picked]
    assert others and all(not any(a.get("wave") for a in json.loads(p.read_text())["attempts"]) for p in others)

    waves = json.loads(cli("evidence", path)[1])["scopes"]["screening"]["waves"]
    [w] = waves
    assert w["selected"] == 2 and w["ran"] == 2 and w["policy_sha256"] == frozen["policy_sha256"]
    assert w["elasticready"] == 2 and 0 < w["elasticready_wilson95"][0] < 1
    assert {c["converted_by"] for c in w["candidates"]} == {"wave w1: max_steps=300"}
    assert cli("diff", path, "--exit-code")[0] == 0  # applied: nothing left to do

    # the policy cannot change after freezing: diff, apply and freeze refuse it
    m["waves"][0]["overrides"] = {"max_steps": 400}
    _write(path, m)
    before = tree_digest(camp)
    for args in (("diff", path), ("apply", path), ("waves", "freeze", path, "w1")):
        code, _, err = cli(*args)
        assert code == 3 and "w1" in err and ("changed after it was frozen" in err or "cannot change" in err), err
    assert tree_digest(camp) == before


@pytest.mark.slow
def test_a_wave_takes_candidates_past_their_shortlist(tmp_path, cli):
    m = emt_manifest()
    m["models"] = {"tiny": {"path": "tiny.pt", "sha256": write_tiny_checkpoint(tmp_path / "tiny.pt", seed=1)}}
    m["candidate_sets"][0]["rank"] = {"model": "tiny", "top_k": 1, "weights": {"log10_k_vrh": 1.0}}
    path = make_emt_campaign(tmp_path, m)
    assert cli("apply", path, "-q", "--jobs", 1)[0] == 0
    scr = json.loads(cli("evidence", path)[1])["scopes"]["screening"]
    below = [r for r in scr["ranking"]["1-element"]["rows"] if r["rank"] and not r["shortlisted"]]
    assert len(below) == 2
    m["waves"] = [{"name": "next", "select": {"statuses": ["not_shortlisted"], "max_candidates": 1},
                   "intervention": "extend the shortlist by one"}]
    _write(path, m)
    code, out, _ = cli("waves", "freeze", path, "next")
    assert code == 0 and f"1-element/{below[0]['candidate']}" in out  # the best score below the shortlist
    assert cli("apply", path, "-q", "--jobs", 1)[0] == 0
    snap = json.loads(cli("evidence", path)[1])["scopes"]["screening"]
    [w] = snap["waves"]
    assert w["selected"] == 1 and w["elasticready"] == 1 and w["candidates"][0]["before"] == "not_shortlisted"
    assert w["candidates"][0]["converted_by"] == "wave next: extend the shortlist by one"
    assert snap["sets"]["1-element"]["status"]["not_shortlisted"] == 1


def test_bad_wave_declarations_are_refused(tmp_path, cli):
    m = emt_manifest()
    m["waves"] = [{"name": "w", "overrides": {"mixing_beta": 0.3}}]  # not a field of the emt profile
    path = make_emt_campaign(tmp_path, m)
    code, _, err = cli("diff", path)
    assert code == 3 and "waves.0.overrides" in err and "mixing_beta" in err
    m["waves"] = [{"name": "w"}, {"name": "w"}]
    _write(path, m)
    code, _, err = cli("diff", path)
    assert code == 3 and "duplicate wave name" in err
    m["waves"] = [{"name": "w"}]
    _write(path, m)
    code, _, err = cli("waves", "freeze", path, "nope")
    assert code in (3, 4) and ("no wave 'nope'" in err or "does not exist" in err)


def test_waves_on_different_stages_of_one_candidate_both_hold(tmp_path):
    # review finding: assignments were keyed by candidate, so a second wave on the candidate's elastic stage
    # dropped the first wave from its relax key and reran the relax with the settings that had failed
    from aimmat.manifest import load_manifest
    from aimmat.state.waves import assignments, policy_sha256

    m = emt_manifest()
    m["waves"] = [{"name": "w1", "overrides": {"max_steps": 300}}, {"name": "w2", "overrides": {"fmax_ev_per_a": 0.1}},
                  {"name": "w3", "overrides": {"max_steps": 500}}]
    path = make_emt_campaign(tmp_path, m)
    spec = load_manifest(path)
    folder = spec.campaign_dir / "waves"
    folder.mkdir(parents=True)
    stages = {"w1": "relax", "w2": "elastic", "w3": "relax"}
    for w in spec.manifest.waves:
        folder.joinpath(f"{w.name}.json").write_text(json.dumps({
            "policy_sha256": policy_sha256(w), "frozen_at": "t", "intervention": w.name,
            "selected": [{"candidate": "1-element/Al", "stage": stages[w.name]}]}))
    a = assignments(spec)
    assert a[("1-element", "Al", "elastic")].wave == "w2"
    assert a[("1-element", "Al", "relax")].wave == "w3"  # a later wave replaces an earlier one on the same stage
    assert len(a) == 2
