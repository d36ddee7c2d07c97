"""The pw.x engine: write inputs, execute, read results, remedy (ASE's file-IO split).

``QeEngine.run`` is the four steps in order. The profile dict is split once
at the door into physics (what the input says) and a typed ``RunProfile``
(how the process runs); nothing after that reads resource keys from a dict.

Units at the boundary: energy eV, forces eV/A, stress GPa tensile positive.
"""

from __future__ import annotations

from pathlib import Path

from aimmat.engines.base import EngineResult, Remedy
from aimmat.engines.qe import execute as _exec
from aimmat.engines.qe.execute import command, pw_env, pw_version
from aimmat.engines.qe.pseudos import pseudo_folder, resolve_pseudos
from aimmat.engines.qe.read import read_results
from aimmat.engines.qe.taxonomy import DEFAULT_POLICY, remedy
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

    def read_results(self, directory: Path, structure, task: str, rc: int | None, timed_out: bool, wall: float, kpts) -> EngineResult:
        """Parse and classify ``directory/pw.out``; see ``aimmat.engines.qe.read.read_results``."""
        return read_results(directory, structure, task, rc, timed_out, wall, kpts)

    def remedy(self, code: str, overrides: dict, params: dict) -> Remedy | None:
        """The taxonomy's next rung, under the policy the caller put in ``params["retry_policy"]``."""
        return remedy(code, overrides, params, params.get("retry_policy") or DEFAULT_POLICY)

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
        written = self.write_inputs(structure, physics, task, directory, kpts, walltime_s=run.walltime_s)
        rc, timed_out, wall = self.execute(run, directory)
        return self.read_results(directory, structure, task, rc, timed_out, wall, written.kpts)
