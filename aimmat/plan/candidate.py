"""One candidate's actions: import, then each stage of the chain in order.

Decides from the records' summaries (``aimmat.state.summary``); a full
record is read only to say what changed. Kept stages carry their key but
not their key inputs (only pending ones need them, to run).
"""

from __future__ import annotations

from collections.abc import Collection

from aimmat.manifest.sources import CandidateSource
from aimmat.plan.actions import PENDING, Action, StageAction
from aimmat.plan.reasons import describe_changes
from aimmat.resolve import Recipe, Resolved
from aimmat.state.scan import CandidateObs

_GATE_WHY = {"failed": "{} failed", "running": "waiting for running {}", "screened_out": "screened out: {}"}


def plan_candidate(res: Resolved, src: CandidateSource, cobs: CandidateObs | None, *,
                   replace: frozenset[str] = frozenset(), alive: Collection = frozenset(),
                   shortlist=None) -> list[StageAction]:
    """Actions for one candidate's stages, in chain order.

    ``alive``: (set, candidate, stage) of running records whose process
    lives (``Observed.alive``). ``shortlist`` (``aimmat.model.rank.Shortlist``):
    the set's ranking; the first engine stage runs only for its members.
    None: no gate.
    """
    s, c = src.set_name, src.cand_id
    out: dict[str, StageAction] = {"import": _import_action(res, src, cobs, replace)}
    csum = cobs.summary if cobs else None
    summaries = cobs.summaries if cobs else {}
    gated = res.shortlist_stage if shortlist is not None else None
    prev = out["import"]
    for name, recipe in res.recipes.items():
        # variants hang off the import alone: they gate nothing and nothing gates them
        gate = prev if recipe.stage.gates else out["import"]
        act = _stage_action(res, s, c, recipe, gate, out, summaries, cobs, csum, replace, alive,
                            shortlist if name == gated else None)
        out[name] = act
        if recipe.stage.gates:
            prev = act
    return list(out.values())


def _import_action(res: Resolved, src: CandidateSource, cobs, replace) -> StageAction:
    s, c = src.set_name, src.cand_id
    key = res.import_keys[(s, c)]
    csum = cobs.summary if cobs else None
    if csum is None:
        return StageAction(s, c, "import", Action.CREATE, ["new candidate"], key, res.import_inputs(src))
    if csum.key != key or "import" in replace:
        inputs = res.import_inputs(src)
        why = ["--replace import"] if csum.key == key else describe_changes(cobs.record.key_inputs, inputs)
        return StageAction(s, c, "import", Action.RERUN, [f"source {src.relpath}: " + "; ".join(why)], key, inputs)
    return StageAction(s, c, "import", Action.KEEP, [], key, None, "done")


