"""Read a finished pw.x folder: the third step of the file-IO split.

Works on any folder holding a ``pw.out`` (a fresh run or a stored golden
case): no pw.x needed.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
from pymatgen.core import Lattice, Structure

from aimmat.engines.base import EngineResult
from aimmat.engines.qe.inputs import TASKS
from aimmat.engines.qe.parse import parse_pw_output
from aimmat.engines.qe.taxonomy import classify


def read_results(directory: Path, structure, task: str, rc: int | None, timed_out: bool, wall: float, kpts) -> EngineResult:
    """Parse ``directory/pw.out`` and classify the run.

    Parameters
    ----------
    directory : Path
        Folder of the run.
    structure : pymatgen.core.Structure
        The input structure: species and cell when pw.x printed no new ones.
    task : {"relax", "static", "relax_ions"}
        The task that was run.
    rc : int or None
        Exit status of the process (None: unknown, e.g. a re-read).
    timed_out : bool
        Whether the hard timeout killed the process.
    wall : float
        Wall time of the process (s).
    kpts : sequence of int
        The mesh the input used (recorded).

    Returns
    -------
    EngineResult
        Results in boundary units; ``failure_code`` None on success. A failed
        relaxation still carries its last structure (the restart point).
    """
    path = directory / "pw.out"
    raw = path.read_text(errors="replace") if path.exists() else ""
    out = parse_pw_output(raw) if raw.strip() else None
    calc = TASKS[task]
    code = classify(out, rc, calc, timed_out)
    res = EngineResult(wall_s=wall, failure_code=code)
    res.extra = {"returncode": rc, "kpoints": list(kpts), "calculation": calc}
    if out is None:
        res.message = f"pw.x wrote no output (exit {rc})"
        return res
    res.extra.update(pw_version=out.version, memory_mb=out.memory_mb, pw_wall_s=out.wall_s,
                     total_magnetization=out.total_magnetization, n_scf=len(out.scf_converged),
                     metallic=out.metallic, fermi_ev=out.fermi_ev)
    final = structure
    if out.cell_a is not None or out.positions_frac is not None:
        cell = out.cell_a if out.cell_a is not None else structure.lattice.matrix
        if out.positions_frac is not None and len(out.positions_frac) == len(structure):
            species = [re.sub(r"\d+$", "", s) for s in out.species]
            final = Structure(Lattice(cell), species, out.positions_frac)
        else:
            final = Structure(Lattice(cell), structure.species, structure.frac_coords)
    if out.energies_ry and out.stresses_gpa and out.forces_ev_per_a:
        res.energy_ev = out.last_energy_ev
        res.forces_ev_per_a = out.forces_ev_per_a[-1].tolist()
        res.stress_gpa = out.stresses_gpa[-1].tolist()
        res.structure = final.as_dict()
    elif final is not structure:
        res.structure = final.as_dict()  # partial: a restart point without results
    if res.energy_ev is not None and not (np.isfinite(res.forces_ev_per_a).all() and np.isfinite(res.stress_gpa).all()):
        res.failure_code = code = "non_finite_output"  # pw.x printed '*****': nothing here is physics
    res.has_output = bool(out.scf_converged)
    res.n_steps = max(0, len(out.energies_ry) - (1 if out.final_scf_started else 0))
    res.converged = code is None
    if code:
        res.message = out.error_block or code.replace("_", " ")
    return res
