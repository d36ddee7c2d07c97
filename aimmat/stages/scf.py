"""SCF stage: one single-point calculation of the relaxed structure."""

from __future__ import annotations

from pathlib import Path

from aimmat.stages.base import StageOutcome
from aimmat.stages.relax import run_engine_task


def run_scf(structure, cfg: dict, profile: dict | None, directory: Path, previous: StageOutcome | None = None) -> StageOutcome:
    """Energy, forces and stress of ``structure`` at fixed cell and positions.

    Parameters
    ----------
    structure : pymatgen.core.Structure
    cfg : dict
        The stage's configuration (unused: everything is in the profile).
    profile : dict
        The engine profile.
    directory : Path
        The attempt's folder.
    previous : StageOutcome, optional
        The failed attempt before this one: its remedy.
    """
    return run_engine_task("static", structure, profile, directory, previous)
