"""The plan: per candidate and stage, one action and the reasons for it.

``plan`` is pure: it reads a spec and observed records and decides. Only
content hashes decide, never modification times.
"""

from __future__ import annotations

import gc
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from enum import Enum

from aimmat.errors import AimmatError
from aimmat.manifest.load import CampaignSpec
from aimmat.manifest.models import STAGES
from aimmat.manifest.sources import CandidateSource
from aimmat.plan.keys import describe_changes, import_inputs, import_key, stage_inputs, stage_key_for, structure_source
from aimmat.state.procs import process_alive
from aimmat.state.summary import StageSummary
from aimmat.state.scan import CandidateObs, Observed


class Action(str, Enum):
    CREATE = "create"
    RERUN = "rerun"
    KEEP = "keep"
    BLOCKED = "blocked"
    ORPHAN = "orphan"


PENDING = (Action.CREATE, Action.RERUN)
_LABELS = {
    "source_sha256": "source file sha256",
    "checkpoint_sha256": "generator checkpoint sha256",
    "predictor_sha256": "ranking model checkpoint sha256",
    "structure_sha256": "input structure sha256",
}


@dataclass(slots=True)
class StageAction:
    set_name: str
    cand_id: str
    stage: str  # "import", a stage name, or "candidate"/"set" for orphans
    action: Action
    reasons: list[str] = field(default_factory=list)
    key: str | None = None
    key_inputs: dict | None = None
    state: str | None = None  # record status when kept: done / failed / running / screened_out

    @property
    def pending(self) -> bool:
        return self.action in PENDING

    def to_json(self) -> dict:
        d = asdict(self)
        d["action"] = self.action.value
        return d


@dataclass
class Plan:
    actions: list[StageAction]

    def count(self, action: Action) -> int:
        return sum(1 for a in self.actions if a.action == action)

    @property
    def has_changes(self) -> bool:
        return any(a.action in PENDING or a.action == Action.ORPHAN for a in self.actions)

    @property
    def orphans(self) -> list[StageAction]:
        return [a for a in self.actions if a.action == Action.ORPHAN]

    def to_json(self) -> dict:
        return {
            "summary": {a.value: self.count(a) for a in Action},
            "has_changes": self.has_changes,
            "actions": [a.to_json() for a in self.actions],
        }


AliveFn = Callable[[StageSummary], bool]  # a StageRecord has the same fields


def _alive_default(lock_held: bool) -> AliveFn:
    def alive(rec: StageSummary) -> bool:
        # Without a lock holder nothing can be running, whatever a record says.
        return lock_held and process_alive(rec.host, rec.pid, rec.pid_start)

    return alive


def plan_candidate(
    spec: CampaignSpec,
    src: CandidateSource,
    cobs: CandidateObs | None,
    *,
    replace: frozenset[str] = frozenset(),
    alive: AliveFn = lambda rec: False,
    shortlist=None,
) -> list[StageAction]:
    """Actions for one candidate's stages, in execution order.

    Decides from the records' summaries (``aimmat.state.summary``); a full
    record is read only to say what changed. Kept stages carry their key but
    not their key inputs (only pending ones need them, to run).

    ``shortlist`` (``aimmat.model.rank.Shortlist``): the set's ranking; the
    first stage after the screen runs only for its members. None: no gate.
    """
    s, c = src.set_name, src.cand_id
    out: dict[str, StageAction] = {}

    key = import_key(src, spec)
    csum = cobs.summary if cobs else None
    if csum is None:
        out["import"] = StageAction(s, c, "import", Action.CREATE, ["new candidate"], key, import_inputs(src, spec))
    elif csum.key != key or "import" in replace:
        inputs = import_inputs(src, spec)
        why = ["--replace import"] if csum.key == key else describe_changes(cobs.record.key_inputs, inputs, _LABELS)
        out["import"] = StageAction(s, c, "import", Action.RERUN, [f"source {src.relpath}: " + "; ".join(why)], key, inputs)
    else:
        out["import"] = StageAction(s, c, "import", Action.KEEP, [], key, None, "done")

    chain = _chain(spec)
    first_dft = _first_dft_stage(spec) if shortlist is not None else None
    summaries = cobs.summaries if cobs else {}
    prev = out["import"]
    for stage in chain[1:]:
        # ablation screens hang off the import alone: they gate nothing and nothing gates them
        gate = out["import"] if stage.startswith("ablation-") else prev
        prev = out[stage] = _stage_action(spec, s, c, stage, gate, out, summaries, cobs, csum, replace, alive,
                                          shortlist if stage == first_dft else None)
    return [out[st] for st in chain]


