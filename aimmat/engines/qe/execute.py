"""Run pw.x in a prepared folder: the second step of the file-IO split.

Everything here reads the typed ``RunProfile`` (how to run), never the
physics parameters (what to compute).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import tempfile
import time
from functools import lru_cache
from pathlib import Path

from aimmat.engines.qe.write import INPUT_NAME
from aimmat.engines.run_profile import RunProfile
from aimmat.errors import EnvironmentProblem
from aimmat.runtime import slots, stop

# pw.x stops itself at 0.95 x walltime (max_seconds); the hard kill comes
# only after this grace, for a pw.x that hangs or ignores its clock.
HARD_TIMEOUT_GRACE_S = 60.0
STOP_POLL_S = 0.5  # how often a running pw.x checks for a stop request
STOP_GRACE_S = 5.0  # SIGTERM, then SIGKILL after this long


def pw_env() -> dict:
    """Environment of a pw.x process: one thread per rank, unbuffered Fortran output."""
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", "1")
    env.setdefault("OPENBLAS_NUM_THREADS", "1")
    # gfortran buffers stdout when it is a file; an MPI_ABORT (LAPACK failure
    # in the diagonalization, say) then loses pw.x's own error message.
    env["GFORTRAN_UNBUFFERED_PRECONNECTED"] = "y"
    env["OMPI_ALLOW_RUN_AS_ROOT"] = "1"
    env["OMPI_ALLOW_RUN_AS_ROOT_CONFIRM"] = "1"
    return env


@lru_cache(maxsize=8)
def pw_version(pw_command: str = "pw.x") -> str:
    """Version string printed by pw.x (run once on an empty input, in a scratch folder)."""
    exe = shlex.split(pw_command)[0]
    if shutil.which(exe) is None:
        raise EnvironmentProblem(
            f"{exe} not found on PATH (needed by a `kind: qe` profile)",
            fix="as root: apt-get install quantum-espresso libopenblas0-pthread (or `make setup`)",
        )
    try:
        with tempfile.TemporaryDirectory() as tmp:
            proc = subprocess.run(shlex.split(pw_command), input="", capture_output=True, text=True, cwd=tmp, timeout=60,
                                  env=pw_env())
    except subprocess.TimeoutExpired:
        raise EnvironmentProblem(f"{pw_command} did not print its version within 60 s on an empty input",
                                 fix="check that `pw_command` runs pw.x (try it by hand with an empty input)") from None
    except OSError as exc:
        raise EnvironmentProblem(f"{pw_command} could not be started: {exc}",
                                 fix="check that `pw_command` names an executable pw.x") from None
    m = re.search(r"Program PWSCF v\.(\S+)", proc.stdout)
    return f"pw.x {m.group(1)}" if m else "pw.x (unknown version)"


def _prctl():
    try:  # looked up once in the parent: the child between fork and exec only calls it
        import ctypes

        return ctypes.CDLL("libc.so.6", use_errno=True).prctl
    except (OSError, AttributeError):
        return None


_PRCTL = _prctl()
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """In the pw.x child before exec: SIGTERM when the launching thread's
    process dies. pw.x runs in its own session (so our hard timeout can kill
    the launcher and every rank), which a signal to the apply's process
    group does not reach; without this, a killed apply left its pw.x runs
    computing until their max_seconds. SIGTERM, not SIGKILL: mpirun forwards
    it to its ranks. Calls nothing that takes a lock (fork safety)."""
    if _PRCTL is not None:
        _PRCTL(_PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() == 1:  # the parent died before the flag was set
            os._exit(143)


def command(run: RunProfile) -> list[str]:
    """argv of one pw.x run: the launcher with ``{ranks}`` substituted when ranks > 1."""
    return run.argv(INPUT_NAME)


def _execute(run: RunProfile, directory: Path) -> tuple[int, bool]:
    """(returncode, timed_out) of pw.x in ``directory``; stdout/stderr to pw.out/pw.err.

    Raises ``stop.StopRequested`` when apply is being stopped (SIGINT/SIGTERM):
    before the launch, or after ending a running pw.x (SIGTERM to its
    session, SIGKILL after ``STOP_GRACE_S``)."""
    if stop.requested():
        raise stop.StopRequested(f"not launching pw.x in {directory}: stop requested")
    deadline = time.monotonic() + run.walltime_s + HARD_TIMEOUT_GRACE_S
    with open(directory / "pw.out", "w") as fo, open(directory / "pw.err", "w") as fe:
        proc = subprocess.Popen(command(run), cwd=directory, stdout=fo, stderr=fe, env=pw_env(), start_new_session=True,
                                preexec_fn=_die_with_parent)
        while True:
            try:
                return proc.wait(timeout=max(0.0, min(STOP_POLL_S, deadline - time.monotonic()))), False
            except subprocess.TimeoutExpired:
                pass
            if stop.requested():
                _end(proc)
                raise stop.StopRequested(f"pw.x in {directory} stopped: stop requested")
            if time.monotonic() >= deadline:
                os.killpg(proc.pid, signal.SIGKILL)  # the launcher and every rank
                return proc.wait(), True


def _end(proc: subprocess.Popen) -> None:
    """SIGTERM to pw.x's session, SIGKILL if it is still there after STOP_GRACE_S."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=STOP_GRACE_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    except ProcessLookupError:
        proc.wait()


