"""Parsl backend: stage tasks on a HighThroughputExecutor (`executor: {kind: parsl}`).

Same interface as the local backends, ``submit(fn, task) -> Future``. The
workers run ``run_task`` themselves and write records and journal lines
straight into the campaign folder (shared with the compute nodes on a
cluster); only the small ``TaskResult`` travels back.

- Parsl's app cache and checkpoints are off: aimmat's plan decides what runs.
- A worker that dies mid-task (killed, OOM, node lost, block walltime)
  yields a ``TaskResult`` with status ``lost``: its record stays ``running``
  and the next apply resumes it.
- A worker whose apply is gone stops itself (and its pw.x process groups)
  once another apply takes the campaign lock, or, on the apply's own host,
  once the apply process has died: no orphan keeps writing records behind a
  newer apply's back.
- Parsl's run directory (logs, submit scripts, certificates) is
  ``<campaign>/.parsl/NNN``; the campaign scan skips hidden entries.

``slurm_script(spec)`` renders the job script Parsl would submit, without
Slurm; ``python -m aimmat.apply.parsl_backend MANIFEST`` prints it.
"""

from __future__ import annotations

import json
import math
import os
import signal
import sys
import threading
import time
from concurrent.futures import Future
from pathlib import Path

from aimmat.apply.runner import TaskResult
from aimmat.errors import EnvironmentProblem
from aimmat.manifest.executor_spec import ParslExecutorSpec
from aimmat.state.lock import LOCK
from aimmat.state.procs import HOST, process_alive

RUN_DIR = ".parsl"
LABEL = "htex"
GUARD_PERIOD_S = 2.0
_POOL_MODULE = "parsl.executors.high_throughput.process_worker_pool"
_INTERCHANGE_MODULE = "parsl.executors.high_throughput.interchange"
# The interchange dies with the apply (Linux PR_SET_PDEATHSIG), even a
# SIGKILLed one; the worker pools then stop after heartbeat_threshold_s.
_INTERCHANGE_CODE = (
    "import ctypes, os, runpy, signal, sys\n"
    "try:\n"
    "    ctypes.CDLL('libc.so.6', use_errno=True).prctl(1, signal.SIGKILL)\n"
    "except OSError:\n"
    "    pass\n"
    "if os.getppid() != int(sys.argv[1]):\n"
    "    sys.exit(1)\n"
    f"runpy.run_module('{_INTERCHANGE_MODULE}', run_name='__main__', alter_sys=True)\n"
)


def run_dir(campaign_dir: Path) -> Path:
    return Path(campaign_dir) / RUN_DIR


def workers_per_node(ex: ParslExecutorSpec) -> int:
    if ex.max_workers_per_node is not None:
        return ex.max_workers_per_node
    cores = ex.cores_per_node if ex.provider == "slurm" else (os.cpu_count() or 1)
    return max(1, math.floor(cores / ex.cores_per_worker))


def width(ex: ParslExecutorSpec) -> int:
    """Tasks kept in flight: every worker slot of every block."""
    return ex.max_blocks * (ex.nodes_per_block or 1) * workers_per_node(ex)


def worker_cores(ex: ParslExecutorSpec) -> int:
    return max(1, math.floor(ex.cores_per_worker))


# ---------------------------------------------------------------- Parsl objects
def _launcher(ex: ParslExecutorSpec):
    from parsl.launchers import MpiRunLauncher, SingleNodeLauncher, SrunLauncher

    kind = ex.launcher or ("single" if (ex.nodes_per_block or 1) == 1 else "srun")
    if kind == "single":
        return SingleNodeLauncher()
    cls = SrunLauncher if kind == "srun" else MpiRunLauncher
    return cls(overrides=ex.launcher_overrides or "")


def _slurm_kwargs(ex: ParslExecutorSpec) -> dict:
    return dict(
        partition=ex.partition, account=ex.account, qos=ex.qos, constraint=ex.constraint,
        nodes_per_block=ex.nodes_per_block or 1, cores_per_node=ex.cores_per_node, mem_per_node=ex.mem_per_node_gb,
        init_blocks=ex.init_blocks, min_blocks=ex.min_blocks, max_blocks=ex.max_blocks, walltime=ex.walltime,
        scheduler_options="\n".join(ex.scheduler_options or []), worker_init=ex.worker_init,
        exclusive=True if ex.exclusive is None else ex.exclusive, launcher=_launcher(ex),
    )


def _provider(ex: ParslExecutorSpec):
    if ex.provider == "slurm":
        from parsl.providers import SlurmProvider

        return SlurmProvider(**_slurm_kwargs(ex))
    from parsl.launchers import SingleNodeLauncher
    from parsl.providers import LocalProvider

    return LocalProvider(nodes_per_block=1, launcher=SingleNodeLauncher(), init_blocks=ex.init_blocks,
                         min_blocks=ex.min_blocks, max_blocks=ex.max_blocks, worker_init=ex.worker_init)


def _htex(ex: ParslExecutorSpec, provider):
    from parsl.executors import HighThroughputExecutor
    from parsl.executors.high_throughput.executor import DEFAULT_LAUNCH_CMD

    python = ex.worker_python or sys.executable
    # Start the pool and the interchange with an explicit Python: their
    # console scripts need not be on PATH (a venv used without activation).
    launch = f"{python} -m {_POOL_MODULE}" + DEFAULT_LAUNCH_CMD[len("process_worker_pool.py"):]
    address = ex.address or ("127.0.0.1" if ex.provider == "local" else None)
    return HighThroughputExecutor(
        label=LABEL, provider=provider, launch_cmd=launch,
        interchange_launch_cmd=[sys.executable, "-c", _INTERCHANGE_CODE, str(os.getpid())],
        address=address, cores_per_worker=ex.cores_per_worker, max_workers_per_node=workers_per_node(ex),
        heartbeat_period=ex.heartbeat_period_s, heartbeat_threshold=ex.heartbeat_threshold_s,
        prefetch_capacity=0,  # long tasks: no task waits behind a busy worker
    )


