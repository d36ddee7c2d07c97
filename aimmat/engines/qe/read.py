"""Read a finished pw.x folder: the third step of the file-IO split.

Works on any folder holding a ``pw.out`` (a fresh run or a stored golden
case): no pw.x needed.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
from pymatgen.core import Lattice, Structure

from aimmat.engines.base import EngineResult
from aimmat.engines.qe.inputs import TASKS
from aimmat.engines.qe.parse import parse_pw_output
from aimmat.engines.qe.taxonomy import diagnose

RUN_FACTS = "run.json"  # written by execute: facts of the process that pw.out does not hold


def restart_files(directory: Path) -> Path | None:
    """``directory/out`` when pw.x left restart data there (its save folder or wavefunctions)."""
    out = directory / "out"
    if (out / "pw.save").is_dir() or any(out.glob("*.wfc*")) or any(out.glob("*/*.wfc*")):
        return out
    return None


def _press_conv_thr(directory: Path) -> float:
    """press_conv_thr of the input next to (or above) the output; pw.x's default 0.5 kbar otherwise."""
    for folder in (directory, directory.parent / "inputs"):
        if (folder / "pw.in").is_file():
            m = re.search(r"press_conv_thr\s*=\s*([\d.eEdD+-]+)", (folder / "pw.in").read_text())
            if m:
                return float(m.group(1).replace("d", "e").replace("D", "e"))
    return 0.5


def read_results(directory: Path, structure, task: str, rc: int | None, timed_out: bool, wall: float, kpts, *,
                 press_conv_thr_kbar: float | None = None) -> EngineResult:
    """Parse ``directory/pw.out`` with ``pw.err`` and the exit status, and classify the run.

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
    press_conv_thr_kbar : float, optional
        The vc-relax pressure threshold (final-SCF check); default: read from pw.in.

    Returns
    -------
    EngineResult
        Results in boundary units; ``failure_code`` None on success. A failed
        relaxation still carries its last structure (the restart point).
    """
    path = directory / "pw.out"
    raw = path.read_text(errors="replace") if path.exists() else ""
    err = (directory / "pw.err").read_text(errors="replace") if (directory / "pw.err").exists() else ""
    facts = json.loads((directory / RUN_FACTS).read_text()) if (directory / RUN_FACTS).exists() else {}
    out = parse_pw_output(raw) if raw.strip() else None
    calc = TASKS[task]
    thr = press_conv_thr_kbar if press_conv_thr_kbar is not None else _press_conv_thr(directory)
    code, why = diagnose(out, rc, calc, timed_out, err, press_conv_thr_kbar=thr, mem_available_mb=facts.get("mem_available_mb"))
    res = EngineResult(wall_s=wall, failure_code=code)
    saved = restart_files(directory)
    res.extra = {"returncode": rc, "kpoints": list(kpts), "calculation": calc, "new_structure": False,
                 "restart_dir": str(saved.resolve()) if saved else None}
    if out is None:
        res.message = why
        return res
    res.extra.update(pw_version=out.version, memory_mb=out.memory_mb, pw_wall_s=out.wall_s,
                     total_magnetization=out.total_magnetization, n_scf=len(out.scf_converged),
                     metallic=out.metallic, fermi_ev=out.fermi_ev)
    if calc == "vc-relax" and out.pressures_kbar:
        res.extra.update(final_pressure_kbar=out.pressures_kbar[-1], relaxed_pressure_kbar=out.pressure_before_final_scf_kbar)
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
    res.extra["new_structure"] = final is not structure
    if res.energy_ev is not None and not (np.isfinite(res.forces_ev_per_a).all() and np.isfinite(res.stress_gpa).all()):
        res.failure_code = code = "non_finite_output"  # pw.x printed '*****': nothing here is physics
        why = None
    res.has_output = bool(out.scf_converged)
    res.n_steps = max(0, len(out.energies_ry) - (1 if out.final_scf_started else 0))
    res.converged = code is None
    if code:
        res.message = why or out.error_block or code.replace("_", " ")
    return res
