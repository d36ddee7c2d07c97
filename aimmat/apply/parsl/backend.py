"""``ParslBackend``: stage tasks on a HighThroughputExecutor, ``submit(fn, task) -> Future``.

Same interface as the local backends. The workers run ``run_task``
themselves and write records and journal lines straight into the campaign
folder (shared with the compute nodes on a cluster); only the small
``TaskResult`` travels back. A worker that dies mid-task yields a
``TaskResult`` with status ``lost``: its record stays ``running`` and the
next apply resumes it.
"""

from __future__ import annotations

import os
from concurrent.futures import Future
from pathlib import Path

from aimmat.apply.parsl.config import LABEL, _htex, _provider, run_dir, width, worker_cores
from aimmat.apply.parsl.guard import start_guard
from aimmat.apply.runner import TaskResult
from aimmat.errors import EnvironmentProblem
from aimmat.manifest.executor_spec import ParslExecutorSpec
from aimmat.state.lock import LOCK

_WORKER_CORES: dict = {}  # "cores": what this worker process's engines are sized to


# ---------------------------------------------------------------- worker side
def _remote(fn, task, cores: int, lock_path: str | None, lock_text: str | None):
    """Runs in a Parsl worker: size the engines to the worker, guard, run."""
    if _WORKER_CORES.get("cores") != cores:
        from aimmat.runtime import slots

        # CHGNet's torch threads; OMP_NUM_THREADS is left alone: pw.x
        # inherits it (1 unless worker_init exports another value).
        os.environ["AIMMAT_TORCH_THREADS"] = str(cores)
        slots.init(cores)  # pw.x ranks of this worker's tasks share its cores
        _WORKER_CORES["cores"] = cores
    if lock_path is not None:
        start_guard(lock_path, lock_text)
    return fn(task)


# ---------------------------------------------------------------- apply side
def _lost_result(task, exc: BaseException) -> TaskResult:
    where = getattr(exc, "hostname", None) or "?"
    msg = (f"Parsl worker on {where} died while running it ({type(exc).__name__}); "
           "its record stays `running` and the next `aimmat apply` resumes it")
    return TaskResult(task.set_name, task.cand_id, task.stage, "lost", "worker_lost", msg, attempts=0)


class ParslBackend:
    """A private DataFlowKernel (not parsl.load's global one) for one apply.

    Parameters
    ----------
    ex : ParslExecutorSpec
        The manifest's executor block (``kind: parsl``).
    campaign_dir : Path
        The campaign folder; Parsl's run directory is ``<campaign>/.parsl/NNN``.

    Raises
    ------
    EnvironmentProblem
        Parsl is missing or its executor could not start.
    """

    def __init__(self, ex: ParslExecutorSpec, campaign_dir: Path):
        try:
            from parsl.app.app import python_app
            from parsl.config import Config
            from parsl.dataflow.dflow import DataFlowKernel
            from parsl.dataflow.memoization import BasicMemoizer
        except ImportError as exc:  # pragma: no cover - parsl is a dependency
            raise EnvironmentProblem(f"executor.kind parsl needs the parsl package: {exc}", fix="pip install parsl") from None
        self.spec = ex
        self.width = width(ex)
        self.cores = worker_cores(ex)
        self.run_root = run_dir(campaign_dir)
        lock = Path(campaign_dir) / LOCK
        self._lock_text = lock.read_text() if lock.exists() else None  # apply holds it: the guard's reference
        self._lock_path = str(lock) if self._lock_text is not None else None
        self._provider = _provider(ex)
        config = Config(
            executors=[_htex(ex, self._provider)],
            run_dir=str(self.run_root),
            memoizer=BasicMemoizer(memoize=False, checkpoint_mode=None),  # the plan decides what runs
            retries=0,
            # "simple": scale out to max_blocks and replace lost blocks, never
            # scale in mid-apply (this Parsl's htex_auto_scale cancels a block
            # still starting up); cleanup cancels every block at the end.
            strategy="simple",
            strategy_period=1,
            usage_tracking=0,
        )
        self.dfk = None
        try:
            self.dfk = DataFlowKernel(config)
        except Exception as exc:
            self.shutdown()
            raise EnvironmentProblem(f"could not start the Parsl executor: {type(exc).__name__}: {exc}",
                                     fix=f"see the Parsl logs under {self.run_root}") from None
        self._app = python_app(_remote, data_flow_kernel=self.dfk, cache=False, executors=[LABEL])

    @property
    def log_dir(self) -> Path | None:
        """This apply's numbered run directory (Parsl logs), once started."""
        return Path(self.dfk.run_dir) if self.dfk is not None else None

    def submit(self, fn, task) -> Future:
        """Run ``fn(task)`` in a worker; a lost worker resolves to a ``lost`` TaskResult."""
        out: Future = Future()
        app_fut = self._app(fn, task, self.cores, self._lock_path, self._lock_text)

        def relay(f) -> None:
            from parsl.executors.high_throughput.errors import ManagerLost, WorkerLost

            exc = f.exception()
            if exc is None:
                out.set_result(f.result())
            elif isinstance(exc, (WorkerLost, ManagerLost)):
                out.set_result(_lost_result(task, exc))
            else:
                out.set_exception(exc)

        app_fut.add_done_callback(relay)
        return out

    def shutdown(self) -> None:
        """Stop the interchange and cancel every block, even after errors."""
        try:
            if self.dfk is not None and not self.dfk.cleanup_called:
                self.dfk.cleanup()
        finally:
            self._cancel_leftover_blocks()

    def _cancel_leftover_blocks(self) -> None:
        # An executor in bad state is not scaled in by Parsl's cleanup.
        res = getattr(self._provider, "resources", {}) or {}
        left = [jid for jid, job in res.items() if not job.get("cancelled") and not job["status"].terminal]
        if left:
            try:
                self._provider.cancel(left)
            except Exception:  # best effort: heartbeats end the pools anyway
                pass
