"""Parsl backend: stage tasks on a HighThroughputExecutor (``executor: {kind: parsl}``).

- ``config``: provider, launcher, executor and widths from the executor block;
- ``guard``: the thread that stops a worker whose apply is gone;
- ``backend``: ``ParslBackend`` (``submit(fn, task) -> Future``) and the
  wrapper a worker runs each task in;
- ``slurm``: ``slurm_script(spec)``, the job script preview, and
  ``python -m aimmat.apply.parsl.slurm MANIFEST``.

Parsl's run directory (logs, submit scripts, certificates) is
``<campaign>/.parsl/NNN``; the campaign scan skips hidden entries.
"""

from __future__ import annotations

__all__ = ["ParslBackend", "slurm_script"]


def __getattr__(name: str):
    # Lazy: `python -m aimmat.apply.parsl.slurm` imports this package first,
    # and an eager import of .slurm here would make runpy warn that the
    # module was already imported before running it as __main__.
    if name == "ParslBackend":
        from aimmat.apply.parsl.backend import ParslBackend

        return ParslBackend
    if name == "slurm_script":
        from aimmat.apply.parsl.slurm import slurm_script

        return slurm_script
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