def _stage_action(spec, s, c, stage, gate, out, summaries, cobs, csum, replace, alive, shortlist) -> StageAction:
    """One stage's action (see plan_candidate); ``out`` holds the actions so far."""
    if gate.action == Action.BLOCKED:
        return StageAction(s, c, stage, Action.BLOCKED, [f"{gate.stage} is blocked"])
    if gate.action == Action.KEEP and gate.state in ("failed", "running", "screened_out"):
        why = {
            "failed": f"{gate.stage} failed",
            "running": f"waiting for running {gate.stage}",
            "screened_out": f"screened out: {', '.join(gate.reasons)}",
        }[gate.state]
        return StageAction(s, c, stage, Action.BLOCKED, [why])
    if shortlist is not None:
        why = shortlist.reason(c)
        if why is not None:
            return StageAction(s, c, stage, Action.BLOCKED, [why], state="not_shortlisted" if why.startswith("not") else "waiting")
    src_stage = structure_source(stage)
    upstream = out[src_stage]
    rec = summaries.get(stage)
    if upstream.action in PENDING:
        if rec is None:
            return StageAction(s, c, stage, Action.CREATE, [f"after {src_stage}"])
        return StageAction(s, c, stage, Action.RERUN, [f"upstream {src_stage} will {upstream.action.value}"])

    metallic = None
    if src_stage == "import":
        struct_sha = csum.structure_sha256
    else:
        up = summaries[src_stage]
        struct_sha, metallic = up.structure_sha256, up.metallic
    key = stage_key_for(spec, stage, struct_sha, csum.species, metallic)
    if rec is not None and rec.key == key and stage not in replace:
        if rec.status == "done":
            if stage == "screen" and not rec.strict_pass:  # ablation screens never gate
                return StageAction(s, c, stage, Action.KEEP, rec.failed_list(), key, None, "screened_out")
            return StageAction(s, c, stage, Action.KEEP, [], key, None, "done")
        if rec.status == "running" and alive(rec):
            return StageAction(s, c, stage, Action.KEEP, [f"running (pid {rec.pid} on {rec.host})"], key, None, "running")
        if rec.status == "failed":
            n, most = rec.n_attempts, spec.manifest.retry.max_attempts
            if not (rec.retryable and n < most):
                return StageAction(s, c, stage, Action.KEEP,
                                   [f"failed: {rec.failure_code} after {n} attempt(s); `--replace {stage}` forces a rerun"],
                                   key, None, "failed")
    # pending: the executor needs the inputs
    inputs = stage_inputs(spec, stage, struct_sha, csum.species_list(), metallic)
    if rec is None:
        why = f"after {gate.stage}" if gate.action in PENDING else "not run yet"
        return StageAction(s, c, stage, Action.CREATE, [why], key, inputs)
    if stage in replace:
        why = "--replace " + stage
    elif rec.key != key:
        why = "inputs changed: " + "; ".join(describe_changes(cobs.stages[stage].key_inputs, inputs, _LABELS))
    elif rec.status == "running":
        why = f"interrupted: pid {rec.pid} on {rec.host} is gone; resuming"
    else:
        why = f"retry after {rec.failure_code} (attempt {rec.n_attempts + 1} of {spec.manifest.retry.max_attempts})"
    return StageAction(s, c, stage, Action.RERUN, [why], key, inputs)


def _chain(spec: CampaignSpec) -> list[str]:
    """"import", the enabled stages, the ablation screens: the order actions are listed in."""
    chain = spec.cache.get("chain")
    if chain is None:
        chain = spec.cache["chain"] = ["import"] + spec.stages + spec.ablation_stages
    return chain


def _first_dft_stage(spec: CampaignSpec) -> str | None:
    return next((st for st in spec.stages if st != "screen"), None)


def shortlist_entry(actions: list[StageAction]) -> tuple[str, str]:
    """(cand_id, 'eligible' | 'ineligible' | 'waiting') from a candidate's import and screen actions."""
    by = {a.stage: a for a in actions}
    last = by.get("screen", by["import"])
    if last.action == Action.KEEP and last.state == "done":
        return last.cand_id, "eligible"
    if last.action in PENDING or last.state == "running" or by["import"].action in PENDING:
        return last.cand_id, "waiting"
    return last.cand_id, "ineligible"


def set_shortlist(spec: CampaignSpec, set_name: str, observe: Callable[[CandidateSource], CandidateObs | None],
                  replace: frozenset[str] = frozenset(), alive: AliveFn = lambda rec: False):
    """The set's Shortlist (None if the set has no top_k), from each candidate's
    import and screen actions; ``observe`` gives a candidate's records."""
    cset = next(s for s in spec.manifest.candidate_sets if s.name == set_name)
    if cset.rank is None or cset.rank.top_k is None:
        return None
    from aimmat.model.rank import build_shortlist

    entries = []
    for src in spec.candidates:
        if src.set_name == set_name:
            cobs = observe(src)
            cid, state = shortlist_entry(plan_candidate(spec, src, cobs, replace=replace, alive=alive))
            rec = cobs.record if cobs else None  # the prediction: decoded for ranked sets only
            entries.append((cid, state, rec.prediction if rec is not None else None))
    return build_shortlist(cset.rank.top_k, cset.rank.weights, entries)


