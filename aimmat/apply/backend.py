"""Execution backends: ``submit(fn, task) -> Future``.

``InlineBackend`` runs in this process (``--jobs 1``); ``ProcessPoolBackend``
runs tasks in forked workers that die with their parent, so a killed apply
leaves no worker writing records behind its back. ``executor: {kind: parsl}``
selects ``aimmat.apply.parsl.ParslBackend`` (local workers or Slurm).
"""

from __future__ import annotations

import ctypes
import multiprocessing as mp
import os
import signal
from concurrent.futures import Future, ProcessPoolExecutor


class InlineBackend:
    def submit(self, fn, task) -> Future:
        fut: Future = Future()
        try:
            fut.set_result(fn(task))
        except BaseException as exc:  # delivered through the future like a pool would
            fut.set_exception(exc)
        return fut

    def shutdown(self) -> None:
        pass


def _init_worker(threads: int) -> None:
    try:  # Linux: die when the parent dies (SIGKILL included)
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass
    if os.getppid() == 1:  # parent already gone before prctl took effect
        os._exit(1)
    os.environ["AIMMAT_TORCH_THREADS"] = str(threads)
    os.environ["OMP_NUM_THREADS"] = str(threads)


class ProcessPoolBackend:
    def __init__(self, jobs: int):
        # Import the stage code once here so forked workers inherit it
        # instead of each paying the import on its first task.
        import aimmat.engines.emt  # noqa: F401
        import aimmat.stages.elastic  # noqa: F401
        import aimmat.stages.relax  # noqa: F401
        import aimmat.stages.scf  # noqa: F401
        import aimmat.stages.screen  # noqa: F401

        threads = max(1, (os.cpu_count() or 1) // jobs)
        self._pool = ProcessPoolExecutor(max_workers=jobs, mp_context=mp.get_context("fork"), initializer=_init_worker, initargs=(threads,))

    def submit(self, fn, task) -> Future:
        return self._pool.submit(fn, task)

    def shutdown(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


def make_backend(jobs: int, spec=None):
    """The backend the manifest's `executor` block selects (local when absent).

    Local backends run ``jobs`` tasks at once; a Parsl backend carries its
    own ``width`` (its worker slots) and ignores ``jobs``.
    """
    executor = spec.manifest.executor if spec is not None else None
    if executor is not None and executor.kind == "parsl":
        from aimmat.apply.parsl import ParslBackend

        return ParslBackend(executor, spec.campaign_dir)
    return InlineBackend() if jobs <= 1 else ProcessPoolBackend(jobs)
