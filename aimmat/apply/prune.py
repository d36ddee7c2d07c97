"""``apply --prune``: delete orphans (folders the manifest does not give).

An orphan that is a symlink (a set or candidate folder linked in from
elsewhere) is removed as the link: its target, outside the campaign
folder, is never touched. A folder whose way down from the campaign
folder goes through a symlink is refused.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from aimmat.errors import CampaignError
from aimmat.plan.actions import StageAction
from aimmat.state import journal
from aimmat.state.layout import symlink_in


def prune(campaign_dir: Path, orphans: list[StageAction]) -> list[str]:
    """Remove ``orphans``; returns what was removed, relative to the campaign
    folder (a link: with its target, and that only the link went)."""
    removed = []
    for o in orphans:
        if o.stage == "set":
            path = campaign_dir / o.set_name
        elif o.stage == "candidate":
            path = campaign_dir / o.set_name / o.cand_id
        else:
            path = campaign_dir / o.set_name / o.cand_id / o.stage
        rel = str(path.relative_to(campaign_dir))
        found = symlink_in(campaign_dir, path.parent)
        if found is not None:
            link, target = found
            raise CampaignError(f"--prune: refused to remove {path}: " + (f"{link} is a symlink to {target}" if link else target),
                                fix=f"replace {link or path.parent} with a real folder, or remove it, then run apply again")
        try:
            if path.is_symlink():
                target = os.readlink(path)
                path.unlink()
                journal.append(campaign_dir, "pruned", path=rel, symlink_to=target, reason="; ".join(o.reasons))
                removed.append(f"{rel} (a symlink to {target}: the link was removed, not its target)")
            elif path.exists():
                shutil.rmtree(path)
                journal.append(campaign_dir, "pruned", path=rel, reason="; ".join(o.reasons))
                removed.append(rel)
        except OSError as exc:
            raise CampaignError(f"--prune: could not remove {exc.filename or path}: {exc.strerror or exc}",
                                fix="fix its permissions (or remove it by hand), then run apply again") from None
    return removed
