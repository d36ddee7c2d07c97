"""An engine driven through an ASE calculator (EMT, CHGNet).

Relaxations use ASE's optimizers; cell relaxations go through
FrechetCellFilter so the cell and ions move together.
"""

from __future__ import annotations

import math
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np
from ase import units
from ase.filters import FrechetCellFilter
from ase.io import write
from ase.optimize import BFGS, FIRE, LBFGS
from pymatgen.io.ase import AseAtomsAdaptor

from aimmat.engines.base import EngineResult, Remedy, Task

_OPTIMIZERS = {"FIRE": FIRE, "BFGS": BFGS, "LBFGS": LBFGS}
EV_PER_A3_TO_GPA = 1.0 / units.GPa  # ASE stress is eV/A^3, tensile positive


class AseEngine:
    name = "ase"
    package = "ase"  # whose version identifies the calculator (stage keys)

    @classmethod
    def version(cls) -> str:
        """``"<package> <version>"`` of the package that provides the calculator."""
        try:
            return f"{cls.package} {version(cls.package)}"
        except PackageNotFoundError:
            return f"{cls.package} (not installed)"

    def calculator(self):  # pragma: no cover - overridden
        raise NotImplementedError

    def remedy(self, code: str, overrides: dict, params: dict):
        """An optimizer that hit its step cap continues from where it stopped;
        nothing else has a known remedy."""
        if code == "ionic_not_converged":
            return Remedy(dict(overrides), "restart from last structure", restart=True)
        return None

    def run(self, structure, params: dict, task: Task, directory: Path, kpts=None) -> EngineResult:
        directory.mkdir(parents=True, exist_ok=True)
        atoms = AseAtomsAdaptor.get_atoms(structure)
        atoms.calc = self.calculator()
        t0 = time.perf_counter()
        result = EngineResult()
        try:
            if task == "static":
                steps, converged = 0, True
            else:
                target = FrechetCellFilter(atoms) if task == "relax" else atoms
                opt_cls = _OPTIMIZERS[params.get("optimizer", "FIRE")]
                opt = opt_cls(target, logfile=str(directory / "opt.log"))
                converged = bool(opt.run(fmax=params["fmax_ev_per_a"], steps=params["max_steps"]))
                steps = int(opt.nsteps)
            energy = float(atoms.get_potential_energy())
            forces = atoms.get_forces()
            stress = atoms.get_stress(voigt=False) * EV_PER_A3_TO_GPA
        except Exception as exc:  # a calculator blowing up is a failed attempt, not a crash of apply
            result.failure_code = "engine_error"
            result.message = f"{type(exc).__name__}: {exc}"
            result.wall_s = time.perf_counter() - t0
            return result
        result.wall_s = time.perf_counter() - t0
        if not (math.isfinite(energy) and np.isfinite(forces).all() and np.isfinite(stress).all()):
            result.failure_code = "non_finite_output"
            result.message = "energy, forces or stress is NaN or infinite"
            return result
        result.energy_ev = energy
        result.forces_ev_per_a = forces.tolist()
        result.stress_gpa = stress.tolist()
        result.structure = AseAtomsAdaptor.get_structure(atoms).as_dict()
        result.converged = converged
        result.n_steps = steps
        if not converged:
            result.failure_code = "ionic_not_converged"
            result.message = f"fmax not reached within {params['max_steps']} steps"
        atoms.calc = None
        write(directory / "final.extxyz", atoms, format="extxyz")
        return result
