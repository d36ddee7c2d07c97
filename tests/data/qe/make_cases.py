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
    "pseudo": {"family": "debian", "files": {"Si": "Si.pbe-rrkj.UPF", "Al": "Al.pz-vbc.UPF", "Ni": "Ni.pbe-nd-rrkjus.UPF"}},
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


def ni() -> Structure:
    """fcc Ni, primitive cell: a ferromagnetic metal."""
    a = 3.52
    return Structure(Lattice([[0, a / 2, a / 2], [a / 2, 0, a / 2], [a / 2, a / 2, 0]]), ["Ni"], [[0, 0, 0]])


# an outside SIGTERM 6 s into the run (pw.x mid-SCF), as a scheduler sends it
SIGTERM_LAUNCH = "sh -c 'pw.x \"$@\" & p=$!; sleep 6; kill -TERM $p; wait $p' sh"
# keys the profile model does not take (ladder-only physics): added after validation
EXTRA = {"si_vcrelax_cell_factor_too_small": {"cell_factor": 1.0}}

# name: (structure, task, profile overrides, intended failure code)
RUNS = {
    "si_scf_converged": (si(), "static", {}, None),
    # 30 Ry: the final SCF on new G-vectors agrees with the relaxed pressure
    "si_vcrelax_converged": (si(0.02), "relax", {"ecutwfc_ry": 30}, None),
    # 12 Ry: BFGS stops at ~0.2 kbar, the final SCF says ~8 kbar (Pulay stress)
    "si_vcrelax_final_scf_pressure": (si(0.02), "relax", {}, "final_scf_pressure"),
    # cell_factor 1.0 and a cell 14% too large: the first shrink leaves pw.x's radial tables
    "si_vcrelax_cell_factor_too_small": (si(a=6.2), "relax", {}, "cell_factor_too_small"),
    "si_scf_interrupted": (si(), "static", {"kpoints": [12, 12, 12], "ecutwfc_ry": 40, "pw_command": SIGTERM_LAUNCH},
                           "interrupted"),
    # >= 100 irreducible k-points: pw.x prints bands only because of verbosity='high'
    "al_scf_many_kpoints": (al(), "static", {"kpoints": [14, 14, 14]}, None),
    "ni_scf_magnetic_metal": (ni(), "static", {"ecutwfc_ry": 25, "kpoints": [4, 4, 4], "spin": "polarized"}, None),
    "si_scf_electronic_not_converged": (si(), "static", {"electron_maxstep": 2}, "electronic_not_converged"),
    "si_relax_nstep_exceeded": (si(0.03), "relax_ions", {"nstep": 1}, "ionic_nstep_exceeded"),
    # a mesh and cutoff slow enough that pw.x reaches max_seconds (0.95 s) mid-SCF
    "si_scf_out_of_walltime": (si(), "static", {"kpoints": [12, 12, 12], "ecutwfc_ry": 40, "walltime_s": 1}, "out_of_walltime"),
    "al_scf_charge_wrong": (al(), "static", {"occupations": "fixed"}, "charge_wrong"),
    # more bands than a 5 Ry basis holds: Davidson's overlap matrix is singular
    "al_scf_diagonalization_failure": (al(), "static", {"ecutwfc_ry": 5, "ecutrho_ry": 20, "nbnd": 40}, "diagonalization_failure"),
    "si_scf_nonzero_exit": (si(), "static", {"ecutrho_ry": 10}, "nonzero_exit"),
}

LAPACK_ERR = """ ** On entry to ZHEGVX parameter number 13 had an illegal value
--------------------------------------------------------------------------
MPI_ABORT was invoked on rank 0 in communicator MPI_COMM_WORLD
with errorcode 13.
--------------------------------------------------------------------------
"""

# name: (source case, cut, returncode to store, intended code[, stderr to store])
CUTS = {
    # the process crashed mid-run (SIGSEGV): the second half of a finished output is missing
    "si_scf_output_truncated": ("si_scf_converged", lambda t: t[: len(t) // 2], -11, "output_truncated"),
    # the job died 400 characters into the final SCF of a finished vc-relax (exit status unknown)
    "si_vcrelax_converged_except_final_scf": (
        "si_vcrelax_converged",
        lambda t: t[: t.index("Final scf calculation at the relaxed structure") + 400],
        None,
        "converged_except_final_scf",
    ),
    # CONSTRUCTED: the kernel's OOM killer sends SIGKILL and prints nothing to the process
    "si_scf_out_of_memory": ("si_scf_converged", lambda t: t[: len(t) // 3], -9, "out_of_memory", ""),
    # CONSTRUCTED from a real abort's text (OpenBLAS xerbla + Open MPI): stdout
    # holds no pw.x banner (buffered output lost), exit 13
    "si_scf_lapack_abort": ("si_scf_converged", lambda t: "", 13, "diagonalization_failure", LAPACK_ERR),
}


# name: (source case whose input was run, how the outputs were recorded). These
# outcomes vary from run to run, so the script keeps them and does not rerun them.
RECORDED = {
    # the singular overlap of al_scf_diagonalization_failure, pw.x run by hand with
    # OPENBLAS_CORETYPE=Zen and 2 BLAS threads: about one run in eight segfaults in
    # rotate_wfc instead of stopping in cdiaghg (exit 139 from the shell)
    "al_scf_diagonalization_crash": ("al_scf_diagonalization_failure", 139, "diagonalization_failure"),
}


def params_for(overrides: dict, extra: dict | None = None) -> dict:
    """The params dict the executor would pass: validated profile + resolved pseudo files
    (+ ``extra``: ladder-only keys such as cell_factor)."""
    d = QeProfile.model_validate({**BASE, **overrides}).model_dump(mode="json")
    d.update(extra or {})
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
        "n_k_points": int(m.group(1)) if (m := re.search(r"number of k points=\s*(\d+)", text)) else None,
    }


def store(name: str, structure: Structure, task: str, params: dict, run_dir: Path, rc, timed_out: bool, code, note: str = "",
          constructed: bool = False) -> None:
    (run_dir / "run.json").unlink(missing_ok=True)  # machine facts (free memory) stay out of the cases
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
        "constructed": constructed,
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
            "metallic": res.extra.get("metallic"),
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
            params = params_for(kw, EXTRA.get(name))
            run_dir = Path(tmp) / name
            eng = QeEngine()
            physics, run = split_profile(params)
            eng.write_inputs(structure, physics, task, run_dir, walltime_s=run.walltime_s)
            rc, timed_out, _ = eng.execute(run, run_dir)
            store(name, structure, task, params, run_dir, rc, timed_out, code, note=f"real pw.x run; overrides {kw}")
        for name, (src, cut, rc, code, *err) in CUTS.items():
            if names and name not in names:
                continue
            structure, task, kw, _ = RUNS[src]
            run_dir = Path(tmp) / name
            shutil.copytree(HERE / src / "inputs", run_dir)
            shutil.copy(HERE / src / "outputs/pw.err", run_dir / "pw.err")
            if err:
                (run_dir / "pw.err").write_text(err[0])
            (run_dir / "pw.out").write_text(cut((HERE / src / "outputs/pw.out").read_text()))
            note = f"CONSTRUCTED from {src}'s real output (cut), stderr {'written by this script' if err else 'as pw.x printed it'}, exit {rc}"
            store(name, structure, task, params_for(kw), run_dir, rc, False, code, note=note, constructed=bool(err))


if __name__ == "__main__":
    main(sys.argv[1:])
