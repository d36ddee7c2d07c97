"""Stage functions share one shape (``StageFn``): (structure, config, engine
profile, attempt folder, previous attempt's outcome) -> StageOutcome. They
never touch records. Which function runs a stage is data in the stage
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


class StageFn(Protocol):
    def __call__(self, structure, cfg: dict, profile: dict | None, directory: Path,
                 previous: StageOutcome | None) -> StageOutcome: ...


def load_stage_fn(ref: str) -> StageFn:
    """The function named ``"module:function"``."""
    module, _, name = ref.partition(":")
    return getattr(importlib.import_module(module), name)