def plan(
    spec: CampaignSpec,
    observed: Observed,
    *,
    replace: frozenset[str] = frozenset(),
    target: tuple[str, str | None] | None = None,
    alive: AliveFn | None = None,
) -> Plan:
    alive = alive or _alive_default(observed.lock_held)
    enabled = gc.isenabled()
    gc.disable()  # see state.scan.scan: the plan adds long-lived objects per stage
    try:
        return _plan(spec, observed, replace, target, alive)
    finally:
        if enabled:
            gc.enable()


def _shortlists(spec, observed, replace, alive) -> dict:
    def observe(src):
        return observed.candidates.get((src.set_name, src.cand_id))

    return {c.name: set_shortlist(spec, c.name, observe, replace, alive)
            for c in spec.manifest.candidate_sets if c.rank is not None and c.rank.top_k is not None}


def _keep_program(spec, chain: list[str]) -> list[tuple]:
    """Per stage after the import: (stage, where its structure comes from, is
    the gating screen, key template when the key depends on the structure
    hash alone, else None), for ``_all_done``."""
    program = []
    for stage in chain[1:]:
        try:
            stage_key_for(spec, stage, "0" * 64)  # makes the template where there is one
        except AimmatError:  # e.g. pw.x missing: the candidates' own keys will say so
            pass
        template = (spec.cache.get("key_template_simple") or {}).get(stage)
        program.append((stage, structure_source(stage), stage == "screen", template))
    return program


def _all_done(spec, src, ikey: str, cobs: CandidateObs, program: list[tuple]) -> list[StageAction] | None:
    """The actions of a candidate whose every stage is kept as done, or None
    when any is not (then ``plan_candidate`` decides). The common case of a
    large campaign, written out: it is most of a 100k-candidate diff."""
    csum = cobs.summary
    if csum is None or csum.key != ikey:
        return None
    s, c = src.set_name, src.cand_id
    get = cobs.summaries.get
    keep, done = Action.KEEP, "done"
    out = [StageAction(s, c, "import", keep, [], ikey, None, done)]
    for stage, src_stage, gating, template in program:
        rec = get(stage)
        if rec is None or rec.status != done or (gating and not rec.strict_pass):
            return None
        up = csum if src_stage == "import" else get(src_stage)
        sha = up.structure_sha256
        if template is not None and sha.__class__ is str and sha.isascii() and sha.isalnum():
            h = template[0].copy()  # keys.stage_key_for, inlined
            h.update(sha.encode() + template[1])
            key = h.hexdigest()
        else:
            key = stage_key_for(spec, stage, sha, csum.species, None if up is csum else up.metallic)
        if key != rec.key:
            return None
        out.append(StageAction(s, c, stage, keep, [], key, None, done))
    return out


def _plan(spec, observed, replace, target, alive) -> Plan:
    actions: list[StageAction] = []
    wanted = set()
    known = set(spec.stages) | set(spec.ablation_stages)
    shortlists = _shortlists(spec, observed, replace, alive)
    chain = _chain(spec)
    get = observed.candidates.get
    program = _keep_program(spec, chain) if not replace else None
    for src in spec.candidates:
        ck = (src.set_name, src.cand_id)
        wanted.add(ck)
        if target and (src.set_name != target[0] or (target[1] and src.cand_id != target[1])):
            continue
        cobs = get(ck)
        shortlist = shortlists.get(src.set_name) if shortlists else None
        acts = None
        if cobs is not None and shortlist is None and program is not None:
            acts = _all_done(spec, src, import_key(src, spec), cobs, program)
        if acts is None:
            acts = plan_candidate(spec, src, cobs, replace=replace, alive=alive, shortlist=shortlist)
        actions.extend(acts)
        if cobs and not known.issuperset(cobs.stage_dirs):
            for d in sorted(set(cobs.stage_dirs) - known):
                if d in STAGES or d.startswith("ablation-"):
                    actions.append(StageAction(src.set_name, src.cand_id, d, Action.ORPHAN, [f"stage '{d}' is not in the manifest"]))
    sets = set(spec.sets())
    for (s, c) in sorted(observed.candidates):
        if (s, c) in wanted or (target and s != target[0]):
            continue
        why = f"set '{s}' is not in the manifest" if s not in sets else "no source file gives this candidate"
        actions.append(StageAction(s, c, "candidate", Action.ORPHAN, [why]))
    for s in observed.set_dirs:
        if s not in sets and not any(k[0] == s for k in observed.candidates) and not target:
            actions.append(StageAction(s, "", "set", Action.ORPHAN, [f"set '{s}' is not in the manifest"]))
    return Plan(actions)
