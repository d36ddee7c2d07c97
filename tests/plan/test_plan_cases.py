"""The plan's decisions as a table of cases, on synthetic records.

No engine runs and nothing is read from a campaign folder: each case builds
an observed state in memory (records as apply would have written them) and
asks ``plan`` what to do. Every action and every reason the plan can give
is here.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from aimmat.manifest import load_manifest
from aimmat.plan import Action, plan
from aimmat.resolve import resolve
from aimmat.state.records import Attempt, CandidateRecord, StageRecord
from aimmat.state.scan import CandidateObs, Observed
from aimmat.state.summary import CandidateSummary, StageSummary
from tests.helpers import emt_manifest, make_emt_campaign

CAND_SHA, RELAXED_SHA = "a" * 64, "b" * 64


@pytest.fixture(scope="module")
def res(tmp_path_factory):
    path = make_emt_campaign(tmp_path_factory.mktemp("plan"), emt_manifest())
    return resolve(load_manifest(path))


def _src(res, cand="Cu"):
    return next(s for s in res.spec.candidates if s.cand_id == cand)


def _stage(res, stage, status="done", *, stale=False, strict_pass=True, failure_code=None, retryable=False,
           attempts=1, pid=None, host=None):
    recipe = res.recipes[stage]
    sha = CAND_SHA if recipe.source == "import" else RELAXED_SHA
    inputs = recipe.inputs(sha)
    if stale:  # written under another profile: the key differs, and the inputs say how
        inputs = {**inputs, "profile": {**inputs["profile"], "fmax_ev_per_a": 0.02}}
    key = recipe.key(sha) if not stale else "f" * 64
    outputs = {"structure_sha256": RELAXED_SHA} if stage == "relax" else {}
    if stage == "screen":
        outputs = {"strict_pass": strict_pass, "criteria": {"min_distance": {"pass": strict_pass}}}
    atts = [Attempt(n=i + 1, key=key, started="t", status="failed" if failure_code else "done") for i in range(attempts)]
    return StageRecord(stage=stage, key=key, key_inputs=inputs, status=status, failure_code=failure_code,
                       retryable=retryable, attempts=atts, outputs=outputs, pid=pid, host=host)


def _obs(res, stages: dict, cand="Cu", import_key=None) -> CandidateObs:
    src = _src(res, cand)
    key = import_key or res.import_keys[(src.set_name, src.cand_id)]
    inputs = res.import_inputs(src) if import_key is None else {**res.import_inputs(src), "source_sha256": "0" * 64}
    rec = CandidateRecord(set_name=src.set_name, cand_id=cand, elements=1, n_elements=1, formula=cand, species=[cand],
                          key=key, key_inputs=inputs, structure={}, structure_sha256=CAND_SHA, provenance={})
    obs = CandidateObs(src.set_name, cand)
    obs._record, obs.summary = rec, CandidateSummary.of(rec)
    for name, srec in stages.items():
        obs._stages[name], obs.summaries[name] = srec, StageSummary.of(srec)
    obs.stage_dirs = sorted(stages)
    return obs


def _plan(res, *cands, alive=(), replace=frozenset(), extra_dirs=(), set_dirs=None):
    observed = Observed(Path("/nonexistent"), exists=True, alive=set(alive))
    for c in cands:
        observed.candidates[(c.set_name, c.cand_id)] = c
    for (s, c, d) in extra_dirs:
        observed.candidates[(s, c)].stage_dirs.append(d)
    observed.set_dirs = sorted({c.set_name for c in cands} | set(set_dirs or ()))
    return plan(res, observed, replace=replace, target=("1-element", "Cu") if not set_dirs else None)


def _acts(p, cand="Cu"):
    return {a.stage: a for a in p.actions if a.cand_id == cand}


def _done_chain(res, **over):
    stages = {st: _stage(res, st) for st in ("screen", "relax", "scf", "elastic")}
    stages.update(over)
    return stages


def test_new_candidate_is_created_stage_by_stage(res):
    a = _acts(_plan(res))
    assert (a["import"].action, a["import"].reasons) == (Action.CREATE, ["new candidate"])
    assert a["import"].key_inputs["source_sha256"] == _src(res).sha256
    assert [(a[s].action, a[s].reasons) for s in ("screen", "relax", "scf", "elastic")] == [
        (Action.CREATE, ["after import"]), (Action.CREATE, ["after import"]),
        (Action.CREATE, ["after relax"]), (Action.CREATE, ["after relax"])]


def test_everything_done_is_kept(res):
    p = _plan(res, _obs(res, _done_chain(res)))
    assert all(x.action == Action.KEEP and x.state == "done" for x in p.actions)
    assert not p.has_changes


def test_changed_source_reruns_the_import_naming_the_hash(res):
    a = _acts(_plan(res, _obs(res, _done_chain(res), import_key="e" * 64)))
    assert a["import"].action == Action.RERUN
    assert a["import"].reasons[0].startswith("source structures/1-element/Cu.cif: source file sha256 000000000000 -> ")
    assert (a["relax"].action, a["relax"].reasons) == (Action.RERUN, ["upstream import will rerun"])


def test_changed_parameter_names_the_field_and_drags_downstream(res):
    a = _acts(_plan(res, _obs(res, _done_chain(res, relax=_stage(res, "relax", stale=True)))))
    assert a["relax"].action == Action.RERUN
    assert a["relax"].reasons == ["inputs changed: profile.fmax_ev_per_a 0.02 -> 0.05"]
    assert a["relax"].key == res.recipes["relax"].key(CAND_SHA) and a["relax"].key_inputs["structure_sha256"] == CAND_SHA
    assert (a["scf"].action, a["scf"].reasons) == (Action.RERUN, ["upstream relax will rerun"])
    assert a["screen"].action == Action.KEEP


def test_screened_out_blocks_the_chain(res):
    a = _acts(_plan(res, _obs(res, {"screen": _stage(res, "screen", strict_pass=False)})))
    assert (a["screen"].action, a["screen"].state, a["screen"].reasons) == (Action.KEEP, "screened_out", ["min_distance"])
    assert (a["relax"].action, a["relax"].reasons) == (Action.BLOCKED, ["screened out: min_distance"])
    assert (a["scf"].action, a["scf"].reasons) == (Action.BLOCKED, ["relax is blocked"])


def test_failure_without_remedy_is_kept_and_blocks(res):
    relax = _stage(res, "relax", "failed", failure_code="engine_error", retryable=False)
    a = _acts(_plan(res, _obs(res, {"screen": _stage(res, "screen"), "relax": relax})))
    assert (a["relax"].action, a["relax"].state) == (Action.KEEP, "failed")
    assert a["relax"].reasons == ["failed: engine_error after 1 attempt(s); `--replace relax` forces a rerun"]
    assert (a["scf"].action, a["scf"].reasons) == (Action.BLOCKED, ["relax failed"])


def test_retryable_failure_names_the_next_attempt(res):
    relax = _stage(res, "relax", "failed", failure_code="ionic_not_converged", retryable=True)
    a = _acts(_plan(res, _obs(res, {"screen": _stage(res, "screen"), "relax": relax})))
    assert (a["relax"].action, a["relax"].reasons) == (Action.RERUN, ["retry after ionic_not_converged (attempt 2 of 3)"])
    spent = _stage(res, "relax", "failed", failure_code="ionic_not_converged", retryable=True, attempts=3)
    a = _acts(_plan(res, _obs(res, {"screen": _stage(res, "screen"), "relax": spent})))
    assert (a["relax"].action, a["relax"].state) == (Action.KEEP, "failed")  # max_attempts reached


def test_running_record_alive_is_waited_for_and_dead_is_resumed(res):
    relax = _stage(res, "relax", "running", pid=4242, host="node7")
    cobs = _obs(res, {"screen": _stage(res, "screen"), "relax": relax})
    a = _acts(_plan(res, cobs, alive={("1-element", "Cu", "relax")}))
    assert (a["relax"].action, a["relax"].state, a["relax"].reasons) == (Action.KEEP, "running", ["running (pid 4242 on node7)"])
    assert (a["scf"].action, a["scf"].reasons) == (Action.BLOCKED, ["waiting for running relax"])
    a = _acts(_plan(res, cobs))  # nobody marked it alive: its process is gone
    assert (a["relax"].action, a["relax"].reasons) == (Action.RERUN, ["interrupted: pid 4242 on node7 is gone; resuming"])
    assert (a["scf"].action, a["scf"].reasons) == (Action.CREATE, ["after relax"])


def test_replace_forces_a_rerun(res):
    a = _acts(_plan(res, _obs(res, _done_chain(res)), replace=frozenset({"scf"})))
    assert (a["scf"].action, a["scf"].reasons) == (Action.RERUN, ["--replace scf"])
    assert a["elastic"].action == Action.KEEP  # elastic reads the relaxed structure, not the SCF
    a = _acts(_plan(res, _obs(res, _done_chain(res)), replace=frozenset({"import"})))
    assert (a["import"].action, a["import"].reasons) == (Action.RERUN, ["source structures/1-element/Cu.cif: --replace import"])


def test_orphans_are_named(res):
    cu = _obs(res, _done_chain(res))
    stray = _obs(res, {}, cand="Ni")
    stray.set_name = "old-set"
    p = _plan(res, cu, stray, extra_dirs=[("1-element", "Cu", "phonon")], set_dirs=["empty-set"])
    orphans = {(a.set_name, a.cand_id, a.stage): a.reasons for a in p.orphans}
    assert orphans == {("old-set", "Ni", "candidate"): ["set 'old-set' is not in the manifest"],
                       ("empty-set", "", "set"): ["set 'empty-set' is not in the manifest"]}
    cu.stage_dirs.append("ablation-raw")  # a variant folder the manifest no longer declares
    p = _plan(res, cu)
    assert [(a.stage, a.reasons) for a in p.orphans] == [("ablation-raw", ["stage 'ablation-raw' is not in the manifest"])]


def test_shortlist_waits_then_admits_the_best(tmp_path, monkeypatch):
    """A ranked set: the first engine stage waits until every candidate is
    screened, then runs for the top_k only."""
    m = emt_manifest(stages=("screen", "relax"))
    m["candidate_sets"] = m["candidate_sets"][:1]
    m["models"] = {"small": {"path": "ck.pt", "sha256": "c" * 64}}
    m["candidate_sets"][0]["rank"] = {"model": "small", "weights": {"log10_k_vrh": 1.0}, "top_k": 1}
    path = make_emt_campaign(tmp_path, m)
    (tmp_path / "ck.pt").write_bytes(b"x")
    monkeypatch.setattr("aimmat.manifest.load._check_models", lambda spec, lines: None)
    res = resolve(load_manifest(path))
    names = [s.cand_id for s in res.spec.candidates]
    assert len(names) >= 2

    def cand(name, k, screened=True):
        c = _obs(res, {"screen": _stage(res, "screen")} if screened else {}, cand=name)
        c._record.prediction = {"terms": {"log10_k_vrh": k}}
        return c

    first, *rest = names
    p = _plan(res, cand(first, 2.0), *(cand(n, 1.0, screened=False) for n in rest), set_dirs=["1-element"])
    a = _acts(p, first)
    assert (a["relax"].action, a["relax"].state) == (Action.BLOCKED, "waiting")
    assert a["relax"].reasons[0].startswith(f"waiting for the shortlist: {len(rest)} candidate(s)")
    p = _plan(res, cand(first, 2.0), *(cand(n, 1.0) for n in rest), set_dirs=["1-element"])
    assert (_acts(p, first)["relax"].action, _acts(p, first)["relax"].reasons) == (Action.CREATE, ["not run yet"])
    other = _acts(p, rest[0])["relax"]
    assert (other.action, other.state) == (Action.BLOCKED, "not_shortlisted")
    assert other.reasons[0].startswith(f"not shortlisted: rank 2 of {len(names)} eligible (score 1.000), top_k 1")
