"""``apply --prune``: delete orphans (folders the manifest does not give)."""

from __future__ import annotations

import shutil
from pathlib import Path

from aimmat.plan.actions import StageAction
from aimmat.state import journal


def prune(campaign_dir: Path, orphans: list[StageAction]) -> list[str]:
    removed = []
    for o in orphans:
        if o.stage == "set":
            path = campaign_dir / o.set_name
        elif o.stage == "candidate":
            path = campaign_dir / o.set_name / o.cand_id
        else:
            path = campaign_dir / o.set_name / o.cand_id / o.stage
        if path.exists():
            shutil.rmtree(path)
            journal.append(campaign_dir, "pruned", path=str(path.relative_to(campaign_dir)), reason="; ".join(o.reasons))
            removed.append(str(path.relative_to(campaign_dir)))
    return removed