# ---------------------------------------------------------------- worker side
_WORKER_SETUP: dict = {}


def _remote(fn, task, cores: int, lock_path: str | None, lock_text: str | None):
    """Runs in a Parsl worker: size the engines to the worker, guard, run."""
    if _WORKER_SETUP.get("cores") != cores:
        from aimmat.apply import slots

        # CHGNet's torch threads; OMP_NUM_THREADS is left alone: pw.x
        # inherits it (1 unless worker_init exports another value).
        os.environ["AIMMAT_TORCH_THREADS"] = str(cores)
        slots.init(cores)  # pw.x ranks of this worker's tasks share its cores
        _WORKER_SETUP["cores"] = cores
    if lock_path is not None:
        start_guard(lock_path, lock_text)
    return fn(task)


def _holder(lock_text: str | None) -> tuple | None:
    """(pid, host, started) of a lock file's text; None when unreadable (mid-write)."""
    try:
        info = json.loads(lock_text or "")
    except json.JSONDecodeError:
        return None
    return (info.get("pid"), info.get("host"), info.get("started")) if isinstance(info, dict) else None


def _holder_gone(holder: tuple | None) -> bool:
    return holder is not None and holder[1] == HOST and not process_alive(HOST, holder[0], None)


def _children(pid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as fh:
                    fields = fh.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                out.append(int(entry))
    return out


def _stop_self() -> None:
    """SIGKILL this worker and its children's process groups (pw.x runs in its own session)."""
    for child in _children(os.getpid()):
        try:
            if os.getpgid(child) == child:
                os.killpg(child, signal.SIGKILL)
            else:
                os.kill(child, signal.SIGKILL)
        except OSError:
            pass
    os.kill(os.getpid(), signal.SIGKILL)


def _guard_loop(lock_path: str, lock_text: str | None, period_s: float) -> None:
    mine = _holder(lock_text)
    while True:
        time.sleep(period_s)
        try:
            with open(lock_path) as fh:
                now = _holder(fh.read())
        except FileNotFoundError:
            now = ("gone",)
        except OSError:  # a filesystem hiccup: look again next time
            continue
        if (now is not None and now != mine) or _holder_gone(mine):
            _stop_self()


def start_guard(lock_path: str, lock_text: str | None, period_s: float = GUARD_PERIOD_S) -> None:
    """Once per worker process and apply: stop when the submitting apply has lost the campaign."""
    key = (lock_path, lock_text)
    if _WORKER_SETUP.get("guard") == key:
        return
    _WORKER_SETUP["guard"] = key
    threading.Thread(target=_guard_loop, args=(lock_path, lock_text, period_s), daemon=True, name="aimmat-guard").start()


# ---------------------------------------------------------------- apply side
def _lost_result(task, exc: BaseException) -> TaskResult:
    where = getattr(exc, "hostname", None) or "?"
    msg = (f"Parsl worker on {where} died while running it ({type(exc).__name__}); "
           "its record stays `running` and the next `aimmat apply` resumes it")
    return TaskResult(task.set_name, task.cand_id, task.stage, "lost", "worker_lost", msg, attempts=0)


class ParslBackend:
    """A private DataFlowKernel (not parsl.load's global one) for one apply."""

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
        return Path(self.dfk.run_dir) if self.dfk is not None else None

    def submit(self, fn, task) -> Future:
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


# ---------------------------------------------------------------- job script preview
def _preview_provider(ex: ParslExecutorSpec):
    from string import Template

    from parsl.providers import SlurmProvider

    class PreviewSlurm(SlurmProvider):
        """Runs no command: captures the script that submit() would sbatch."""

        script = None

        def execute_wait(self, cmd, timeout=None):
            if cmd.startswith("sbatch "):
                return 0, "Submitted batch job 0", ""
            return 1, "", "preview: no Slurm commands run"

        def _write_submit_script(self, template, script_filename, job_name, configs):
            self.script = Template(template).substitute(jobname=job_name, **configs)

    return PreviewSlurm(**_slurm_kwargs(ex))


def slurm_script(spec, campaign_dir: Path | None = None) -> str:
    """The sbatch script Parsl would submit for one block of ``spec``'s executor.

    ``spec`` is a CampaignSpec (or a ParslExecutorSpec with ``campaign_dir``).
    The worker port and run number are only known once apply starts; they
    appear as ``<port>`` and ``NNN``.
    """
    ex = spec.manifest.executor if hasattr(spec, "manifest") else spec
    cdir = Path(spec.campaign_dir if hasattr(spec, "manifest") else campaign_dir)
    if not isinstance(ex, ParslExecutorSpec) or ex.provider != "slurm":
        raise ValueError("slurm_script needs an executor block with kind: parsl and provider: slurm")
    provider = _preview_provider(ex)
    htex = _htex(ex, provider)
    run = run_dir(cdir) / "NNN"
    htex.run_dir = str(run)
    htex.worker_port = "<port>"
    htex.cert_dir = str(run / LABEL / "certificates")
    htex.logconf_path = None
    htex.initialize_scaling()
    provider.script_dir = str(run / "submit_scripts")
    provider.submit(htex._get_launch_command("0"), 1, f"parsl.{LABEL}.block-0")
    return provider.script


def main(argv: list[str] | None = None) -> int:
    """``python -m aimmat.apply.parsl_backend MANIFEST``: the same as ``aimmat slurm-script MANIFEST``."""
    from aimmat.cli.main import run

    return run(["slurm-script", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
