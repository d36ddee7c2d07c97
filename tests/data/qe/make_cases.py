"""Generate the golden pw.x cases in this folder (needs pw.x and Debian's pseudos).

Usage: ``python tests/data/qe/make_cases.py [case ...]`` from the repository root.

Each case is one real pw.x run through ``QeEngine`` with settings that
provoke one outcome (tiny cells, low cutoffs: seconds each), or a real
output cut on disk. A case folder holds:

- ``inputs/pw.in``: the input as the engine wrote it;
- ``outputs/pw.out``, ``outputs/pw.err``: what pw.x printed;
- ``case.json``: the structure and the full params dict the engine got, the
  task, mesh, returncode and timed_out flag, the failure code the settings
  were chosen to provoke, and key figures read from the raw text with plain
  regular expressions (not the package's parser), so the golden test checks
  the parser and its unit conversions against pw.x's own numbers.

The script refuses to store a case whose classification differs from the
intended code. Regenerating rewrites the files: review the diff (a new pw.x
or ASE version shows up there first).
"""

from __future__ import annotations

import json
import re
import shutil
import sys
import tempfile
from pathlib import Path

from pymatgen.core import Lattice, Structure

from aimmat.engines.qe.engine import QeEngine, resolve_pseudos
from aimmat.engines.qe.parse import RY_EV
from aimmat.engines.run_profile import split_profile
from aimmat.manifest.qe_profile import QeProfile

HERE = Path(__file__).resolve().parent
BASE = {
    "kind": "qe",
    "preset": "fast",
    "pseudo": {"family": "debian", "files": {"Si": "Si.pbe-rrkj.UPF", "Al": "Al.pz-vbc.UPF"}},
    "ecutwfc_ry": 12,
    "kpoints": [2, 2, 2],
    "walltime_s": 300,
    "min_free_mem_mb": 0.0,
}


def si(shift: float = 0.0, a: float = 5.43) -> Structure:
    return Structure(Lattice([[0, a / 2, a / 2], [a / 2, 0, a / 2], [a / 2, a / 2, 0]]), ["Si", "Si"], [[0, 0, 0], [0.25 + shift, 0.25, 0.25]])


def al(a: float = 4.05) -> Structure:
    """One Al atom in a simple-cubic cell (not a crystal: a small metallic test cell)."""
    return Structure(Lattice.cubic(a), ["Al"], [[0, 0, 0]])


# name: (structure, task, profile overrides, intended failure code)
RUNS = {
    "si_scf_converged": (si(), "static", {}, None),
    "si_vcrelax_converged": (si(0.02), "relax", {}, None),
    "si_scf_electronic_not_converged": (si(), "static", {"electron_maxstep": 2}, "electronic_not_converged"),
    "si_relax_nstep_exceeded": (si(0.03), "relax_ions", {"nstep": 1}, "ionic_nstep_exceeded"),
    # a mesh and cutoff slow enough that pw.x reaches max_seconds (0.95 s) mid-SCF
    "si_scf_out_of_walltime": (si(), "static", {"kpoints": [12, 12, 12], "ecutwfc_ry": 40, "walltime_s": 1}, "out_of_walltime"),
    "al_scf_charge_wrong": (al(), "static", {"occupations": "fixed"}, "charge_wrong"),
    # more bands than a 5 Ry basis holds: Davidson's overlap matrix is singular
    "al_scf_diagonalization_failure": (al(), "static", {"ecutwfc_ry": 5, "ecutrho_ry": 20, "nbnd": 40}, "diagonalization_failure"),
    "si_scf_nonzero_exit": (si(), "static", {"ecutrho_ry": 10}, "nonzero_exit"),
}

