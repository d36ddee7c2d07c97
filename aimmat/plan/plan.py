"""The plan: per candidate and stage, one action and the reasons for it.

``plan`` is a pure function of a resolved campaign and an observed state:
no I/O, no process probes (the scan marked live running records), nothing
written into its inputs. Only content hashes decide, never modification
times. Callers that plan 100k candidates pause the garbage collector
around it (``aimmat.runtime.gcpause``).
"""

from __future__ import annotations

from aimmat.plan.actions import Action, Plan, StageAction
from aimmat.plan.candidate import plan_candidate
from aimmat.plan.shortlist import shortlists
from aimmat.resolve import Resolved
from aimmat.resolve.keys import fill, fillable
from aimmat.state.layout import is_stage_dir
from aimmat.state.scan import CandidateObs, Observed


def plan(res: Resolved, observed: Observed, *, replace: frozenset[str] = frozenset(),
         target: tuple[str, str | None] | None = None, lists: dict | None = None) -> Plan:
    """Actions for every candidate of the manifest (or of ``target``: SET or
    (SET, CANDIDATE)), then orphans: folders on disk the manifest does not give.
    ``lists``: the ranked sets' shortlists when the caller already made them
    (``aimmat.plan.shortlist.shortlists`` of the same inputs)."""
    actions: list[StageAction] = []
    wanted = set()
    known = set(res.recipes)
    if lists is None:
        lists = shortlists(res, observed, replace) if res.ranked else {}
    program = _keep_program(res) if not replace else None
    get = observed.candidates.get
    for src in res.spec.candidates:
        ck = (src.set_name, src.cand_id)
        wanted.add(ck)
        if target and (src.set_name != target[0] or (target[1] and src.cand_id != target[1])):
            continue
        cobs = get(ck)
        shortlist = lists.get(src.set_name)
        acts = None
        if cobs is not None and shortlist is None and program is not None and not (
                res.palette is not None and cobs.summary is not None and res.outside_palette(cobs.summary.species)):
            acts = _all_done(src, res.import_keys[ck], cobs, program)
        if acts is None:
            acts = plan_candidate(res, src, cobs, replace=replace, alive=observed.alive, shortlist=shortlist)
        actions.extend(acts)
        if cobs and not known.issuperset(cobs.stage_dirs):
            for d in sorted(set(cobs.stage_dirs) - known):
                if is_stage_dir(d):
                    actions.append(StageAction(src.set_name, src.cand_id, d, Action.ORPHAN, [f"stage '{d}' is not in the manifest"]))
    actions.extend(_orphans(res, observed, wanted, target))
    return Plan(actions)


def _orphans(res: Resolved, observed: Observed, wanted: set, target) -> list[StageAction]:
    out = []
    sets = set(res.spec.sets())
    for (s, c) in sorted(observed.candidates):
        if (s, c) in wanted or (target and s != target[0]):
            continue
        why = f"set '{s}' is not in the manifest" if s not in sets else "no source file gives this candidate"
        out.append(StageAction(s, c, "candidate", Action.ORPHAN, [why]))
    for s in observed.set_dirs:
        if s not in sets and not any(k[0] == s for k in observed.candidates) and not target:
            out.append(StageAction(s, "", "set", Action.ORPHAN, [f"set '{s}' is not in the manifest"]))
    return out


def _keep_program(res: Resolved) -> list[tuple] | None:
    """Per stage: (stage, where its structure comes from, whether a failed
    screen blocks, the recipe, its key template when the key depends on the
    structure hash alone), for ``_all_done``; None when a stage's key holds
    another stage's chosen settings (per-candidate values: planned in full)."""
    if any(r.settings_from for r in res.recipes.values()):
        return None
    return [(name, r.source, r.stage.kind == "screen" and r.stage.gates, r, r.simple_template())
            for name, r in res.recipes.items()]


def _all_done(src, ikey: str, cobs: CandidateObs, program: list[tuple]) -> list[StageAction] | None:
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
    for stage, src_stage, gating, recipe, tmpl in program:
        rec = get(stage)
        if rec is None or rec.status != done or (gating and not rec.strict_pass):
            return None
        up = csum if src_stage == "import" else get(src_stage)
        sha = up.structure_sha256
        if tmpl is not None and fillable(sha):
            key = fill(tmpl, sha)
        else:
            key = recipe.key(sha, csum.species, None if up is csum else up.metallic)
        if key != rec.key:
            return None
        out.append(StageAction(s, c, stage, keep, [], key, None, done))
    return out
