"""Retry ladders of pw.x failures: what the next attempt changes, or stop.

Every rung changes an input (a parameter, the structure or saved state it
starts from, the walltime, the ranks) or the ladder ends: rerunning the
same input only repeats the failure. The one exception is an interruption
from outside (SIGTERM), whose cause was not the input; its tag says so.

Bookkeeping that bounds a ladder (how many restarts it made) travels in the
overrides under ``LADDER_KEY``; the restart folder under ``RESTART_DIR_KEY``.
Both are read by ``write_inputs``/here only, never written into an input.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from aimmat.engines.base import Remedy

LADDER_KEY = "ladder"
RESTART_DIR_KEY = "restart_dir"
CELL_FACTOR_DEFAULT = 2.0  # pw.x's default for vc-relax

DEFAULT_POLICY = {
    "mixing_beta_factor": 0.8,
    "mixing_beta_min": 0.1,
    "electron_maxstep_factor": 2.0,
    "electron_maxstep_max": 1000,
    "diagonalization": ["david", "ppcg", "cg"],
    "trust_radius_ini_bohr": 0.1,
    "damped_dynamics": True,
    "restart_from_last_structure": True,
    "max_structure_restarts": 3,  # ionic / truncated runs continued from their last structure
    "max_state_restarts": 3,  # walltime / interrupted runs continued from pw.x's saved state
    "walltime_factor": 2.0,
    "walltime_max_s": None,  # None: no walltime ladder (a longer run is the user's budget decision)
    "cell_factor": [3.0, 4.0],
    "final_scf_pressure_restarts": 1,
    "interrupted_reruns": 1,  # reruns of unchanged inputs after an outside SIGTERM
}


def _pools(command: str) -> int:
    m = re.search(r"(?:-nk|-npool|-npools|-nkpools)\s+(\d+)", command)
    return int(m.group(1)) if m else 1


def remedy(code: str, overrides: dict, profile: dict, policy: Mapping[str, Any] = DEFAULT_POLICY,
           facts: Mapping[str, Any] | None = None) -> Remedy | None:
    """The next rung of the ladder for ``code``.

    Parameters
    ----------
    code : str
        Failure code from ``taxonomy.classify``.
    overrides : dict
        Overrides the failed attempt ran with (earlier rungs, bookkeeping).
    profile : dict
        The run's profile (physics and run fields): current values are read
        here unless overridden.
    policy : mapping
        The retry policy; keys it lacks fall back to ``DEFAULT_POLICY``.
    facts : mapping, optional
        What the failed attempt left: ``new_structure`` (pw.x printed a
        structure other than its input), ``cell_changed`` (a vc-relax that
        moved the cell: its saved state is not continued) and ``restart_dir``
        (a folder with pw.x's restart files). Without facts a new structure is assumed and
        no saved state.

    Returns
    -------
    Remedy or None
        None when the ladder has no further rung for ``code``.
    """
    pol = {**DEFAULT_POLICY, **(policy or {})}
    facts = {"new_structure": True, "restart_dir": None, **(facts or {})}
    ov = {k: v for k, v in overrides.items() if k != RESTART_DIR_KEY}  # saved state is used once
    counts = dict(ov.get(LADDER_KEY, {}))

    def cur(key, default=None):
        return ov.get(key, profile.get(key, default))

    def counted(name: str, limit: int) -> bool:
        """Count one more rung of ``name``; False when ``limit`` was reached."""
        if counts.get(name, 0) >= limit:
            return False
        counts[name] = counts.get(name, 0) + 1
        ov[LADDER_KEY] = counts
        return True

    new_structure = bool(facts["new_structure"]) and pol["restart_from_last_structure"]
    if code == "charge_wrong" and cur("occupations") == "fixed":
        ov["occupations"] = "smearing"  # pw.x: 'charge is wrong: smearing is needed' (a metal)
        return Remedy(ov, "occupations fixed -> smearing")
    if code in ("electronic_not_converged", "converged_except_final_scf", "charge_wrong"):
        beta = cur("mixing_beta")
        new = round(beta * pol["mixing_beta_factor"], 4)
        if new < pol["mixing_beta_min"]:
            return None
        ov["mixing_beta"] = new
        tag = f"mixing_beta {beta} -> {new}"
        steps = cur("electron_maxstep", 100)
        more = min(int(steps * pol["electron_maxstep_factor"]), int(pol["electron_maxstep_max"]))
        if more > steps:
            ov["electron_maxstep"] = more
            tag += f", electron_maxstep {steps} -> {more}"
        # a relaxation keeps the ionic progress it made before the SCF failed
        return Remedy(ov, tag, restart=new_structure)
    if code == "diagonalization_failure":
        now = cur("diagonalization")
        ladder = list(pol["diagonalization"])
        later = ladder[ladder.index(now) + 1 :] if now in ladder else [d for d in ladder if d != now][:1]
        if not later:
            return None
        ov["diagonalization"] = later[0]
        return Remedy(ov, f"diagonalization {now} -> {later[0]}")
    if code in ("ionic_not_converged", "ionic_nstep_exceeded", "output_truncated"):
        # a rerun from the same structure repeats the same path: only progress is worth continuing
        if not new_structure or not counted("structure_restarts", pol["max_structure_restarts"]):
            return None
        return Remedy(ov, "restart from last structure", restart=True)
    if code in ("out_of_walltime", "interrupted"):
        return _stopped(code, ov, profile, pol, facts, new_structure, counted)
    if code == "out_of_memory":
        command, ranks = cur("pw_command", "pw.x"), int(cur("mpi_ranks", 1) or 1)
        pools = _pools(command)
        if pools > 1:  # each pool holds the whole G-vector set: fewer pools, less memory
            ov["pw_command"] = re.sub(r"((?:-nk|-npool|-npools|-nkpools)\s+)\d+", rf"\g<1>{pools // 2}", command)
            return Remedy(ov, f"out of memory: pools {pools} -> {pools // 2}")
        if ranks > 1:
            ov["mpi_ranks"] = ranks // 2
            return Remedy(ov, f"out of memory: MPI ranks {ranks} -> {ranks // 2}")
        return None  # one rank already: the machine is too small for this input
    if code == "cell_factor_too_small":
        now = float(cur("cell_factor") or CELL_FACTOR_DEFAULT)
        later = [float(c) for c in pol["cell_factor"] if float(c) > now]
        if not later:
            return None
        ov["cell_factor"] = later[0]
        return Remedy(ov, f"cell_factor {now} -> {later[0]}; restart from last cell", restart=new_structure)
    if code == "final_scf_pressure":
        if not counted("final_scf_pressure", pol["final_scf_pressure_restarts"]):
            return None  # persists on new G-vectors: the cutoff is too low for this cell
        return Remedy(ov, "final SCF pressure off the relaxed one: restart vc-relax from the final cell (new G-vectors)", restart=True)
    if code == "bfgs_history_failure":
        if ov.get("ion_dynamics") == "damp":
            return None
        if "trust_radius_ini" not in ov:
            ov["trust_radius_ini"] = pol["trust_radius_ini_bohr"]
            return Remedy(ov, f"trust_radius_ini 0.5 -> {pol['trust_radius_ini_bohr']}; restart from last structure", restart=True)
        if not pol["damped_dynamics"]:
            return None
        ov["ion_dynamics"] = "damp"
        return Remedy(ov, "ion_dynamics bfgs -> damp; restart from last structure", restart=True)
    return None  # output_missing, nonzero_exit (pw.x named an error), non_finite_output: no known remedy


def _stopped(code, ov, profile, pol, facts, new_structure, counted) -> Remedy | None:
    """pw.x stopped before the end: by its own clock (out_of_walltime) or from outside (interrupted)."""
    why = "walltime" if code == "out_of_walltime" else "external interruption"
    if facts.get("cell_changed") and new_structure and counted("structure_restarts", pol["max_structure_restarts"]):
        # pw.x 6.7 continuing a vc-relax from its saved state after the cell moved reads the
        # charge onto the wrong cell: "charge is wrong", 0.27 of 25 electrons (a generated BCO3
        # stopped at walltime after 14 BFGS steps). The last cell with a fresh SCF (and fresh
        # G-vectors, which the fixed-basis vc-relax needs after a large volume change) keeps the progress.
        return Remedy(ov, f"{why}: vc-relax moved the cell; restart from last structure", restart=True)
    if facts["restart_dir"] and counted("state_restarts", pol["max_state_restarts"]):
        ov[RESTART_DIR_KEY] = str(facts["restart_dir"])
        return Remedy(ov, f"{why}: restart from pw.x's saved state", restart=new_structure)
    if code == "interrupted":
        if new_structure and counted("structure_restarts", pol["max_structure_restarts"]):
            return Remedy(ov, "external interruption: restart from last structure", restart=True)
        if counted("interrupted_reruns", pol["interrupted_reruns"]):
            # the cause was outside the input: the same input is worth one more try
            return Remedy(ov, "external interruption: rerun unchanged (cause was external)")
        return None
    wall, cap = float(ov.get("walltime_s", profile.get("walltime_s") or 3600)), pol["walltime_max_s"]
    new = min(wall * float(pol["walltime_factor"]), float(cap)) if cap else wall
    if new <= wall:
        return None  # no saved state and no walltime ladder: a rerun would stop at the same point
    ov["walltime_s"] = new
    tag = f"walltime {wall:g} s -> {new:g} s" + ("; restart from last structure" if new_structure else "")
    return Remedy(ov, tag, restart=new_structure)
