"""Parsl configuration: provider, launcher, HighThroughputExecutor, widths.

Everything here is derived from the manifest's ``executor`` block
(``ParslExecutorSpec``). Parsl itself is imported inside the functions so
that loading a manifest never needs it.
"""

from __future__ import annotations

import math
import os
import sys
from functools import lru_cache
from pathlib import Path

from aimmat.manifest.executor_spec import ParslExecutorSpec

RUN_DIR = ".parsl"
LABEL = "htex"
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
    """Parsl's run directory root, ``<campaign>/.parsl``.

    Hidden, so the campaign scan skips it; Parsl numbers the runs inside.
    """
    return Path(campaign_dir) / RUN_DIR


def workers_per_node(ex: ParslExecutorSpec) -> int:
    """Worker processes per node: declared, else the cores a worker fits into.

    Parameters
    ----------
    ex : ParslExecutorSpec
        The manifest's executor block.

    Returns
    -------
    int
        At least 1. A local provider counts this machine's cores.
    """
    if ex.max_workers_per_node is not None:
        return ex.max_workers_per_node
    cores = ex.cores_per_node if ex.provider == "slurm" else (os.cpu_count() or 1)
    return max(1, math.floor(cores / ex.cores_per_worker))


def width(ex: ParslExecutorSpec) -> int:
    """Tasks kept in flight: every worker slot of every block."""
    return ex.max_blocks * (ex.nodes_per_block or 1) * workers_per_node(ex)


def worker_cores(ex: ParslExecutorSpec) -> int:
    """Whole cores one worker sizes its engines to (at least 1)."""
    return max(1, math.floor(ex.cores_per_worker))


def _launcher(ex: ParslExecutorSpec):
    """The launcher that starts one worker pool per node of a block."""
    from parsl.launchers import MpiRunLauncher, SingleNodeLauncher, SrunLauncher

    # One node needs no srun/mpirun: the job script runs the pool itself.
    kind = ex.launcher or ("single" if (ex.nodes_per_block or 1) == 1 else "srun")
    if kind == "single":
        return SingleNodeLauncher()
    cls = SrunLauncher if kind == "srun" else MpiRunLauncher
    return cls(overrides=ex.launcher_overrides or "")


def _slurm_kwargs(ex: ParslExecutorSpec) -> dict:
    """SlurmProvider keyword arguments (shared by the real provider and the preview)."""
    return dict(
        partition=ex.partition, account=ex.account, qos=ex.qos, constraint=ex.constraint,
        nodes_per_block=ex.nodes_per_block or 1, cores_per_node=ex.cores_per_node, mem_per_node=ex.mem_per_node_gb,
        init_blocks=ex.init_blocks, min_blocks=ex.min_blocks, max_blocks=ex.max_blocks, walltime=ex.walltime,
        scheduler_options="\n".join(ex.scheduler_options or []), worker_init=ex.worker_init,
        exclusive=True if ex.exclusive is None else ex.exclusive, launcher=_launcher(ex),
    )


# Parsl's SlurmProvider looks at its jobs (sacct, or squeue) every 60 s, and
# only then replaces a block that scancel, its walltime or a node failure
# ended: its tasks are ManagerLost after heartbeat_threshold_s, but the tasks
# still queued wait for that look. Look as often as a lost pool is noticed
# (heartbeat_threshold_s), at most every 60 s.
SLURM_POLL_MAX_S = 60


@lru_cache(maxsize=1)
def _slurm_provider_class():
    from parsl.providers import SlurmProvider

    class AimmatSlurmProvider(SlurmProvider):
        """SlurmProvider whose job-status poll follows the executor's heartbeat threshold."""

        poll_s = SLURM_POLL_MAX_S

        @property
        def status_polling_interval(self) -> int:
            return self.poll_s

    return AimmatSlurmProvider


def _provider(ex: ParslExecutorSpec):
    """A SlurmProvider, or a LocalProvider running one block on this machine."""
    if ex.provider == "slurm":
        provider = _slurm_provider_class()(**_slurm_kwargs(ex))
        provider.poll_s = max(1, min(SLURM_POLL_MAX_S, ex.heartbeat_threshold_s))
        return provider
    from parsl.launchers import SingleNodeLauncher
    from parsl.providers import LocalProvider

    return LocalProvider(nodes_per_block=1, launcher=SingleNodeLauncher(), init_blocks=ex.init_blocks,
                         min_blocks=ex.min_blocks, max_blocks=ex.max_blocks, worker_init=ex.worker_init)


def _htex(ex: ParslExecutorSpec, provider):
    """The HighThroughputExecutor of one apply, on ``provider``.

    Parameters
    ----------
    ex : ParslExecutorSpec
        The manifest's executor block.
    provider : parsl.providers.base.ExecutionProvider
        Where the blocks run (``_provider(ex)``, or the Slurm preview's).

    Returns
    -------
    parsl.executors.HighThroughputExecutor
        Labelled ``LABEL``; its interchange dies with this process.
    """
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
