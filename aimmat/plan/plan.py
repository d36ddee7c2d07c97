"""The plan: per candidate and stage, one action and the reasons for it.

``plan`` is pure: it reads a spec and observed records and decides. Only
content hashes decide, never modification times.
"""

from __future__ import annotations

import gc
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from enum import Enum

from aimmat.manifest.load import CampaignSpec
from aimmat.manifest.models import STAGES
from aimmat.manifest.sources import CandidateSource
from aimmat.plan.keys import describe_changes, import_inputs, stage_inputs, stage_key, structure_source
from aimmat.state.procs import process_alive
from aimmat.state.records import StageRecord, record_elements
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


@dataclass
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


AliveFn = Callable[[StageRecord], bool]


def _alive_default(lock_held: bool) -> AliveFn:
    def alive(rec: StageRecord) -> bool:
        # Without a lock holder nothing can be running, whatever a record says.
        return lock_held and process_alive(rec.host, rec.pid, rec.pid_start)

    return alive


def _screen_failures(rec: StageRecord) -> list[str]:
    return [name for name, c in rec.outputs.get("criteria", {}).items() if not c.get("pass")]


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

    ``shortlist`` (``aimmat.model.rank.Shortlist``): the set's ranking; the
    first stage after the screen runs only for its members. None: no gate.
    """
    s, c = src.set_name, src.cand_id
    out: dict[str, StageAction] = {}

    inputs = import_inputs(src, spec)
    key = stage_key(inputs)
    crec = cobs.record if cobs else None
    if crec is None:
        out["import"] = StageAction(s, c, "import", Action.CREATE, ["new candidate"], key, inputs)
    elif crec.key != key or "import" in replace:
        why = ["--replace import"] if crec.key == key else describe_changes(crec.key_inputs, inputs, _LABELS)
        out["import"] = StageAction(s, c, "import", Action.RERUN, [f"source {src.relpath}: " + "; ".join(why)], key, inputs)
    else:
        out["import"] = StageAction(s, c, "import", Action.KEEP, [], key, inputs, state="done")

    chain = ["import"] + spec.stages + spec.ablation_stages
    for i, stage in enumerate(chain[1:], start=1):
        # ablation screens hang off the import alone: they gate nothing and nothing gates them
        gate = out["import"] if stage.startswith("ablation-") else out[chain[i - 1]]
        src_stage = structure_source(stage)
        upstream = out[src_stage]
        rec = cobs.stages.get(stage) if cobs else None

        def act(action: Action, *reasons: str, key=None, inputs=None, state=None) -> None:
            out[stage] = StageAction(s, c, stage, action, list(reasons), key, inputs, state)

        if gate.action == Action.BLOCKED:
            act(Action.BLOCKED, f"{gate.stage} is blocked")
            continue
        if gate.action == Action.KEEP and gate.state in ("failed", "running", "screened_out"):
            why = {
                "failed": f"{gate.stage} failed",
                "running": f"waiting for running {gate.stage}",
                "screened_out": f"screened out: {', '.join(gate.reasons)}",
            }[gate.state]
            act(Action.BLOCKED, why)
            continue
        if shortlist is not None and stage == _first_dft_stage(spec):
            why = shortlist.reason(c)
            if why is not None:
                act(Action.BLOCKED, why, state="not_shortlisted" if why.startswith("not") else "waiting")
                continue
        if upstream.action in PENDING:
            if rec is None:
                act(Action.CREATE, f"after {src_stage}")
            else:
                act(Action.RERUN, f"upstream {src_stage} will {upstream.action.value}")
            continue

        metallic = None
        if src_stage == "import":
            struct_sha = crec.structure_sha256
        else:
            upstream_out = cobs.stages[src_stage].outputs
            struct_sha = upstream_out["structure_sha256"]
            metallic = upstream_out.get("engine", {}).get("metallic")
        inputs = stage_inputs(spec, stage, struct_sha, record_elements(crec), metallic)
        key = stage_key(inputs)
        after = [f"after {gate.stage}"] if gate.action in PENDING else []

        if rec is None:
            act(Action.CREATE, *(after or ["not run yet"]), key=key, inputs=inputs)
        elif stage in replace:
            act(Action.RERUN, "--replace " + stage, key=key, inputs=inputs)
        elif rec.key != key:
            act(Action.RERUN, "inputs changed: " + "; ".join(describe_changes(rec.key_inputs, inputs, _LABELS)), key=key, inputs=inputs)
        elif rec.status == "running":
            if alive(rec):
                act(Action.KEEP, f"running (pid {rec.pid} on {rec.host})", key=key, inputs=inputs, state="running")
            else:
                act(Action.RERUN, f"interrupted: pid {rec.pid} on {rec.host} is gone; resuming", key=key, inputs=inputs)
        elif rec.status == "failed":
            n = len(rec.attempts)
            if rec.retryable and n < spec.manifest.retry.max_attempts:
                act(Action.RERUN, f"retry after {rec.failure_code} (attempt {n + 1} of {spec.manifest.retry.max_attempts})", key=key, inputs=inputs)
            else:
                act(Action.KEEP, f"failed: {rec.failure_code} after {n} attempt(s); `--replace {stage}` forces a rerun", key=key, inputs=inputs, state="failed")
        elif stage == "screen" and not rec.outputs.get("strict_pass", False):  # ablation screens never gate
            act(Action.KEEP, *_screen_failures(rec), key=key, inputs=inputs, state="screened_out")
        else:
            act(Action.KEEP, key=key, inputs=inputs, state="done")
    return [out[st] for st in chain]


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
            rec = cobs.record if cobs else None
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


def _plan(spec, observed, replace, target, alive) -> Plan:
    actions: list[StageAction] = []
    wanted = set()
    shortlists = _shortlists(spec, observed, replace, alive)
    for src in spec.candidates:
        wanted.add((src.set_name, src.cand_id))
        if target and (src.set_name != target[0] or (target[1] and src.cand_id != target[1])):
            continue
        cobs = observed.candidates.get((src.set_name, src.cand_id))
        actions.extend(plan_candidate(spec, src, cobs, replace=replace, alive=alive,
                                      shortlist=shortlists.get(src.set_name)))
        if cobs:
            for d in sorted(set(cobs.stage_dirs) - set(spec.stages) - set(spec.ablation_stages)):
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
