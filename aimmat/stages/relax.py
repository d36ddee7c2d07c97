"""Relax (cell + ions) through an engine, and the engine call with its retry
ladder that the SCF and elastic stages share."""

from __future__ import annotations

import inspect
from pathlib import Path

import numpy as np
from pymatgen.core import Structure

from aimmat.engines import EngineResult, get_engine
from aimmat.identity import structure_sha256
from aimmat.stages.base import StageOutcome
from aimmat.stages.sanity import check_result


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


def next_remedy(engine, result: EngineResult, overrides: dict, profile: dict):
    """The engine's next rung; engines whose ``remedy`` takes ``result`` learn
    what the failed attempt left (a new structure, restart files)."""
    if "result" in inspect.signature(engine.remedy).parameters:
        return engine.remedy(result.failure_code, overrides, profile, result=result)
    return engine.remedy(result.failure_code, overrides, profile)


def run_engine_task(task: str, structure, profile: dict, directory: Path, previous: StageOutcome | None, kpts=None,
                    reuse_from=()) -> StageOutcome:
    """One engine run with the retry ladder: the previous attempt's outcome
    says which parameter overrides and which start structure come next.

    Overrides may carry run fields (``walltime_s``, ``mpi_ranks``) and the
    previous attempt's restart folder (``restart_dir``, pw.x restart files):
    the engine reads them from the merged profile. ``reuse_from``: the same
    run's folders in earlier attempts of the same key (``reuse_sources``).
    """
    engine = get_engine(profile)
    overrides, start = {}, None
    if previous is not None:
        overrides = dict(previous.outputs.get("next_overrides", {}))
        if previous.outputs.get("restart") and previous.outputs.get("structure"):
            start = previous.outputs["structure"]
        else:
            # a rung that does not restart from the last structure keeps the one the failed
            # attempt started from: a restarted relaxation whose next attempt fails before
            # printing a cell must not fall back to the stage's input and lose its progress
            start = previous.outputs.get("start_structure")
        if start:
            structure = Structure.from_dict(start)
    params = {**profile, **overrides, **({"reuse_from": list(reuse_from)} if reuse_from else {})}
    result = engine.run(structure, params, task, directory, kpts=kpts)
    outputs = summarize(result) if result.energy_ev is not None and result.structure else {}
    if result.structure and "structure" not in outputs:
        outputs["structure"] = result.structure
    outputs.update(overrides=overrides, engine=engine_extra(result))
    if start:
        outputs["start_structure"] = start
    if not result.failure_code:
        bad = check_result(result, profile["kind"])
        if bad is None:
            return StageOutcome(ok=True, outputs=outputs, output_present=True)
        # a finished run with an unphysical result: never fitted, and rerunning the
        # same inputs would give the same numbers, so no retry
        outputs["sanity"] = bad.to_json()
        return StageOutcome(ok=False, outputs=outputs, failure_code=bad.failure_code, message=bad.message,
                            output_present=True, retryable=False)
    rem = next_remedy(engine, result, overrides, profile)
    if rem is not None:
        # restart_dir and walltime travel in next_overrides: every caller carries those
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
