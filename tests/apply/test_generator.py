"""Generated candidate sets: provenance, prediction, ranking, shortlist, and
pinned checkpoints (with a small untrained checkpoint built by the test)."""

from __future__ import annotations

import json
import re

import pytest
import yaml

from aimmat.model.rank import build_shortlist
from tests.helpers import tree_digest
from tests.model.tiny import write_tiny_checkpoint


def _manifest(tmp, sha, count=6, top_k=2, weights=None, stages=("screen", "relax")):
    st = {"screen": {"min_distance_a": 0.01, "density_min_g_cm3": 0.0, "density_max_g_cm3": 30.0,
                     "charge_neutral": False}}
    if "relax" in stages:
        st["relax"] = {"profile": "emt"}
    m = {
        "campaign": {"name": "g", "root": "camp"},
        "profiles": {"emt": {"kind": "emt", "max_steps": 5}},
        "models": {"tiny": {"path": "tiny.pt", "sha256": sha}},
        "candidate_sets": [{
            "name": "gen-2", "elements": 2,
            "source": {"kind": "generator", "model": "tiny", "count": count, "seed": 3},
            "rank": {"top_k": top_k, "weights": weights or {"log10_k_vrh": 1.0, "uncertainty": -1.0}},
        }],
        "stages": st,
    }
    path = tmp / "manifest.yaml"
    path.write_text(yaml.safe_dump(m, sort_keys=False))
    return path


@pytest.fixture
def gen_campaign(tmp_path):
    sha = write_tiny_checkpoint(tmp_path / "tiny.pt", seed=1)
    return tmp_path, sha


def _cands(camp):
    return {p.parent.name: json.loads(p.read_text()) for p in sorted(camp.glob("gen-2/*/candidate.json"))}


@pytest.mark.slow
def test_generated_set_is_ranked_and_only_the_shortlist_runs(cli, gen_campaign):
    tmp, sha = gen_campaign
    m = _manifest(tmp, sha)
    code, out, err = cli("diff", m)
    assert code == 0 and "g3-00005" in out and "new candidate" in out and "waiting for the shortlist" in out
    code, out, err = cli("apply", m, "--jobs", "1")
    assert code in (0, 1), err
    camp = tmp / "camp" / "g"
    cands = _cands(camp)
    assert sorted(cands) == [f"g3-{i:05d}" for i in range(6)]
    for cid, c in cands.items():
        assert c["provenance"]["kind"] == "generator"
        assert c["provenance"]["checkpoint_sha256"] == sha and c["provenance"]["seed"] == 3
        assert c["provenance"]["index"] == int(cid.split("-")[1])
        assert c["n_elements"] == 2
        p = c["prediction"]
        assert p["pd"] and p["pd_margin_gpa"] > 0 and len(p["voigt_gpa"]) == 6 and len(p["voigt_std_gpa"]) == 6
    # the two best scores (log10 K - uncertainty) got a relax record, nobody else
    score = {cid: c["prediction"]["terms"]["log10_k_vrh"] - c["prediction"]["terms"]["uncertainty"] for cid, c in cands.items()}
    best = sorted(score, key=lambda k: (-score[k], k))[:2]
    relaxed = sorted(p.parent.parent.name for p in camp.glob("gen-2/*/relax/record.json"))
    assert relaxed == sorted(best)
    code, out, _ = cli("diff", m, "--exit-code")
    assert code == 0, out
    code, out, _ = cli("diff", m, "-v")
    assert out.count("not shortlisted: rank") == 4
    code, out, err = cli("apply", m, "--jobs", "1")
    assert "Nothing to do" in out + err
    # the four below the shortlist are not_shortlisted with their rank and score, counted apart from pending
    code, out, _ = cli("status", m, "-v")
    lines = [ln for ln in out.splitlines() if "not_shortlisted" in ln and "rank" in ln]
    assert code == 0 and len(lines) == 4 and all("top_k 2" in ln for ln in lines), out
    assert sorted(ln.split()[0].split("/")[1] for ln in lines) == sorted(set(cands) - set(best))
    status = json.loads(cli("evidence", m)[1])["scopes"]["screening"]["sets"]["gen-2"]["status"]
    assert status["not_shortlisted"] == 4 and status["pending"] == 0 and sum(status.values()) == 6


@pytest.mark.slow
def test_raising_count_keeps_every_earlier_candidate(cli, gen_campaign):
    tmp, sha = gen_campaign
    m = _manifest(tmp, sha, count=4, stages=("screen",))
    assert cli("apply", m, "--jobs", "1")[0] == 0
    before = {k: v["structure_sha256"] for k, v in _cands(tmp / "camp" / "g").items()}
    m = _manifest(tmp, sha, count=7, stages=("screen",))
    code, out, _ = cli("diff", m)
    assert re.search(r"create  import +3  new candidate  \[g3-00004, g3-00005, g3-00006\]", out), out
    assert cli("apply", m, "--jobs", "1")[0] == 0
    after = {k: v["structure_sha256"] for k, v in _cands(tmp / "camp" / "g").items()}
    assert len(after) == 7 and all(after[k] == v for k, v in before.items())


def test_pinned_sha256_mismatch_is_a_manifest_error_and_touches_nothing(cli, gen_campaign):
    tmp, sha = gen_campaign
    m = _manifest(tmp, "f" * 64)
    before = tree_digest(tmp)
    for cmd in ("diff", "apply"):
        code, out, err = cli(cmd, m)
        assert code == 3 and "models.tiny.sha256" in err and sha in err and "manifest.yaml:" in err
    assert tree_digest(tmp) == before


def test_unknown_model_and_bad_rank_terms_are_refused(cli, gen_campaign):
    tmp, sha = gen_campaign
    m = _manifest(tmp, sha)
    data = yaml.safe_load(m.read_text())
    data["candidate_sets"][0]["source"]["model"] = "nope"
    m.write_text(yaml.safe_dump(data))
    code, _, err = cli("diff", m)
    assert code == 3 and "unknown model 'nope'" in err
    data["candidate_sets"][0]["source"]["model"] = "tiny"
    data["candidate_sets"][0]["rank"]["weights"] = {"hardness": 1.0}
    m.write_text(yaml.safe_dump(data))
    code, _, err = cli("diff", m)
    assert code == 3 and "unknown ranking term(s) hardness" in err


def test_shortlist_ranks_eligible_candidates_and_breaks_ties_by_id():
    pred = lambda k: {"terms": {"log10_k_vrh": k, "uncertainty": 0.0}}  # noqa: E731
    sl = build_shortlist(2, {"log10_k_vrh": 1.0}, [("c", "eligible", pred(2.0)), ("a", "eligible", pred(2.0)),
                                                  ("b", "eligible", pred(3.0)), ("d", "ineligible", pred(9.0))])
    assert sl.members == {"a", "b"} and sl.ranks["b"][0] == 1 and sl.ranks["a"][0] == 2
    assert sl.reason("c").startswith("not shortlisted: rank 3 of 3")
    assert sl.reason("d") == "not shortlisted: did not pass the screen"
    waiting = build_shortlist(2, {"log10_k_vrh": 1.0}, [("a", "waiting", None), ("b", "eligible", pred(1.0))])
    assert waiting.reason("b").startswith("waiting for the shortlist: 1 candidate")
