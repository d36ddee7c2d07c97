"""Elastic stage: the unstrained cell and each strained cell (ions relaxed at
fixed cell) through the engine, then the fit.

The relaxed structure is first turned rigidly into its standard setting
(``aimmat.engines.setting``: cubic axes along x, y, z; hexagonal c along z),
where pw.x finds its whole point group; every cell runs in that frame, and
the tensor, its errors and the unstrained stress are recorded in the
structure's own frame (``setting`` records the rotation). Cell-level
records (deformations, stresses, structures) stay in the standard frame.

An unstrained cell whose residual stress exceeds ``residual_stress_max_gpa``
(largest principal stress in magnitude, a frame-independent measure) means
the structure was not relaxed with these settings: the stage fails with
``residual_stress`` and nothing is fitted.

A strained cell that did not converge is never fitted: the attempt fails,
and the next attempt reruns only the lost cells (an attempt cut short by a
stop reads the cells that finished from its folder: ``reuse_sources``), each one rung further up the
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
from aimmat.engines.setting import standard_orientation, stress_to_input_frame
from aimmat.engines.run_profile import RunProfile
from aimmat.runtime import slots
from aimmat.stages.base import StageOutcome, reuse_sources
from aimmat.stages.relax import run_engine_task


def _cells(structure, cfg: dict, kpts) -> tuple[list[tuple[str, np.ndarray]], dict]:
    by_cost = cfg.get("strain_set_by", "cost") == "cost"  # "n_cells": the fewest cells, as before
    defs, info = strain_set(structure, cfg["magnitudes"], cfg["symprec"], pure=cfg["strain_set"] == "pure",
                            kpts=kpts if by_cost else None)
    return [("eq", np.eye(3))] + [(f"c{i:02d}", d) for i, d in enumerate(defs)], info


def _setting(structure, cfg: dict):
    """The frame the cells run in: (structure there, R with x_there = R x_input, record)."""
    if not cfg.get("standard_setting", True):
        return structure, np.eye(3), {"standardized": False, "rotation": np.eye(3).tolist()}
    work, r, info = standard_orientation(structure, cfg["symprec"])
    return work, r, {"standardized": True, **info}


def _residual_stress(eq_stress, limit: float) -> StageOutcome | None:
    """Failure when the unstrained cell's largest principal stress exceeds ``limit`` (GPa)."""
    value = float(np.abs(np.linalg.eigvalsh(0.5 * (np.asarray(eq_stress) + np.asarray(eq_stress).T))).max())
    if value <= limit:
        return None
    return StageOutcome(ok=False, failure_code="residual_stress", retryable=False, output_present=True,
                        message=f"the unstrained cell has a residual stress of {value:.3g} GPa (largest principal "
                                f"stress), above residual_stress_max_gpa = {limit:g} GPa: the structure is not "
                                "relaxed with these settings; relax it with the elastic profile first")


def run_elastic(structure, cfg: dict, profile: dict | None, directory: Path, previous: StageOutcome | None = None) -> StageOutcome:
    """Elastic tensor of ``structure`` from the stresses of strained cells.

    Parameters
    ----------
    structure : pymatgen.core.Structure
        The relaxed structure.
    cfg : dict
        ``magnitudes``, ``strain_set``, ``symprec``, ``fit_rms_max_gpa``,
        ``pd_min_eigenvalue_gpa``; optional ``residual_stress_max_gpa``
        (1.0), ``standard_setting`` (True; False runs the cells in the
        structure's own frame) and ``strain_set_by`` ("cost": the cheapest
        set by predicted k-points when the engine has a mesh; "n_cells":
        the fewest cells).
    profile : dict
        The engine profile.
    directory : Path
        The attempt's folder; one subfolder per cell.
    previous : StageOutcome, optional
        The failed attempt before this one: its converged cells are kept.
    """
    work, rot, setting = _setting(structure, cfg)
    kpts = None
    if profile["kind"] == "qe":
        from aimmat.engines.qe.inputs import kmesh

        kpts = kmesh(work, profile)
    before = {}
    if previous and np.allclose(previous.outputs.get("setting", {}).get("rotation", np.full((3, 3), np.nan)), rot, atol=1e-8):
        before = {c["name"]: c for c in (previous.outputs.get("cells") or [])}  # only cells run in this same frame

    def run_cell(name: str, d: np.ndarray) -> dict:
        old = before.get(name)
        if old and (old["ok"] or not old["retryable"]):  # converged, or lost for good
            return old
        prev = StageOutcome(ok=False, outputs=old["state"]) if old else None
        start = work if name == "eq" else Deformation(d).apply_to_structure(work)
        task = "static" if name == "eq" else "relax_ions"
        out = run_engine_task(task, start, profile, directory / name, prev, kpts=kpts,
                              reuse_from=reuse_sources(cfg, directory, directory / name))
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

    todo, set_info = _cells(work, cfg, kpts)
    if profile["kind"] == "qe":
        # pw.x runs are separate processes: launch cells side by side, as many
        # as the campaign's core slots allow (slots.hold inside the engine).
        width = max(1, slots.total() // RunProfile.from_profile(profile).ranks)
        with ThreadPoolExecutor(max_workers=width) as pool:
            cells = list(pool.map(lambda nd: run_cell(*nd), todo))
    else:  # one in-process calculator: not thread-safe
        cells = [run_cell(n, d) for n, d in todo]
    lost = [c for c in cells if not c["ok"]]
    outputs = {"cells": cells, "n_cells": len(cells) - 1, "kpoints": list(kpts) if kpts else None, "strain_set": set_info,
               "setting": setting}
    retry = [c for c in lost if c["retryable"]]
    kept = [c for c in cells[1:] if c["ok"]]
    sym = crystal_symmetry(work, cfg["symprec"])  # the frame the deformations are in
    if kept:
        spans, why = check_spans(np.array([matrix_to_voigt(lagrangian_from_deformation(np.asarray(c["deformation"]))) for c in kept]).reshape(-1, 6), sym.basis)
    else:
        spans, why = False, "no strained cell is left to fit"
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
    for c in cells:
        c.pop("state")
    outputs["eq_stress_gpa"] = stress_to_input_frame(eq["stress_gpa"], rot).tolist()
    bad = _residual_stress(eq["stress_gpa"], float(cfg.get("residual_stress_max_gpa", 1.0)))
    if bad is not None:  # never fitted: the constants of an unrelaxed cell are not the crystal's
        bad.outputs = outputs
        return bad
    # lost cells are never fitted; a fit without them is recorded with their names.
    # The fit runs in the cells' frame and comes back in the structure's (sym of ``structure``).
    fit = fit_elastic([c["deformation"] for c in kept], [c["stress_gpa"] for c in kept], eq["stress_gpa"], structure=structure,
                      symprec=cfg["symprec"], fit_rms_max_gpa=cfg["fit_rms_max_gpa"], pd_min_gpa=cfg["pd_min_eigenvalue_gpa"],
                      rotation=rot)
    outputs.update(lost_cells=[c["name"] for c in lost], complete=not lost)
    return StageOutcome(ok=True, outputs={**outputs, **fit}, output_present=True)

