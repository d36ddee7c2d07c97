"""Elastic stage: strained cells (ions relaxed at fixed cell), then the fit.

A strained cell whose ionic relaxation did not converge is never fitted: the
attempt fails and the next attempt continues that cell from its last
positions, keeping every converged cell.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pymatgen.core import Structure

from aimmat.elastic import fit_elastic, strain_set
from aimmat.engines import get_engine
from aimmat.stages.base import StageOutcome

RESTART = "continue unconverged strained cells from their last positions"


def run_elastic(structure, cfg: dict, profile: dict, directory: Path, previous: StageOutcome | None) -> StageOutcome:
    engine = get_engine(profile)
    eq = engine.run(structure, profile, "static", directory / "eq")
    if eq.failure_code:
        return StageOutcome(ok=False, failure_code=eq.failure_code, message=f"unstrained cell: {eq.message}")
    deformations = strain_set(structure, cfg["norm_strains"], cfg["shear_strains"])
    before = {i: c for i, c in enumerate((previous.outputs.get("cells") if previous else None) or [])}
    cells = []
    for i, d in enumerate(deformations):
        old = before.get(i)
        if old and old["converged"]:
            cells.append(old)
            continue
        start = Structure.from_dict(old["structure"]) if old and old.get("structure") else _deform(structure, d)
        res = engine.run(start, profile, "relax_ions", directory / f"cell-{i:02d}")
        cells.append({
            "index": i,
            "deformation": d.tolist(),
            "stress_gpa": res.stress_gpa,
            "converged": bool(res.converged and not res.failure_code),
            "failure_code": res.failure_code,
            "n_steps": res.n_steps + (old["n_steps"] if old else 0),
            "structure": res.structure,
        })
    lost = [c["index"] for c in cells if not c["converged"]]
    outputs = {"cells": cells, "eq_stress_gpa": eq.stress_gpa, "n_cells": len(cells)}
    if lost:
        hard = [c for c in cells if not c["converged"] and c["failure_code"] != "ionic_not_converged"]
        return StageOutcome(
            ok=False,
            outputs=outputs,
            failure_code="strained_cell_not_converged" if not hard else hard[0]["failure_code"],
            message=f"strained cells {lost} did not converge; the tensor is not fitted from partial data",
            output_present=True,
            retryable=not hard,
            next_intervention=RESTART if not hard else None,
        )
    fit = fit_elastic([c["deformation"] for c in cells], [c["stress_gpa"] for c in cells], eq.stress_gpa)
    for c in cells:
        c.pop("structure")  # the final positions are in the attempt folder; keep the record small
    return StageOutcome(ok=True, outputs={**outputs, **fit}, output_present=True)


def _deform(structure, d) -> Structure:
    from pymatgen.analysis.elasticity.strain import Deformation

    return Deformation(np.asarray(d)).apply_to_structure(structure)
