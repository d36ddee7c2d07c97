"""Failure taxonomy of pw.x runs and the retry ladder.

Classes follow aiida-quantumespresso's exit codes, reduced to what a remedy
depends on. ``classify`` reads a parsed output; ``remedy`` says what the
next attempt changes (parameter overrides, restart from the last structure)
or None when no known remedy exists.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aimmat.engines.base import Remedy
from aimmat.engines.qe.parse import PwOutput

CODES = (
    "out_of_walltime",
    "electronic_not_converged",
    "ionic_not_converged",
    "ionic_nstep_exceeded",
    "bfgs_history_failure",
    "diagonalization_failure",
    "charge_wrong",
    "converged_except_final_scf",
    "output_missing",
    "output_truncated",
    "nonzero_exit",
)

DEFAULT_POLICY = {
    "mixing_beta_factor": 0.8,
    "mixing_beta_min": 0.1,
    "diagonalization": ["david", "ppcg", "cg"],
    "trust_radius_ini_bohr": 0.1,
    "damped_dynamics": True,
    "restart_from_last_structure": True,
}


def classify(out: PwOutput | None, returncode: int | None, calculation: str, timed_out: bool = False) -> str | None:
    """Failure code of one pw.x run, or None when it succeeded.

    The order matters: a run killed by our hard timeout is truncated even if
    pw.x printed partial results; pw.x's own clean stop at max_seconds is
    out_of_walltime; errors pw.x names win over generic exit codes.
    """
    if out is None or not out.text.strip():
        return "output_missing"
    if out.walltime_hit:
        return "out_of_walltime"
    if out.charge_wrong:
        return "charge_wrong"
    if out.diagonalization_error:
        return "diagonalization_failure"
    truncated = timed_out or (not out.job_done and out.error_block is None)
    relax = calculation in ("relax", "vc-relax")
    if relax and out.final_scf_started and (truncated or (out.scf_converged and not out.scf_converged[-1])):
        # the ionic minimisation finished; only the final SCF on the new G-vectors failed
        return "converged_except_final_scf"
    if truncated:
        return "output_truncated"
    if out.error_block is not None:
        return "nonzero_exit"  # pw.x stopped with its own error message
    if relax:
        if out.scf_converged and not out.scf_converged[-1]:
            return "electronic_not_converged"
        if out.nstep_reached:
            return "ionic_nstep_exceeded"
        if out.bfgs_history_reset_stop:
            return "bfgs_history_failure"
        if not out.ionic_converged:
            return "ionic_not_converged"
    elif not out.scf_converged or not out.scf_converged[-1]:
        return "electronic_not_converged"
    if out.error_block is not None or returncode not in (0, None):
        return "nonzero_exit"
    return None


def remedy(code: str, overrides: dict, profile: dict, policy: Mapping[str, Any] = DEFAULT_POLICY) -> Remedy | None:
    """The next rung of the ladder for ``code``.

    Parameters
    ----------
    code : str
        Failure code from ``classify``.
    overrides : dict
        Overrides the failed attempt already ran with (earlier rungs).
    profile : dict
        Physics parameters of the run: the current ``occupations``,
        ``mixing_beta`` and ``diagonalization`` are read from here unless
        overridden.
    policy : mapping
        The retry policy (the manifest's ``retry:``); keys it lacks fall back
        to ``DEFAULT_POLICY``.

    Returns
    -------
    Remedy or None
        None when the ladder has no further rung for ``code``.
    """
    pol = {**DEFAULT_POLICY, **(policy or {})}
    ov = dict(overrides)
    if code == "charge_wrong" and ov.get("occupations", profile["occupations"]) == "fixed":
        ov["occupations"] = "smearing"  # pw.x: 'charge is wrong: smearing is needed' (a metal)
        return Remedy(ov, "occupations fixed -> smearing")
    if code in ("electronic_not_converged", "converged_except_final_scf", "charge_wrong"):
        beta = ov.get("mixing_beta", profile["mixing_beta"])
        new = round(beta * pol["mixing_beta_factor"], 4)
        if new < pol["mixing_beta_min"]:
            return None
        ov["mixing_beta"] = new
        # a relaxation keeps the ionic progress it made before the SCF failed
        return Remedy(ov, f"mixing_beta {beta} -> {new}", restart=True)
    if code == "diagonalization_failure":
        cur = ov.get("diagonalization", profile["diagonalization"])
        ladder = list(pol["diagonalization"])
        later = ladder[ladder.index(cur) + 1 :] if cur in ladder else [d for d in ladder if d != cur][:1]
        if not later:
            return None
        nxt = later[0]
        ov["diagonalization"] = nxt
        return Remedy(ov, f"diagonalization {cur} -> {nxt}")
    if code in ("ionic_not_converged", "ionic_nstep_exceeded", "out_of_walltime", "output_truncated"):
        if not pol["restart_from_last_structure"]:
            return None
        return Remedy(ov, "restart from last structure", restart=True)
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
    return None  # output_missing, nonzero_exit (pw.x named an error): no known remedy