# name: (source case, cut, returncode to store, intended code)
CUTS = {
    # the process died mid-run: the second half of a finished output is missing
    "si_scf_output_truncated": ("si_scf_converged", lambda t: t[: len(t) // 2], -9, "output_truncated"),
    # the job died 400 characters into the final SCF of a finished vc-relax
    "si_vcrelax_converged_except_final_scf": (
        "si_vcrelax_converged",
        lambda t: t[: t.index("Final scf calculation at the relaxed structure") + 400],
        -9,
        "converged_except_final_scf",
    ),
}


def params_for(overrides: dict) -> dict:
    """The params dict the executor would pass: validated profile + resolved pseudo files."""
    d = QeProfile.model_validate({**BASE, **overrides}).model_dump(mode="json")
    d["pseudo_files"] = {el: str(p) for el, p in resolve_pseudos(d["pseudo"], d["pseudo"]["files"]).items()}
    return d


def figures(text: str) -> dict:
    """Key numbers from the raw text, by plain regex: pw.x's own values and units."""
    energies = re.findall(r"^!\s+total energy\s+=\s+(-?\d+\.\d+) Ry", text, re.M)
    pressures = re.findall(r"\(kbar\)\s+P=\s*(-?\d+\.\d+)", text)
    return {
        "n_total_energies": len(energies),
        "last_energy_ry": float(energies[-1]) if energies else None,
        "last_energy_ev": float(energies[-1]) * RY_EV if energies else None,
        "last_pressure_kbar": float(pressures[-1]) if pressures else None,
        "n_scf_converged": len(re.findall(r"convergence has been achieved in", text)),
        "n_scf_not_converged": len(re.findall(r"convergence NOT achieved after", text)),
        "job_done": "JOB DONE." in text,
    }


def store(name: str, structure: Structure, task: str, params: dict, run_dir: Path, rc, timed_out: bool, code, note: str = "") -> None:
    res = QeEngine().read_results(run_dir, structure, task, rc, timed_out, 0.0, params["kpoints"])
    if res.failure_code != code:
        sys.exit(f"{name}: provoked {res.failure_code!r}, wanted {code!r}; not stored\n{res.message}")
    case = HERE / name
    shutil.rmtree(case, ignore_errors=True)
    (case / "inputs").mkdir(parents=True)
    (case / "outputs").mkdir()
    shutil.copy(run_dir / "pw.in", case / "inputs/pw.in")
    for f in ("pw.out", "pw.err"):
        shutil.copy(run_dir / f, case / "outputs" / f)
    text = (run_dir / "pw.out").read_text(errors="replace")
    meta = {
        "note": note,
        "task": task,
        "kpts": list(params["kpoints"]),
        "returncode": rc,
        "timed_out": timed_out,
        "failure_code": code,
        "expected": {
            **figures(text),
            "converged": code is None,
            "output_present": res.output_present,
            "has_structure": res.structure is not None,
            "n_steps": res.n_steps,
        },
        "structure": {"lattice": structure.lattice.matrix.tolist(), "species": [s.symbol for s in structure.species],
                      "frac_coords": structure.frac_coords.tolist()},
        "params": params,
    }
    (case / "case.json").write_text(json.dumps(meta, indent=1) + "\n")
    print(f"{name}: {code or 'converged'} ({len(text)} chars)")


def main(names: list[str]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        for name, (structure, task, kw, code) in RUNS.items():
            if names and name not in names and not any(CUTS[c][0] == name for c in names if c in CUTS):
                continue
            params = params_for(kw)
            run_dir = Path(tmp) / name
            eng = QeEngine()
            physics, run = split_profile(params)
            eng.write_inputs(structure, physics, task, run_dir, walltime_s=run.walltime_s)
            rc, timed_out, _ = eng.execute(run, run_dir)
            store(name, structure, task, params, run_dir, rc, timed_out, code, note=f"real pw.x run; overrides {kw}")
        for name, (src, cut, rc, code) in CUTS.items():
            if names and name not in names:
                continue
            structure, task, kw, _ = RUNS[src]
            run_dir = Path(tmp) / name
            shutil.copytree(HERE / src / "inputs", run_dir)
            shutil.copy(HERE / src / "outputs/pw.err", run_dir / "pw.err")
            (run_dir / "pw.out").write_text(cut((HERE / src / "outputs/pw.out").read_text()))
            store(name, structure, task, params_for(kw), run_dir, rc, False, code, note=f"{src}'s real output, cut on disk")


if __name__ == "__main__":
    main(sys.argv[1:])
