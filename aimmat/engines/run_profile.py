"""How a pw.x run is executed, kept apart from what it computes.

A manifest profile mixes physics (cutoffs, smearing, thresholds) with
resources (binary, MPI ranks, launcher, walltime, free memory). Resources
change how fast, not what: they never enter the input's physics, and the
executing code should not have to pick them out of a physics dict.
``split_profile`` separates the two once, at the engine's door.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass

# manifest field -> RunProfile field
RUN_FIELDS = {
    "pw_command": "command",
    "mpi_ranks": "ranks",
    "launcher": "launcher",
    "walltime_s": "walltime_s",
    "min_free_mem_mb": "min_free_mem_mb",
    "reuse_from": "reuse_from",  # set by stages at run time, never by a manifest
}


@dataclass(frozen=True)
class RunProfile:
    """Resources of one engine process.

    Attributes
    ----------
    command : str
        The executable, possibly with arguments (``"pw.x -nk 2"``).
    ranks : int
        MPI ranks; 1 runs the command without a launcher.
    launcher : str
        MPI launcher template; ``{ranks}`` is substituted.
    walltime_s : float
        Wall-clock budget of one run (s); pw.x stops itself at 0.95 of it.
    min_free_mem_mb : float
        Wait before launching until this much memory is available (MB).
    reuse_from : tuple of str
        Folders of the same run in earlier attempts of the same stage key
        (an interrupted apply's converge ladder or elastic cells): a run
        there that finished with the same input file is read instead of
        computed again (``aimmat.engines.qe.execute.reuse_finished``).
    """

    command: str = "pw.x"
    ranks: int = 1
    launcher: str = "mpirun --allow-run-as-root -np {ranks}"
    walltime_s: float = 3600
    min_free_mem_mb: float = 0.0
    reuse_from: tuple[str, ...] = ()

    @classmethod
    def from_profile(cls, d: dict) -> RunProfile:
        """Read the resource fields of a manifest profile dict (defaults when absent or None)."""
        kw = {ours: d[theirs] for theirs, ours in RUN_FIELDS.items() if d.get(theirs) is not None}
        if "ranks" in kw:
            kw["ranks"] = int(kw["ranks"])
        for key in ("walltime_s", "min_free_mem_mb"):
            if key in kw:
                kw[key] = float(kw[key])
        if "reuse_from" in kw:
            kw["reuse_from"] = tuple(str(x) for x in kw["reuse_from"])
        return cls(**kw)

    def argv(self, input_name: str = "pw.in") -> list[str]:
        """Command line of one run: launcher (when ranks > 1), executable, ``-in input_name``."""
        exe = shlex.split(self.command)
        if self.ranks > 1:
            return shlex.split(self.launcher.format(ranks=self.ranks)) + exe + ["-in", input_name]
        return exe + ["-in", input_name]


def split_profile(d: dict) -> tuple[dict, RunProfile]:
    """(physics, run): the profile without its resource fields, and those fields typed.

    ``nstep`` stays in the physics: it is written into the input file.
    """
    physics = {k: v for k, v in d.items() if k not in RUN_FIELDS}
    return physics, RunProfile.from_profile(d)
