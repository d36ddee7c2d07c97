"""Human-readable plan: grouped by set, then by (action, stage, reason)."""

from __future__ import annotations

from collections import defaultdict

from aimmat.manifest import stage_table
from aimmat.plan.actions import Action, Plan

SYMBOL = {Action.CREATE: "+", Action.RERUN: "~", Action.KEEP: "=", Action.BLOCKED: "!", Action.ORPHAN: "-"}
MAX_NAMES = 6
_ORPHAN_ORDER = {"set": -2, "candidate": -1}


def _stage_order(stage: str) -> int:
    return _ORPHAN_ORDER.get(stage) or stage_table.order(stage)


def _names(cands: list[str]) -> str:
    shown = ", ".join(cands[:MAX_NAMES])
    return shown + (f", ... ({len(cands) - MAX_NAMES} more)" if len(cands) > MAX_NAMES else "")


def format_plan(plan: Plan, *, verbose: bool = False) -> str:
    by_set: dict[str, list] = defaultdict(list)
    for a in plan.actions:
        by_set[a.set_name].append(a)
    lines = []
    for set_name, acts in by_set.items():
        cands = {a.cand_id for a in acts if a.cand_id}
        groups: dict[tuple, list[str]] = defaultdict(list)
        kept = 0
        for a in acts:
            if a.action == Action.KEEP and not (verbose or a.state in ("failed", "running", "screened_out")):
                kept += 1
                continue
            reason = "; ".join(a.reasons)
            if a.action == Action.KEEP and a.state == "screened_out":
                reason = "screened out: " + reason
            groups[(a.action, a.stage, reason)].append(a.cand_id or set_name)
        if not groups:
            continue
        lines.append(f"{set_name} ({len(cands)} candidates)")
        order = [Action.ORPHAN, Action.CREATE, Action.RERUN, Action.BLOCKED, Action.KEEP]
        for (action, stage, reason), names in sorted(groups.items(), key=lambda kv: (order.index(kv[0][0]), _stage_order(kv[0][1]), kv[0][2])):
            detail = f"  {reason}" if reason else ""
            lines.append(f"  {SYMBOL[action]} {action.value:7s} {stage:9s} {len(names):5d}{detail}  [{_names(sorted(names))}]")
        if kept and not verbose:
            lines.append(f"  = keep    {'':9s} {kept:5d}  up to date")
    lines.append(summary_line(plan))
    return "\n".join(lines)


def summary_line(plan: Plan) -> str:
    c = {a: plan.count(a) for a in Action}
    if not plan.has_changes:
        extra = f", {c[Action.BLOCKED]} blocked" if c[Action.BLOCKED] else ""
        return f"No changes: the campaign folder matches the manifest ({c[Action.KEEP]} stages up to date{extra})."
    return (
        f"Plan: {c[Action.CREATE]} to create, {c[Action.RERUN]} to rerun, {c[Action.KEEP]} to keep, "
        f"{c[Action.BLOCKED]} blocked, {c[Action.ORPHAN]} orphaned."
    )
