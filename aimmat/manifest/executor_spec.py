"""The manifest's `executor` block: where stage tasks run.

`kind: local` (the default) runs them on this machine: in the apply process
(`--jobs 1`) or in a pool of forked workers. `kind: parsl` hands them to a
Parsl HighThroughputExecutor whose workers are local processes
(`provider: local`) or Slurm jobs (`provider: slurm`). Either way the
campaign folder is the only truth: workers write their records into it, so
with Slurm it must live on a filesystem the compute nodes share.

Executor settings change where and how fast, never what: they stay out of
every stage key.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal, Union

from pydantic import Field, ValidationInfo, field_validator, model_validator

from aimmat.manifest.models_base import DAY_S, FieldError, Line, PathStr, Strict, Text, bounded

_WALLTIME = re.compile(r"^([0-9]{1,4}):([0-5][0-9]):([0-5][0-9])$")
MAX_WALLTIME_H = 30 * DAY_S // 3600

# Keys that only mean something to a Slurm provider.
SLURM_ONLY = (
    "partition", "account", "qos", "constraint", "nodes_per_block", "cores_per_node", "mem_per_node_gb",
    "walltime", "launcher", "launcher_overrides", "exclusive", "scheduler_options",
)


class LocalExecutorSpec(Strict):
    """Stage tasks on this machine: in the apply process (`--jobs 1`) or a forked pool (`--jobs N`)."""

    kind: Literal["local"] = "local"


class ParslExecutorSpec(Strict):
    """Stage tasks on a Parsl HighThroughputExecutor.

    Each worker runs one stage task at a time and writes its records into the
    campaign folder itself. Parsl's app caching and checkpointing are off:
    aimmat's plan decides what runs. A worker that dies mid-task leaves a
    `running` record that the next `aimmat apply` resumes.
    """

    kind: Literal["parsl"]
    provider: Literal["local", "slurm"] = Field(
        "local", description="local: worker processes on this machine (laptop, tests); slurm: blocks submitted with sbatch.")

    # -- workers (both providers)
    cores_per_worker: float = bounded(
        1.0, gt=0, le=4096, description="Cores per worker; the worker's engine threads and pw.x core slots are this many (rounded down, at least 1).")
    max_workers_per_node: int | None = bounded(
        None, ge=1, le=4096, description="Workers per node; default: cores_per_node (or this machine's cores, for provider local) / cores_per_worker.")
    init_blocks: int = bounded(1, ge=0, le=10000, description="Blocks (Slurm jobs, or local worker pools) started with the apply.")
    min_blocks: int = bounded(0, ge=0, le=10000, description="Blocks kept even when idle.")
    max_blocks: int = bounded(1, ge=1, le=10000, description="Most blocks at once; aimmat keeps max_blocks x nodes_per_block x workers per node tasks in flight.")
    worker_init: Text = Field(
        "", description="Shell lines run before the worker pool starts, e.g. 'module load qe/7.2; source ~/venvs/aimmat/bin/activate'.")
    worker_python: PathStr | None = Field(
        None, description="Python with aimmat and parsl installed, as seen from the workers; default: the Python running apply.")
    address: Line | None = Field(
        None, description="Address of the apply machine that workers connect to; default: 127.0.0.1 (local), every interface (slurm).")
    heartbeat_period_s: int = bounded(
        30, ge=1, le=3600, description="Seconds between worker-pool heartbeats; a dead worker is noticed within this time.")
    heartbeat_threshold_s: int = bounded(
        120, ge=2, le=86400, description="Seconds without a heartbeat after which a worker pool (a node) counts as lost.")

    # -- Slurm only
    partition: Line | None = Field(None, max_length=1024, description="Slurm partition (#SBATCH --partition).")
    account: Line | None = Field(None, max_length=1024, description="Slurm account charged (#SBATCH --account).")
    qos: Line | None = Field(None, max_length=1024, description="Slurm QOS (#SBATCH --qos).")
    constraint: Line | None = Field(None, max_length=1024, description="Slurm node constraint (#SBATCH --constraint).")
    nodes_per_block: int | None = bounded(None, ge=1, le=100000, description="Nodes per block (one Slurm job); default 1.")
    cores_per_node: int | None = bounded(None, ge=1, le=100000, description="Cores of a node given to workers (#SBATCH --cpus-per-task).")
    mem_per_node_gb: int | None = bounded(None, ge=1, le=1_000_000, description="Memory per node (#SBATCH --mem, GB); default: the partition's.")
    walltime: str | None = Field(
        None, description="Walltime of a block, HH:MM:SS (hours may exceed 24), from 00:01:00 to 720:00:00 (30 days); "
                          "required for provider slurm.")
    launcher: Literal["srun", "mpirun", "single"] | None = Field(
        None, description="How a block starts one worker pool per node: srun, mpirun, or single (the job script itself; "
                          "one node). Default: single for one node per block, else srun.")
    launcher_overrides: Line | None = Field(None, description="Extra options for the srun/mpirun line that starts the worker pools.")
    exclusive: bool | None = Field(None, description="Whole nodes (#SBATCH --exclusive); default true.")
    scheduler_options: list[Line] | None = Field(None, max_length=1000, description="Extra lines for the job script, e.g. '#SBATCH --gres=gpu:1'.")

    @field_validator(*SLURM_ONLY)
    @classmethod
    def _slurm_only(cls, value: Any, info: ValidationInfo) -> Any:
        if value is not None and info.data.get("provider", "slurm") != "slurm":
            raise ValueError(f"`{info.field_name}` is a Slurm setting: set `provider: slurm`, or remove it")
        return value

    @field_validator("walltime")
    @classmethod
    def _walltime(cls, value: str | None) -> str | None:
        if value is None:
            return value
        m = _WALLTIME.match(value)
        if not m:
            raise ValueError("give the walltime as HH:MM:SS, e.g. '12:00:00'")
        seconds = int(m.group(1)) * 3600 + int(m.group(2)) * 60 + int(m.group(3))
        if seconds < 60:
            raise ValueError("walltime must be at least one minute (Slurm counts whole minutes)")
        if seconds > MAX_WALLTIME_H * 3600:
            raise ValueError(f"walltime must be at most {MAX_WALLTIME_H}:00:00 (30 days)")
        return value

    @field_validator("scheduler_options")
    @classmethod
    def _sbatch_lines(cls, value: list[str] | None) -> list[str] | None:
        for line in value or []:
            if not line.startswith("#SBATCH "):
                raise ValueError(f"each line must be one '#SBATCH ...' directive (got {line!r})")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> "ParslExecutorSpec":
        if self.min_blocks > self.max_blocks:
            raise FieldError(("min_blocks",), f"{self.min_blocks} exceeds max_blocks ({self.max_blocks})")
        if self.init_blocks > self.max_blocks:
            raise FieldError(("init_blocks",), f"{self.init_blocks} exceeds max_blocks ({self.max_blocks})")
        if self.heartbeat_threshold_s <= self.heartbeat_period_s:
            raise FieldError(("heartbeat_threshold_s",), f"must exceed heartbeat_period_s ({self.heartbeat_period_s})")
        if self.provider == "slurm":
            if self.walltime is None:
                raise FieldError(("walltime",), "required with provider: slurm (HH:MM:SS)")
            if self.cores_per_node is None and self.max_workers_per_node is None:
                raise FieldError(("cores_per_node",), "give cores_per_node or max_workers_per_node with provider: slurm "
                                 "(aimmat keeps that many tasks in flight per node)")
            if self.cores_per_node is not None and self.cores_per_node < self.cores_per_worker:
                raise FieldError(("cores_per_node",), f"cores_per_node ({self.cores_per_node}) is below "
                                 f"cores_per_worker ({self.cores_per_worker})")
        return self


ExecutorSpec = Annotated[Union[LocalExecutorSpec, ParslExecutorSpec], Field(discriminator="kind")]
EXECUTOR_KINDS = {"local", "parsl"}
