"""Elastic stage: the unstrained cell and each strained cell (ions relaxed at
fixed cell) through the engine, then the fit.

A strained cell that did not converge is never fitted: the attempt fails,
and the next attempt reruns only the lost cells, each one rung further up the
engine's retry ladder (and from its last positions), keeping every cell that
already converged. All cells of one tensor share the k-mesh of the
unstrained cell, so the fit sees no mesh change between strains.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from pymatgen.analysis.elasticity.strain import Deformation

from aimmat.elastic import fit_elastic, strain_set
from aimmat.elastic.strains import check_spans, lagrangian_from_deformation, matrix_to_voigt
from aimmat.elastic.symmetry import crystal_symmetry
from aimmat.engines.run_profile import RunProfile
from aimmat.runtime import slots
from aimmat.stages.base import StageOutcome
from aimmat.stages.relax import run_engine_task


def _cells(structure, cfg: dict) -> tuple[list[tuple[str, np.ndarray]], dict]:
    defs, info = strain_set(structure, cfg["magnitudes"], cfg["symprec"], pure=cfg["strain_set"] == "pure")
    return [("eq", np.eye(3))] + [(f"c{i:02d}", d) for i, d in enumerate(defs)], info


def run_elastic(structure, cfg: dict, profile: dict | None, directory: Path, previous: StageOutcome | None = None) -> StageOutcome:
    """Elastic tensor of ``structure`` from the stresses of strained cells.

    Parameters
    ----------
    structure : pymatgen.core.Structure
        The relaxed structure.
    cfg : dict
        ``magnitudes``, ``strain_set``, ``symprec``, ``fit_rms_max_gpa``,
        ``pd_min_eigenvalue_gpa``.
    profile : dict
        The engine profile.
    directory : Path
        The attempt's folder; one subfolder per cell.
    previous : StageOutcome, optional
        The failed attempt before this one: its converged cells are kept.
    """
    kpts = None
    if profile["kind"] == "qe":
        from aimmat.engines.qe.inputs import kmesh

        kpts = kmesh(structure, profile)
    before = {c["name"]: c for c in (previous.outputs.get("cells") or [])} if previous else {}

    def run_cell(name: str, d: np.ndarray) -> dict:
        old = before.get(name)
        if old and (old["ok"] or not old["retryable"]):  # converged, or lost for good
            return old
        prev = StageOutcome(ok=False, outputs=old["state"]) if old else None
        start = structure if name == "eq" else Deformation(d).apply_to_structure(structure)
        task = "static" if name == "eq" else "relax_ions"
        out = run_engine_task(task, start, profile, directory / name, prev, kpts=kpts)
        o = out.outputs
        return {
            "name": name,
            "deformation": np.asarray(d).tolist(),
            "ok": out.ok,
            "stress_gpa": o.get("stress_gpa"),
            "n_steps": o.get("n_steps", 0) + (old["n_steps"] if old else 0),
            "failure_code": out.failure_code,
            "retryable": out.retryable,
            "intervention": out.next_intervention,
            "overrides": o.get("overrides", {}),
            "engine": o.get("engine", {}),
            # what a retry needs: last positions and the next rung of the ladder
            "state": {k: o[k] for k in ("structure", "next_overrides", "restart") if k in o} if not out.ok else {},
        }

    todo, set_info = _cells(structure, cfg)
    if profile["kind"] == "qe":
        # pw.x runs are separate processes: launch cells side by side, as many
        # as the campaign's core slots allow (slots.hold inside the engine).
        width = max(1, slots.total() // RunProfile.from_profile(profile).ranks)
        with ThreadPoolExecutor(max_workers=width) as pool:
            cells = list(pool.map(lambda nd: run_cell(*nd), todo))
    else:  # one in-process calculator: not thread-safe
        cells = [run_cell(n, d) for n, d in todo]
    lost = [c for c in cells if not c["ok"]]
    outputs = {"cells": cells, "n_cells": len(cells) - 1, "kpoints": list(kpts) if kpts else None, "strain_set": set_info}
    retry = [c for c in lost if c["retryable"]]
    kept = [c for c in cells[1:] if c["ok"]]
    sym = crystal_symmetry(structure, cfg["symprec"])
    spans, why = check_spans(np.array([matrix_to_voigt(lagrangian_from_deformation(np.asarray(c["deformation"]))) for c in kept]).reshape(-1, 6), sym.basis)
    if lost and (retry or not spans or not cells[0]["ok"]):
        names = ", ".join(f"{c['name']} ({c['failure_code']})" for c in lost)
        return StageOutcome(
            ok=False,
            outputs=outputs,
            failure_code=lost[0]["failure_code"] if len({c["failure_code"] for c in lost}) == 1 else "strained_cells_not_converged",
            message=f"cells not converged: {names}; " + ("the others still span the constants, retrying the lost ones" if spans else why),
            output_present=True,
            retryable=bool(retry),
            next_intervention="; ".join(f"{c['name']}: {c['intervention']}" for c in retry) or None,
        )
    eq = cells[0]
    # lost cells are never fitted; a fit without them is recorded with their names
    fit = fit_elastic([c["deformation"] for c in kept], [c["stress_gpa"] for c in kept], eq["stress_gpa"], structure=structure,
                      sym=sym, fit_rms_max_gpa=cfg["fit_rms_max_gpa"], pd_min_gpa=cfg["pd_min_eigenvalue_gpa"])
    for c in cells:
        c.pop("state")
    outputs.update(lost_cells=[c["name"] for c in lost], complete=not lost)
    return StageOutcome(ok=True, outputs={**outputs, "eq_stress_gpa": eq["stress_gpa"], **fit}, output_present=True)

