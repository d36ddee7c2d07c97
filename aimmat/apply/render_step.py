"""Render as a step of apply: the manuscript is written under the campaign
lock, like every other write to the campaign folder.

``aimmat render`` runs this step alone; ``aimmat apply`` runs it last when
the manifest declares ``render:`` targets.

Every destination is checked before the first is written: its resolved
path must stay inside ``<campaign>/manuscript`` (``<campaign>/evidence``
for the snapshot). A symlink on the way (the folder itself, a subfolder,
an output file) that points elsewhere is refused, and nothing is written.
"""

from __future__ import annotations

import os
from pathlib import Path

from aimmat.errors import RenderError
from aimmat.manifest.load import CampaignSpec
from aimmat.render.outputs import build
from aimmat.state.atomic import write_bytes_atomic
from aimmat.state.lock import CampaignLock, held_here
from aimmat.state.scan import check_observed, scan

AREAS = ("manuscript", "evidence")  # the folders render writes into, directly under the campaign folder


def render(spec: CampaignSpec, command: list[str] | None = None) -> dict:
    """Write the manifest's render targets into <campaign>/manuscript/ (and
    evidence/snapshot.json); returns the render lock. Every output is
    rendered before the first is written: an error writes nothing."""
    cdir = spec.campaign_dir
    observed = scan(cdir, probe_alive=False)
    check_observed(observed, ((c.set_name, c.cand_id) for c in spec.candidates))  # a damaged record: exit 4
    lock, files = build(spec, observed, command)
    cdir.mkdir(parents=True, exist_ok=True)
    if held_here(cdir):  # inside apply
        _write(cdir, files)
    else:
        with CampaignLock(cdir):
            _write(cdir, files)
    return lock


def _write(cdir, files) -> None:
    dests = confined(cdir, [rel for rel, _ in files])
    for dest, (_, data) in zip(dests, files):
        write_bytes_atomic(dest, data)


def confined(cdir, rels: list[str]) -> list[Path]:
    """The destinations of ``rels`` (paths relative to the campaign folder),
    each checked to resolve inside its area (``manuscript/`` or
    ``evidence/``); a RenderError naming every one that does not."""
    root = os.path.realpath(cdir)
    out, bad = [], []
    for rel in rels:
        area = rel.split("/", 1)[0]
        dest = Path(cdir) / rel
        base = os.path.join(root, area)
        real = os.path.realpath(os.path.join(root, rel))
        if area not in AREAS or "/" not in rel or not real.startswith(base + os.sep):
            bad.append(f"{rel}: {_why(root, rel, real, area)}")
        out.append(dest)
    if bad:
        areas = " or ".join(f"{cdir}/{a}/" for a in AREAS)
        raise RenderError(f"{len(bad)} render output(s) would be written outside {areas} (nothing was written):\n"
                          + "\n".join(f"  {b}" for b in bad),
                          fix="remove each symlink named (rm LINK; render makes real folders and files) and render "
                              "again; an output path must be relative, inside manuscript/, without '..'")
    return out


def _why(root: str, rel: str, real: str, area: str) -> str:
    """Why ``rel`` leaves its area: the first symlink on its way, else the path itself."""
    cur = root
    for part in rel.split("/"):
        cur = os.path.join(cur, part)
        if os.path.islink(cur):
            return f"{cur} is a symlink to {os.readlink(cur)} (resolves to {real})"
    if area not in AREAS:
        return f"not inside {'/ or '.join(AREAS)}/"
    return f"resolves to {real}, outside {os.path.join(root, area)}"
