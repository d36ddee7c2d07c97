"""Failure taxonomy of pw.x runs: stdout, stderr and exit status together.

Classes follow aiida-quantumespresso's exit codes, reduced to what a remedy
depends on. ``diagnose`` reads a parsed output with the process's stderr
and exit status (a LAPACK abort, an out-of-memory kill and an outside
SIGTERM leave different traces there, not in stdout); the ladders that
answer each class live in ``aimmat.engines.qe.ladders``.
"""

from __future__ import annotations

import re

from aimmat.engines.qe.ladders import DEFAULT_POLICY, remedy  # noqa: F401 (re-exported)
from aimmat.engines.qe.parse import LAPACK_RE, PwOutput

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
    "out_of_memory",
    "interrupted",
    "cell_factor_too_small",
    "final_scf_pressure",
    "non_finite_output",
)

OOM_RE = re.compile(r"std::bad_alloc|Cannot allocate|cannot allocate|Out of memory|out of memory|^Killed\b|oom-kill", re.M)
# signals from outside: SIGTERM (scheduler, user), SIGINT, SIGHUP
INTERRUPT_SIGNALS = {15: "SIGTERM", 2: "SIGINT", 1: "SIGHUP"}
# signals a process sends itself when it crashes (gfortran prints "Program received signal ...")
CRASH_SIGNALS = {11: "SIGSEGV", 7: "SIGBUS", 8: "SIGFPE", 4: "SIGILL", 6: "SIGABRT"}
# the last line pw.x prints before a subspace diagonalization: the random/atomic
# starting wavefunctions are rotated (rotate_wfc), or a Davidson/CG pass starts
DIAG_PHASE_RE = re.compile(r"Starting wfcs are|diagonalization with overlap|[Dd]iagonalization$|CG style diagonalization")


def signal_of(returncode: int | None, stderr: str) -> int | None:
    """The signal that ended the process: Popen's negative code, or a launcher's 128+n.

    128+n from mpirun is ambiguous with pw.x's own MPI_ABORT error codes
    (cdiaghg aborts with 130): it counts only when stderr shows no MPI_ABORT.
    """
    if returncode is None:
        return None
    if returncode < 0:
        return -returncode
    if returncode in (129, 130, 132, 134, 135, 136, 137, 139, 143) and "MPI_ABORT" not in stderr:
        return returncode - 128
    return None


def crashed_in_diagonalization(text: str, sig: int | None, stderr: str) -> tuple[str, str] | None:
    """(signal name, last output line) when pw.x crashed inside a subspace diagonalization, else None.

    A singular overlap matrix (more bands than the basis holds, a collapsing
    cell) makes some BLAS kernels abort in cdiaghg with "S matrix not positive
    definite" and others segfault in the same call (OpenBLAS's Zen kernels,
    measured with pw.x 6.7): one failure, one remedy. A crash counts as the
    diagonalization's only when the output's last line opens one.
    """
    name = CRASH_SIGNALS.get(sig) if sig is not None else None
    if name is None:
        m = re.search(r"Program received signal (SIG[A-Z]+)", stderr)
        name = m.group(1) if m else None
    if name is None:
        return None
    last = next((ln.strip() for ln in reversed(text.splitlines()) if ln.strip()), "")
    return (name, last) if DIAG_PHASE_RE.search(last) else None


def pressure_limit_kbar(press_conv_thr_kbar: float) -> float:
    """Largest accepted final-SCF vs. last-BFGS pressure difference (kbar)."""
    return max(5.0 * press_conv_thr_kbar, 2.0)


