"""The pw.x engine: write inputs, execute, read results (ASE's file-IO split).

Units at the boundary: energy eV, forces eV/A, stress GPa tensile positive.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import subprocess
import tempfile
import time
from functools import lru_cache
from pathlib import Path

import numpy as np
from pymatgen.core import Lattice, Structure

from aimmat.apply import slots
from aimmat.engines.base import EngineResult
from aimmat.engines.qe.inputs import TASKS, build_input, kmesh
from aimmat.engines.qe.parse import parse_pw_output
from aimmat.engines.qe.pseudos import family_dir, find_pseudo, upf_info
from aimmat.engines.qe.taxonomy import classify, remedy
from aimmat.errors import EnvironmentProblem

HARD_TIMEOUT_GRACE_S = 60.0


@lru_cache(maxsize=8)
def pw_version(pw_command: str = "pw.x") -> str:
    """Version string printed by pw.x (run once on an empty input, in a scratch folder)."""
    exe = shlex.split(pw_command)[0]
    if shutil.which(exe) is None:
        raise EnvironmentProblem(
            f"{exe} not found on PATH (needed by a `kind: qe` profile)",
            fix="as root: apt-get install quantum-espresso libopenblas0-pthread (or `make setup`)",
        )
    with tempfile.TemporaryDirectory() as tmp:
        proc = subprocess.run(shlex.split(pw_command), input="", capture_output=True, text=True, cwd=tmp, timeout=60, env=pw_env())
    m = re.search(r"Program PWSCF v\.(\S+)", proc.stdout)
    return f"pw.x {m.group(1)}" if m else "pw.x (unknown version)"


def pw_env() -> dict:
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", "1")
    env.setdefault("OPENBLAS_NUM_THREADS", "1")
    # gfortran buffers stdout when it is a file; an MPI_ABORT (LAPACK failure
    # in the diagonalization, say) then loses pw.x's own error message.
    env["GFORTRAN_UNBUFFERED_PRECONNECTED"] = "y"
    env["OMPI_ALLOW_RUN_AS_ROOT"] = "1"
    env["OMPI_ALLOW_RUN_AS_ROOT_CONFIRM"] = "1"
    return env


def pseudo_folder(pseudo: dict, base: Path | None = None) -> Path:
    if pseudo.get("family"):
        return family_dir(pseudo["family"])
    folder = Path(pseudo["dir"]).expanduser()
    if not folder.is_absolute() and base is not None:
        folder = base / folder
    return folder


def resolve_pseudos(pseudo: dict, elements, base: Path | None = None) -> dict[str, Path]:
    folder = pseudo_folder(pseudo, base)
    return {el: find_pseudo(folder, el, pseudo.get("files", {}), pseudo.get("functional", "any")) for el in sorted(elements)}


def command(params: dict) -> list[str]:
    pw = shlex.split(params.get("pw_command", "pw.x"))
    ranks = int(params.get("mpi_ranks", 1))
    if ranks > 1:
        return shlex.split(params["launcher"].format(ranks=ranks)) + pw + ["-in", "pw.in"]
    return pw + ["-in", "pw.in"]


class QeEngine:
    name = "qe"

    def remedy(self, code: str, overrides: dict, params: dict):
        return remedy(code, overrides, params)

    def run(self, structure, params: dict, task: str, directory: Path, kpts=None) -> EngineResult:
        directory.mkdir(parents=True, exist_ok=True)
        elements = sorted({sp.symbol for sp in structure.composition.elements})
        pseudos = {el: Path(p) for el, p in params["pseudo_files"].items()} if "pseudo_files" in params else resolve_pseudos(params["pseudo"], elements)
        infos = {el: upf_info(pseudos[el]) for el in elements}
        ultrasoft = any(i.pseudo_type in ("US", "USPP", "PAW") for i in infos.values())
        kpts = tuple(kpts or kmesh(structure, params))
        text, namelists = build_input(structure, params, task, {el: pseudos[el] for el in elements},
                                      {el: infos[el].z_valence for el in elements}, kpts, params["walltime_s"], ultrasoft)
        (directory / "pw.in").write_text(text)
        with slots.hold(int(params.get("mpi_ranks", 1)), params.get("min_free_mem_mb", 0.0)):
            t0 = time.perf_counter()
            rc, timed_out = self._execute(params, directory)
            wall = time.perf_counter() - t0
        shutil.rmtree(directory / "out", ignore_errors=True)  # wavefunctions: large, never reused
        return self.read(directory, structure, task, rc, timed_out, wall, kpts)

    def _execute(self, params: dict, directory: Path) -> tuple[int, bool]:
        with open(directory / "pw.out", "w") as fo, open(directory / "pw.err", "w") as fe:
            proc = subprocess.Popen(command(params), cwd=directory, stdout=fo, stderr=fe, env=pw_env(), start_new_session=True)
            try:
                return proc.wait(timeout=params["walltime_s"] + HARD_TIMEOUT_GRACE_S), False
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)  # the launcher and every rank
                return proc.wait(), True

    def read(self, directory: Path, structure, task: str, rc: int | None, timed_out: bool, wall: float, kpts) -> EngineResult:
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
