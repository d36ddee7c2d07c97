"""Relax (cell + ions) and SCF (single point) through an engine."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pymatgen.core import Structure

from aimmat.engines import EngineResult, get_engine
from aimmat.manifest.identity import structure_sha256
from aimmat.stages.base import StageOutcome

# Ladder for ASE-driven relaxations: the only remedy an optimizer that hit its
# step cap needs is to continue from where it stopped.
RESTART = "restart from last structure"


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


def _failed(result: EngineResult, retryable: bool, intervention: str | None) -> StageOutcome:
    return StageOutcome(
        ok=False,
        outputs=summarize(result) if result.output_present else {},
        failure_code=result.failure_code,
        message=result.message,
        output_present=result.output_present,
        retryable=retryable,
        next_intervention=intervention,
    )


def run_relax(structure, profile: dict, directory: Path, previous: StageOutcome | None) -> StageOutcome:
    if previous is not None and previous.outputs.get("structure"):
        structure = Structure.from_dict(previous.outputs["structure"])
    result = get_engine(profile).run(structure, profile, "relax", directory)
    if result.failure_code == "ionic_not_converged":
        return _failed(result, True, RESTART)
    if result.failure_code:
        return _failed(result, False, None)
    return StageOutcome(ok=True, outputs=summarize(result), output_present=True)


def run_scf(structure, profile: dict, directory: Path) -> StageOutcome:
    result = get_engine(profile).run(structure, profile, "static", directory)
    if result.failure_code:
        return _failed(result, False, None)
    return StageOutcome(ok=True, outputs=summarize(result), output_present=True)
