"""Relax (cell + ions) through an engine, and the engine call with its retry
ladder that the SCF and elastic stages share."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pymatgen.core import Structure

from aimmat.engines import EngineResult, get_engine
from aimmat.identity import structure_sha256
from aimmat.stages.base import StageOutcome


def summarize(result: EngineResult) -> dict:
    structure = Structure.from_dict(result.structure)
    forces = np.asarray(result.forces_ev_per_a)
    return {
        "energy_ev": result.energy_ev,
        "energy_per_atom_ev": result.energy_ev / len(structure),
        "max_force_ev_per_a": float(np.linalg.norm(forces, axis=1).max()) if len(forces) else 0.0,
        "stress_gpa": result.stress_gpa,
        "pressure_gpa": float(-np.trace(np.asarray(result.stress_gpa)) / 3.0),
        "structure": result.structure,
        "structure_sha256": structure_sha256(structure),
        "formula": structure.composition.reduced_formula,
        "volume_a3": float(structure.volume),
        "n_steps": result.n_steps,
        "converged": result.converged,
    }


def engine_extra(result: EngineResult) -> dict:
    """Engine facts worth keeping per attempt (pw.x memory estimate, k-mesh, magnetization...)."""
    return {k: v for k, v in result.extra.items() if v is not None}


def run_engine_task(task: str, structure, profile: dict, directory: Path, previous: StageOutcome | None, kpts=None) -> StageOutcome:
    """One engine run with the retry ladder: the previous attempt's outcome
    says which parameter overrides and which start structure come next."""
    engine = get_engine(profile)
    overrides = {}
    if previous is not None:
        overrides = dict(previous.outputs.get("next_overrides", {}))
        if previous.outputs.get("restart") and previous.outputs.get("structure"):
            structure = Structure.from_dict(previous.outputs["structure"])
    result = engine.run(structure, {**profile, **overrides}, task, directory, kpts=kpts)
    outputs = summarize(result) if result.energy_ev is not None and result.structure else {}
    if result.structure and "structure" not in outputs:
        outputs["structure"] = result.structure
    outputs.update(overrides=overrides, engine=engine_extra(result))
    if not result.failure_code:
        return StageOutcome(ok=True, outputs=outputs, output_present=True)
    rem = engine.remedy(result.failure_code, overrides, profile)
    if rem is not None:
        outputs.update(next_overrides=rem.overrides, restart=rem.restart)
    return StageOutcome(
        ok=False,
        outputs=outputs,
        failure_code=result.failure_code,
        message=result.message,
        output_present=result.output_present,
        retryable=rem is not None,
        next_intervention=rem.tag if rem else None,
    )


def run_relax(structure, cfg: dict, profile: dict | None, directory: Path, previous: StageOutcome | None = None) -> StageOutcome:
    """Relax cell and ions with ``profile``'s engine.

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
        The failed attempt before this one: its remedy and last structure.
    """
    return run_engine_task("relax", structure, profile, directory, previous)
