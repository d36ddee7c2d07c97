"""The pw.x engine: write inputs, execute, read results, remedy (ASE's file-IO split).

``QeEngine.run`` is the four steps in order. The profile dict is split once
at the door into physics (what the input says) and a typed ``RunProfile``
(how the process runs); nothing after that reads resource keys from a dict.

Units at the boundary: energy eV, forces eV/A, stress GPa tensile positive.
"""

from __future__ import annotations

from pathlib import Path

from pymatgen.core import Lattice, Structure

from aimmat.engines.base import EngineResult, Remedy
from aimmat.engines.qe import execute as _exec
from aimmat.engines.qe.execute import command, pw_env, pw_version
from aimmat.engines.qe.pseudos import pseudo_folder, resolve_pseudos
from aimmat.engines.qe.read import read_results
from aimmat.engines.qe.taxonomy import DEFAULT_POLICY, remedy

# the classes whose retry may continue from pw.x's restart files
KEEP_RESTART_FILES = ("out_of_walltime", "interrupted")
from aimmat.engines.qe.write import WrittenInput, write_inputs
from aimmat.engines.run_profile import RunProfile, split_profile

# Re-exported: plan.keys and bench/ import these from here.
__all__ = ["QeEngine", "command", "pw_env", "pw_version", "pseudo_folder", "resolve_pseudos"]


class QeEngine:
    """Quantum ESPRESSO pw.x through input and output files."""

    name = "qe"

    @staticmethod
    def version() -> str:
        """``"pw.x <version>"`` as the installed binary prints it."""
        return pw_version()

    def write_inputs(self, structure, physics: dict, task: str, directory: Path, kpts=None, *, walltime_s: float) -> WrittenInput:
        """Write ``directory/pw.in``; see ``aimmat.engines.qe.write.write_inputs``."""
        return write_inputs(structure, physics, task, directory, kpts, walltime_s=walltime_s)

    def execute(self, run: RunProfile, directory: Path) -> tuple[int, bool, float]:
        """(returncode, timed_out, wall_s) of pw.x; see ``aimmat.engines.qe.execute.execute``."""
        return _exec.execute(run, directory)

    def read_results(self, directory: Path, structure, task: str, rc: int | None, timed_out: bool, wall: float, kpts,
                     **kw) -> EngineResult:
        """Parse and classify ``directory/pw.out`` with ``pw.err``; see ``aimmat.engines.qe.read.read_results``."""
        return read_results(directory, structure, task, rc, timed_out, wall, kpts, **kw)

    def remedy(self, code: str, overrides: dict, params: dict, result: EngineResult | None = None) -> Remedy | None:
        """The taxonomy's next rung, under the policy the caller put in ``params["retry_policy"]``.

        ``result`` (the failed attempt) tells the ladder whether pw.x left a
        new structure or restart files to continue from.
        """
        facts = None
        if result is not None:
            moved = bool(result.extra.get("new_structure"))
            facts = {"new_structure": moved, "restart_dir": result.extra.get("restart_dir"),
                     "cell_changed": moved and result.extra.get("calculation") == "vc-relax"}
        return remedy(code, overrides, params, params.get("retry_policy") or DEFAULT_POLICY, facts)

    def run(self, structure, params: dict, task: str, directory: Path, kpts=None) -> EngineResult:
        """Write, execute and read one pw.x run of ``task`` on ``structure``.

        Parameters
        ----------
        structure : pymatgen.core.Structure
        params : dict
            A profile dict: physics, resolved ``pseudo_files`` and run fields
            (``pw_command``, ``mpi_ranks``, ``launcher``, ``walltime_s``,
            ``min_free_mem_mb``).
        task : {"relax", "static", "relax_ions"}
        directory : Path
        kpts : tuple of int, optional
            Explicit mesh; default from ``params``.

        Raises
        ------
        ValueError
            When ``params`` has no ``pseudo_files``.
        """
        physics, run = split_profile(params)
        turned = None
        if kpts is None and not physics.get("kpoints"):  # deterministic: a restart turns the same way
            # a mesh from the spacing: the cell can go to pw.x in the standard
            # orientation, where its symmetry finder sees every operation
            # (an explicit mesh belongs to the caller's basis: left alone)
            turned = _standard(structure)
            if turned is not None:
                given, structure = structure, turned[0]
                if task == "static":  # a fixed cell keeps its basis and atom order (forces line up): rotation only
                    structure = Structure(Lattice(given.lattice.matrix @ turned[1].T), given.species, given.frac_coords)
        written = self.write_inputs(structure, physics, task, directory, kpts, walltime_s=run.walltime_s)
        rc, timed_out, wall = self.execute(run, directory)
        res = self.read_results(directory, structure, task, rc, timed_out, wall, written.kpts,
                                press_conv_thr_kbar=physics.get("press_conv_thr_kbar"))
        if res.failure_code not in KEEP_RESTART_FILES:
            _exec.discard_restart_files(directory)  # wavefunctions: large, and no rung reuses them
            res.extra["restart_dir"] = None
        if turned is not None:
            _back(res, turned[1], turned[2])
            if task == "static" and res.structure is not None:
                res.structure = given.as_dict()  # a fixed cell comes back exactly as given (its hash is the relax's)
        return res


def _standard(structure):
    """(structure in the standard orientation, R, info), or None when spglib finds no group."""
    from aimmat.engines.setting import standard_orientation

    try:
        return standard_orientation(structure)
    except ValueError:
        return None


def _back(res: EngineResult, r, info: dict) -> None:
    """Results computed in the standard frame, in the input frame (x_in = R^T x_std)."""
    import numpy as np
    from pymatgen.core import Lattice, Structure

    from aimmat.engines.setting import forces_to_input_frame, stress_to_input_frame

    if res.stress_gpa is not None:
        res.stress_gpa = stress_to_input_frame(np.asarray(res.stress_gpa), r).tolist()
    if res.forces_ev_per_a is not None:
        res.forces_ev_per_a = forces_to_input_frame(np.asarray(res.forces_ev_per_a), r).tolist()
    if res.structure is not None:
        s = Structure.from_dict(res.structure)
        res.structure = Structure(Lattice(s.lattice.matrix @ r), s.species, s.frac_coords).as_dict()
    res.extra["setting"] = {"spacegroup": info["spacegroup"], "basis": info["basis"], "rotation": info["rotation"]}