def mem_available_mb() -> float | None:
    """MemAvailable of /proc/meminfo (MB); None where there is none."""
    try:
        m = re.search(r"^MemAvailable:\s+(\d+) kB", Path("/proc/meminfo").read_text(), re.M)
    except OSError:
        return None
    return int(m.group(1)) / 1024 if m else None


def discard_restart_files(directory: Path) -> None:
    """Delete ``directory/out`` (wavefunctions: large, reused only by a restart rung)."""
    shutil.rmtree(directory / "out", ignore_errors=True)


def reuse_finished(sources, directory: Path) -> tuple[int, bool, float] | None:
    """Take a finished run from one of ``sources`` instead of running pw.x again.

    ``sources`` are folders of the same run in earlier attempts of the same
    stage key (same pseudopotential md5s and pw.x version, both in the key);
    one qualifies when its ``pw.in`` is byte for byte this one's, pw.x ended
    on its own (``run.json`` written, not killed by our timeout) and
    ``pw.out`` says JOB DONE. Its pw.out, pw.err and run.json are copied
    here (run.json gains ``reused_from``) and its (returncode, timed_out,
    wall_s) returned, so classification reads the same output as the first
    time. None when no source qualifies. Restart files are not copied: a
    walltime stop read this way continues from its last structure."""
    if not sources:
        return None
    want = (directory / INPUT_NAME).read_bytes()
    for src in map(Path, sources):
        try:
            if (src / INPUT_NAME).read_bytes() != want:
                continue
            facts = json.loads((src / "run.json").read_text())
            text = (src / "pw.out").read_text(errors="replace")
            err = (src / "pw.err").read_text(errors="replace") if (src / "pw.err").exists() else ""
        except (OSError, ValueError):
            continue
        if facts.get("timed_out") or "JOB DONE" not in text:
            continue
        (directory / "pw.out").write_text(text)
        (directory / "pw.err").write_text(err)
        first = facts.get("reused_from") or str(src)  # where it was computed, through any chain of reuses
        (directory / "run.json").write_text(json.dumps({**facts, "reused_from": first}) + "\n")
        return int(facts["returncode"]), False, float(facts.get("wall_s") or 0.0)
    return None


def execute(run: RunProfile, directory: Path) -> tuple[int, bool, float]:
    """Run pw.x on ``directory/pw.in`` holding ``run.ranks`` core slots.

    ``directory/out`` (restart files) is left in place: whether a retry
    continues from it depends on the classification, so ``QeEngine.run``
    deletes it after reading. ``directory/run.json`` records the process
    facts pw.out lacks (free memory at launch, exit status).

    Returns
    -------
    returncode : int
    timed_out : bool
        True when the hard timeout killed the run.
    wall_s : float
        Wall time of the process, excluding the wait for slots and memory.
    """
    reused = reuse_finished(run.reuse_from, directory)
    if reused is not None:
        return reused
    with slots.hold(run.ranks, run.min_free_mem_mb):
        free = mem_available_mb()  # an out-of-memory kill is judged against this
        t0 = time.perf_counter()
        rc, timed_out = _execute(run, directory)
        wall = time.perf_counter() - t0
    facts = {"returncode": rc, "timed_out": timed_out, "wall_s": round(wall, 3), "mem_available_mb": free, "ranks": run.ranks}
    (directory / "run.json").write_text(json.dumps(facts) + "\n")
    return rc, timed_out, wall
