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

# Set by srun for the tasks of a job step (and by its MPI plugin): a pool that
# `launcher: srun` started is task 0 of step 0, and everything it runs
# inherits that. pw.x's Open MPI then takes a plain (one-rank) pw.x for a
# direct launch by srun and aborts in MPI_Init without PMI support.
_STEP_VARS = ("SLURM_STEP_", "SLURM_STEPID", "SLURM_PROCID", "SLURM_LOCALID", "SLURM_TASK_PID", "SLURM_GTIDS",
              "SLURM_SRUN_COMM_", "SLURM_LAUNCH_NODE_IPADDR", "SLURM_CPU_BIND", "SLURM_LABELIO", "SLURM_PRIO_PROCESS",
              "SLURM_UMASK", "SLURM_DISTRIBUTION", "PMI_", "PMIX_")


def _block_environment(env) -> None:
    """Give the engines of a worker in a Slurm block the job script's environment.

    - Inside an ``srun`` job step (``launcher: srun``): drop the step's and
      the task's variables (``SLURM_STEP_ID``, ``SLURM_PROCID``, ``PMI_*``,
      ``PMIX_*`` ...), so pw.x runs as it would from the job script: a
      one-rank pw.x is an MPI singleton, not a rank of the worker's step.
      And ``SLURM_OVERLAP=1``: the pool's step holds every CPU of the node,
      so a QE profile ``launcher: srun ...`` would wait for a CPU forever;
      the worker's own cores are what its pw.x runs share.
    - In any Slurm job: Open MPI's ``mpirun`` ignores the Slurm allocation
      (``OMPI_MCA_ras=^slurm``, unless worker_init set it). Parsl asks one
      task per node (``--ntasks-per-node=1 --cpus-per-task=N``), which
      ``mpirun`` reads as one slot: ``mpirun -np 2`` refuses ("not enough
      slots"). aimmat shares the worker's cores among its pw.x runs itself
      and never spans nodes, so the node counts as a plain machine.

    Parameters
    ----------
    env : MutableMapping
        The worker's environment (``os.environ``), changed in place.
    """
    if "SLURM_JOB_ID" not in env:
        return
    if "SLURM_STEP_ID" in env or "SLURM_STEPID" in env:
        for name in [n for n in env if n.startswith(_STEP_VARS) and not n.startswith("PMIX_MCA_")]:
            del env[name]
        env.setdefault("SLURM_OVERLAP", "1")
    env.setdefault("OMPI_MCA_ras", "^slurm")


# ---------------------------------------------------------------- worker side
def _remote(fn, task, cores: int, lock_path: str | None, lock_text: str | None):
    """Runs in a Parsl worker: size the engines to the worker, guard, run."""
    if _WORKER_CORES.get("cores") != cores:
        _block_environment(os.environ)
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
