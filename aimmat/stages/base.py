"""Stage functions share one shape (``StageFn``): (structure, config, engine
profile, attempt folder, previous attempt's outcome) -> StageOutcome. They
never touch records. The config is the stage's manifest block plus what
resolve and the runner add (``EARLIER_ATTEMPTS``). Which function runs a stage is data in the stage
table (``aimmat.manifest.stage_table``): ``"module:function"``."""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol


@dataclass
class StageOutcome:
    ok: bool
    outputs: dict[str, Any] = field(default_factory=dict)
    failure_code: str | None = None
    message: str | None = None
    output_present: bool = False
    retryable: bool = False
    next_intervention: str | None = None  # what the next attempt will change


EARLIER_ATTEMPTS = "earlier_attempts"  # cfg entry the runner adds: this key's earlier attempt folders, newest first


def reuse_sources(cfg: dict, attempt_dir: Path, run_dir: Path) -> list[str]:
    """Where the run in ``run_dir`` (a folder inside the attempt folder
    ``attempt_dir``) lies in this stage's earlier attempts under the same
    key: an interrupted converge ladder or elastic stage reads the runs that
    finished there (``RunProfile.reuse_from``) instead of computing them again."""
    rel = Path(run_dir).relative_to(attempt_dir)
    return [str(Path(d) / rel) for d in cfg.get(EARLIER_ATTEMPTS) or () if (Path(d) / rel).is_dir()]


class StageFn(Protocol):
    def __call__(self, structure, cfg: dict, profile: dict | None, directory: Path,
                 previous: StageOutcome | None) -> StageOutcome: ...


def load_stage_fn(ref: str) -> StageFn:
    """The function named ``"module:function"``."""
    module, _, name = ref.partition(":")
    return getattr(importlib.import_module(module), name)