def _stage_action(res: Resolved, s, c, recipe: Recipe, gate: StageAction, out, summaries, cobs, csum, replace,
                  alive, shortlist) -> StageAction:
    """One stage's action (see plan_candidate); ``out`` holds the actions so far."""
    stage = recipe.name
    if gate.action == Action.BLOCKED:
        return StageAction(s, c, stage, Action.BLOCKED, [f"{gate.stage} is blocked"])
    if gate.action == Action.KEEP and gate.state in _GATE_WHY:
        what = ", ".join(gate.reasons) if gate.state == "screened_out" else gate.stage
        return StageAction(s, c, stage, Action.BLOCKED, [_GATE_WHY[gate.state].format(what)])
    wave = res.wave_for(s, c, stage)
    if shortlist is not None and wave is None:  # a frozen wave may take a candidate past its shortlist
        why = shortlist.reason(c)
        if why is not None:
            return StageAction(s, c, stage, Action.BLOCKED, [why], state="not_shortlisted" if why.startswith("not") else "waiting")
    src_stage = recipe.source
    upstream = out[src_stage]
    rec = summaries.get(stage)
    if upstream.action in PENDING:
        if rec is None:
            return StageAction(s, c, stage, Action.CREATE, [f"after {src_stage}"])
        return StageAction(s, c, stage, Action.RERUN, [f"upstream {src_stage} will {upstream.action.value}"])

    outside = res.outside_palette(csum.species) if recipe.qe else None
    if outside:  # no pseudopotential: never keyed (its files were not resolved), never run
        if gate.action in PENDING:
            return StageAction(s, c, stage, Action.CREATE, [f"after {gate.stage}"])
        return StageAction(s, c, stage, Action.BLOCKED, ["no_pseudopotential: " + " ".join(outside)], state="screened_out")
    settings = None
    if recipe.settings_from:  # runs with the settings another stage chose (converge)
        sact = out[recipe.settings_from]
        if sact.action in PENDING:
            if rec is None:
                return StageAction(s, c, stage, Action.CREATE, [f"after {recipe.settings_from}"])
            return StageAction(s, c, stage, Action.RERUN, [f"upstream {recipe.settings_from} will {sact.action.value}"])
        if sact.state != "done":
            return StageAction(s, c, stage, Action.BLOCKED, [f"{recipe.settings_from} is not done"])
        settings = chosen_settings(cobs, recipe.settings_from)
    metallic = None
    if src_stage == "import":
        struct_sha = csum.structure_sha256
    else:
        up = summaries[src_stage]
        struct_sha, metallic = up.structure_sha256, up.metallic
    key = recipe.key(struct_sha, csum.species, metallic, settings, wave)
    if rec is not None and rec.key == key and stage not in replace:
        kept = _kept(res, s, c, recipe, rec, key, alive, cobs, wave.max_attempts if wave is not None else None)
        if kept is not None:
            return kept
    # pending: the executor needs the inputs
    inputs = recipe.inputs(struct_sha, csum.species, metallic, settings, wave)
    if rec is None:
        why = f"after {gate.stage}" if gate.action in PENDING else "not run yet"
        if wave is not None:
            why = f"wave {wave.wave}: {wave.intervention}"
        return StageAction(s, c, stage, Action.CREATE, [why], key, inputs)
    if stage in replace:
        why = "--replace " + stage
    elif wave is not None and rec.key != key and cobs.stages[stage].key_inputs.get("wave") != inputs["wave"]:
        why = f"wave {wave.wave}: {wave.intervention} (after {rec.failure_code or rec.status})"
    elif rec.key != key:
        why = "inputs changed: " + "; ".join(describe_changes(cobs.stages[stage].key_inputs, inputs))
    elif rec.status == "running":
        why = f"interrupted: pid {rec.pid} on {rec.host} is gone; resuming"
    else:
        why = f"retry after {rec.failure_code} (attempt {rec.n_attempts + 1} of {wave.max_attempts if wave else res.max_attempts})"
    return StageAction(s, c, stage, Action.RERUN, [why], key, inputs)


def chosen_settings(cobs, stage: str) -> dict | None:
    """The settings a done ``stage`` (converge) chose for this candidate (its record's ``chosen``)."""
    return cobs.stages[stage].result().chosen


def settings_reasons(cobs, stage: str) -> list[str]:
    """``chose ecutwfc_ry 40, kspacing_per_a 0.11, degauss_ry 0.02`` and the ladder lines that justify it."""
    res = cobs.stages[stage].result()
    chosen = res.chosen or {}
    shown = ", ".join(f"{k} {v}" for k, v in chosen.items()
                      if k not in ("occupations", "metallic", "start_structure_sha256") and v is not None)
    return [f"chose {shown}" + (" (metal)" if chosen.get("metallic") else "")] + [f"because {w}" for w in res.why]


def _kept(res: Resolved, s, c, recipe: Recipe, rec, key: str, alive, cobs=None, limit: int | None = None) -> StageAction | None:
    """The KEEP action of a record whose key matches, or None when it must run again."""
    stage = recipe.name
    if rec.status == "done":
        if recipe.stage.kind == "screen" and recipe.stage.gates and not rec.strict_pass:
            return StageAction(s, c, stage, Action.KEEP, rec.failed_list(), key, None, "screened_out")
        if any(r.settings_from == stage for r in res.recipes.values()):  # diff -v: what was chosen, and why
            return StageAction(s, c, stage, Action.KEEP, settings_reasons(cobs, stage), key, None, "done")
        return StageAction(s, c, stage, Action.KEEP, [], key, None, "done")
    if rec.status == "running" and (s, c, stage) in alive:
        return StageAction(s, c, stage, Action.KEEP, [f"running (pid {rec.pid} on {rec.host})"], key, None, "running")
    if rec.status == "failed" and not (rec.retryable and rec.n_attempts < (limit or res.max_attempts)):
        return StageAction(s, c, stage, Action.KEEP,
                           [f"failed: {rec.failure_code} after {rec.n_attempts} attempt(s); `--replace {stage}` forces a rerun"],
                           key, None, "failed")
    return None
