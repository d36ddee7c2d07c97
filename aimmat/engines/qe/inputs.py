"""pw.x input files, written with ASE's espresso writer.

ASE silently drops keys it does not know, so the namelist values are built
here from profile fields (typos are caught by the manifest model) and the
written file is checked for the keys that matter.
"""

from __future__ import annotations

import io
import math
from pathlib import Path

from ase.io.espresso import write_espresso_in
from pymatgen.io.ase import AseAtomsAdaptor

TASKS = {"relax": "vc-relax", "static": "scf", "relax_ions": "relax"}
MAGNETIC = set("Sc Ti V Cr Mn Fe Co Ni Cu Zn Y Zr Nb Mo Tc Ru Rh Pd Ag Cd Hf Ta W Re Os Ir Pt Au Hg".split()) | set(
    "La Ce Pr Nd Pm Sm Eu Gd Tb Dy Ho Er Tm Yb Lu".split()
)


def kmesh(structure, params: dict) -> tuple[int, int, int]:
    """Monkhorst-Pack mesh: explicit, or n_i = ceil(|b_i| / spacing) with |b_i| including 2*pi."""
    if params.get("kpoints"):
        return tuple(int(k) for k in params["kpoints"])
    b = structure.lattice.reciprocal_lattice.abc
    return tuple(max(1, math.ceil(bi / params["kspacing_per_a"] - 1e-6)) for bi in b)


def spin_polarized(structure, params: dict, zvals: dict[str, float]) -> bool:
    if params["spin"] == "polarized":
        return True
    if params["spin"] == "none":
        return False
    elements = {sp.symbol for sp in structure.composition.elements}
    n_el = sum(zvals[el.symbol] * amt for el, amt in structure.composition.items())
    return bool(elements & MAGNETIC) or round(n_el) % 2 == 1


def build_input(structure, params: dict, task: str, pseudos: dict[str, Path], zvals: dict[str, float],
                kpts: tuple[int, int, int], walltime_s: float, ultrasoft: bool, restart: bool = False) -> tuple[str, dict]:
    """Return the pw.x input text and the resolved namelist values.

    ``restart`` writes ``restart_mode='restart'`` (the caller put pw.x's
    restart files into ./out).
    """
    calc = TASKS[task]
    nat = len(structure)
    ecutwfc = params["ecutwfc_ry"]
    control = {
        "calculation": calc,
        "prefix": "pw",
        "outdir": "./out",
        "pseudo_dir": str(next(iter(pseudos.values())).parent),
        "tstress": True,
        "tprnfor": True,
        "max_seconds": round(0.95 * walltime_s, 1),
        "disk_io": "low",
        # band energies at every k-point even with >= 100 of them: metallicity
        # is decided from the bands and must never be unknown after an SCF
        "verbosity": "high",
        "forc_conv_thr": params["forc_conv_thr_ry_per_bohr"],
        "nstep": params["nstep"],
    }
    system = {
        "ecutwfc": ecutwfc,
        "ecutrho": params.get("ecutrho_ry") or ecutwfc * (8 if ultrasoft else 4),
        "occupations": params["occupations"],
    }
    if params.get("nbnd"):
        system["nbnd"] = params["nbnd"]
    if params["occupations"] == "smearing":
        system.update(smearing=params["smearing"], degauss=params["degauss_ry"])
    electrons = {
        "conv_thr": params["conv_thr_per_atom"] * nat,
        "mixing_beta": params["mixing_beta"],
        "electron_maxstep": params["electron_maxstep"],
        "diagonalization": params["diagonalization"],
    }
    data = {"control": control, "system": system, "electrons": electrons}
    if calc in ("relax", "vc-relax"):
        ions = {"ion_dynamics": params.get("ion_dynamics", "bfgs")}
        if "trust_radius_ini" in params:
            ions["trust_radius_ini"] = params["trust_radius_ini"]
        data["ions"] = ions
    if calc == "vc-relax":
        data["cell"] = {
            "press_conv_thr": params["press_conv_thr_kbar"],
            "cell_dynamics": "damp-w" if params.get("ion_dynamics") == "damp" else "bfgs",
        }
        if params.get("cell_factor"):  # raised by the cell_factor_too_small ladder
            data["cell"]["cell_factor"] = float(params["cell_factor"])
    if restart:  # continue from the restart files copied into ./out
        control["restart_mode"] = "restart"
    atoms = AseAtomsAdaptor.get_atoms(structure)
    if spin_polarized(structure, params, zvals):
        system["nspin"] = 2
        atoms.set_initial_magnetic_moments([2.0 if s.symbol in MAGNETIC else 0.5 for s in structure.species])
    buf = io.StringIO()
    write_espresso_in(buf, atoms, input_data=data, pseudopotentials={el: p.name for el, p in pseudos.items()},
                      kpts=kpts, crystal_coordinates=True)
    text = buf.getvalue()
    required = ["tstress", "max_seconds", "ecutwfc", "conv_thr", "mixing_beta", "electron_maxstep", "verbosity"]
    required += [k for k in ("cell_factor", "restart_mode") if k in data.get("cell", {}) or k in control]
    for key in required:
        if key not in text:  # ASE drops keys it does not know: never run without these
            raise RuntimeError(f"ASE's espresso writer dropped '{key}' from the pw.x input")
    return text, data

