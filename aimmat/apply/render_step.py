"""Render as a step of apply: the manuscript is written under the campaign
lock, like every other write to the campaign folder.

``aimmat render`` runs this step alone; ``aimmat apply`` runs it last when
the manifest declares ``render:`` targets.
"""

from __future__ import annotations

from aimmat.manifest.load import CampaignSpec
from aimmat.render.outputs import build
from aimmat.state.atomic import write_bytes_atomic
from aimmat.state.lock import CampaignLock, held_here
from aimmat.state.scan import scan


def render(spec: CampaignSpec, command: list[str] | None = None) -> dict:
    """Write the manifest's render targets into <campaign>/manuscript/ (and
    evidence/snapshot.json); returns the render lock. Every output is
    rendered before the first is written: an error writes nothing."""
    cdir = spec.campaign_dir
    lock, files = build(spec, scan(cdir, probe_alive=False), command)
    cdir.mkdir(parents=True, exist_ok=True)
    if held_here(cdir):  # inside apply
        _write(cdir, files)
    else:
        with CampaignLock(cdir):
            _write(cdir, files)
    return lock


def _write(cdir, files) -> None:
    for rel, data in files:
        write_bytes_atomic(cdir / rel, data)
