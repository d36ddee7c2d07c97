"""The human-readable plan: grouped by set, then action, stage order and reason."""

from aimmat.plan.actions import Action, Plan, StageAction
from aimmat.plan.show import format_plan, summary_line


def _a(cand, stage, action, reasons=(), state=None, set_name="s"):
    return StageAction(set_name, cand, stage, action, list(reasons), state=state)


def test_groups_in_chain_order_with_orphans_first():
    p = Plan([
        _a("x", "elastic", Action.CREATE, ["after relax"]),
        _a("x", "relax", Action.CREATE, ["after import"]),
        _a("y", "relax", Action.CREATE, ["after import"]),
        _a("y", "import", Action.KEEP, state="done"),
        _a("z", "candidate", Action.ORPHAN, ["no source file gives this candidate"]),
        _a("w", "screen", Action.KEEP, ["min_distance"], state="screened_out"),
    ])
    lines = format_plan(p).splitlines()
    assert lines[0] == "s (4 candidates)"
    body = [ln.split()[:3] for ln in lines[1:-1]]
    assert body == [["-", "orphan", "candidate"], ["+", "create", "relax"], ["+", "create", "elastic"],
                    ["=", "keep", "screen"], ["=", "keep", "1"]]
    assert "[x, y]" in lines[2] and "screened out: min_distance" in lines[4]
    assert lines[-1] == summary_line(p) == "Plan: 3 to create, 0 to rerun, 2 to keep, 0 blocked, 1 orphaned."


def test_no_changes_line():
    p = Plan([_a("x", "import", Action.KEEP, state="done"), _a("x", "relax", Action.BLOCKED, ["screened out"])])
    assert summary_line(p) == "No changes: the campaign folder matches the manifest (1 stages up to date, 1 blocked)."
    assert not p.has_changes and p.pending_candidates() == []