def diagnose(out: PwOutput | None, returncode: int | None, calculation: str, timed_out: bool = False, stderr: str = "", *,
             press_conv_thr_kbar: float = 0.5, mem_available_mb: float | None = None) -> tuple[str | None, str | None]:
    """(failure code, message) of one pw.x run; (None, None) when it succeeded.

    The order matters: the causes pw.x or the system name (walltime,
    charge, diagonalization, cell_factor, memory, a signal) win over what
    they leave behind (a truncated file); a run killed by our own hard
    timeout is truncated even if pw.x printed partial results.

    Parameters
    ----------
    out : PwOutput or None
        The parsed pw.out (None: no output).
    returncode : int or None
        Exit status as Popen reports it (negative: killed by that signal).
    calculation : str
        pw.x's ``calculation`` (scf, relax, vc-relax).
    timed_out : bool
        Our own hard timeout killed the process.
    stderr : str
        pw.err: LAPACK/MPI aborts and allocation failures show up only here.
    press_conv_thr_kbar : float
        The vc-relax threshold the final-SCF pressure check scales with.
    mem_available_mb : float, optional
        Free memory at launch, quoted in an out-of-memory message.

    Returns
    -------
    tuple
        (code or None, message or None).
    """
    text = out.text if out is not None else ""
    sig = None if timed_out else signal_of(returncode, stderr)
    lapack = LAPACK_RE.search(stderr) or (LAPACK_RE.search(text) if out is not None and not out.job_done else None)
    if out is not None and out.walltime_hit:
        return "out_of_walltime", "pw.x stopped itself at max_seconds"
    if out is not None and out.charge_wrong:
        return "charge_wrong", out.error_block
    if (out is not None and out.diagonalization_error) or lapack:
        what = (out.error_block if out is not None and out.error_block else None) or (lapack.group(0) if lapack else out.diagonalization_error)
        return "diagonalization_failure", f"diagonalization failed (exit {returncode}): {what}"
    if not timed_out and out is not None and not out.job_done and (crash := crashed_in_diagonalization(text, sig, stderr)):
        return "diagonalization_failure", f"pw.x crashed with {crash[0]} in a subspace diagonalization (exit {returncode}; last line: {crash[1]!r})"
    if out is not None and out.cell_factor_error:
        return "cell_factor_too_small", out.error_block
    if not timed_out and (sig == 9 or OOM_RE.search(stderr)):
        est = out.memory_mb if out is not None else None
        mem = f"pw.x estimated {est:.0f} MB per process" if est else "no pw.x memory estimate"
        if mem_available_mb is not None:
            mem += f", {mem_available_mb:.0f} MB were available at launch"
        return "out_of_memory", f"killed for memory (exit {returncode}): {mem}"
    if sig in INTERRUPT_SIGNALS:
        return "interrupted", f"pw.x was stopped from outside by {INTERRUPT_SIGNALS[sig]} (exit {returncode})"
    if out is None or not text.strip():
        return "output_missing", f"pw.x wrote no output (exit {returncode})"
    truncated = timed_out or (not out.job_done and out.error_block is None)
    relax = calculation in ("relax", "vc-relax")
    if relax and out.final_scf_started and (truncated or (out.scf_converged and not out.scf_converged[-1])):
        # the ionic minimisation finished; only the final SCF on the new G-vectors failed
        return "converged_except_final_scf", "the final SCF at the relaxed structure did not finish"
    if truncated:
        crash = CRASH_SIGNALS.get(sig) if sig is not None else None
        how = ", hard timeout" if timed_out else (f", pw.x crashed with {crash}" if crash else "")
        return "output_truncated", f"output ends mid-run (exit {returncode}{how})"
    if out.error_block is not None:
        return "nonzero_exit", out.error_block  # pw.x stopped with its own error message
    if relax:
        if out.scf_converged and not out.scf_converged[-1]:
            return "electronic_not_converged", None
        if out.nstep_reached:
            return "ionic_nstep_exceeded", None
        if out.bfgs_history_reset_stop:
            return "bfgs_history_failure", None
        if not out.ionic_converged:
            return "ionic_not_converged", None
    elif not out.scf_converged or not out.scf_converged[-1]:
        return "electronic_not_converged", None
    if returncode not in (0, None):
        return "nonzero_exit", f"pw.x exited {returncode} after a complete output"
    if calculation == "vc-relax" and out.final_scf_started and out.pressure_before_final_scf_kbar is not None and out.pressures_kbar:
        before, final = out.pressure_before_final_scf_kbar, out.pressures_kbar[-1]
        limit = pressure_limit_kbar(press_conv_thr_kbar)
        if not abs(final - before) <= limit:  # NaN ('****') fails too
            return "final_scf_pressure", (
                f"final SCF pressure {final:.2f} kbar vs {before:.2f} kbar at the end of the relaxation: "
                f"|difference| {abs(final - before):.2f} > max(5 x press_conv_thr {press_conv_thr_kbar} kbar, 2 kbar) = {limit:.2f} kbar "
                "(Pulay stress: raise the cutoff)")
    return None, None


def classify(out: PwOutput | None, returncode: int | None, calculation: str, timed_out: bool = False, stderr: str = "",
             **kw) -> str | None:
    """Failure code of one pw.x run, or None when it succeeded (see ``diagnose``)."""
    return diagnose(out, returncode, calculation, timed_out, stderr, **kw)[0]
