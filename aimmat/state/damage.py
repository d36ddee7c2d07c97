"""Damaged records and symlinks found by a scan: collected, then reported at once.

The scan never stops at an unreadable record and never reads through a link
where a set, candidate or stage folder (or a record file) should be: it
collects each on ``Observed.damaged`` / ``Observed.links`` (``problem``).
A command decides with ``check_observed``: one error naming every problem in
the candidates it works on, warnings for the others.
"""

from __future__ import annotations

import os

from aimmat.errors import CampaignError
from aimmat.state.layout import CANDIDATE_FILE, RECORD_FILE


def problem(observed, path: str, what: str, link: str | None = None) -> None:
    """Collect a damaged record (or, with ``link``, a symlink) on ``observed``;
    without one (a single record read by apply), raise it at once."""
    if observed is None:
        msg, kw = _describe([(path, what, link)], os.path.dirname(path))
        raise CampaignError(msg, **kw)
    if link is None:
        observed.damaged.append((path, what))
    else:
        observed.links.append((path, link))


def _fix(path: str, what: str, link: str | None) -> str:
    name = os.path.basename(path)
    if link is not None:
        kind = "file" if name in (CANDIDATE_FILE, RECORD_FILE) else "folder"
        return f"replace it with a real {kind} (rm {path}; then copy {link} there), or remove it"
    if name == RECORD_FILE:
        return f"restore it from a backup, or delete the stage folder {os.path.dirname(path)} to recompute the stage"
    if name == CANDIDATE_FILE:
        return f"restore it from a backup, or delete the candidate folder {os.path.dirname(path)} to import it again"
    if what.startswith("cannot be listed"):
        return "make it readable (chmod u+rx), or delete it to recompute what it held"
    return f"delete it ({path}) to recompute that stage"


def _line(path: str, what: str, link: str | None, fix: bool = True) -> str:
    if link is not None:
        line = f"{path} -> {link}: a symlink (aimmat never follows links out of the campaign folder)"
    else:
        line = f"{path}: {what}"
    return line + (f"\n    fix: {_fix(path, what, link)}" if fix else "")


def _describe(items: list[tuple[str, str, str | None]], where) -> tuple[str, dict]:
    """The message (and fix) of a CampaignError naming every problem in ``items``."""
    n_links = sum(1 for i in items if i[2] is not None)
    counts = [f"{len(items) - n_links} unreadable record(s)"] if len(items) > n_links else []
    counts += [f"{n_links} symlink(s)"] if n_links else []
    lines = "\n".join(f"  {_line(*i)}" for i in items)
    return (f"{' and '.join(counts)} in the campaign folder {where}:\n{lines}",
            {"fix": "repair each path as its line says, then run the command again"})


def check_observed(observed, candidates, target: tuple[str, str | None] | None = None) -> list[str]:
    """Raise one CampaignError naming every damaged record and symlink that
    belongs to a candidate in scope: ``candidates`` (the manifest's (set,
    candidate) pairs) narrowed to ``target`` (SET or (SET, CANDIDATE)). The
    others (outside the target, or orphans the manifest does not give) are
    returned as warning lines; the command leaves them alone."""
    if not observed.damaged and not observed.links:
        return []
    scope = {(s, c) for s, c in candidates
             if target is None or (s == target[0] and (target[1] is None or c == target[1]))}
    sets = {s for s, _ in scope}
    root = str(observed.campaign_dir)
    inside, outside = [], []
    for path, what, link in ([(p, w, None) for p, w in observed.damaged] + [(p, "symlink", t) for p, t in observed.links]):
        parts = os.path.relpath(path, root).split(os.sep)
        ours = parts[0] in sets if len(parts) == 1 else (parts[0], parts[1]) in scope
        (inside if ours else outside).append((path, what, link))
    if inside:
        msg, kw = _describe(inside, root)
        if outside:
            msg += f"\n  (and {len(outside)} more outside the candidates this command works on)"
        raise CampaignError(msg, **kw)
    why = "outside --target" if target is not None else "not a candidate of the manifest"
    return [f"warning: {_line(*i, fix=False)} ({why}: left alone"
            + ("; `apply --prune` removes the link, not its target)" if i[2] is not None and target is None else ")")
            for i in outside]
