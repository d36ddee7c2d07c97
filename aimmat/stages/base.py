"""Stage functions share one shape: (structure, config, attempt folder,
previous attempt's outcome) -> StageOutcome. They never touch records."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class StageOutcome:
    ok: bool
    outputs: dict[str, Any] = field(default_factory=dict)
    failure_code: str | None = None
    message: str | None = None
    output_present: bool = False
    retryable: bool = False
    next_intervention: str | None = None  # what the next attempt will change


def run_stage_fn(stage: str, structure, stage_cfg: dict, profile: dict | None, directory: Path, previous: StageOutcome | None) -> StageOutcome:
    if stage == "screen" or stage.startswith("ablation-"):
        from aimmat.stages.screen import run_screen

        return run_screen(structure, stage_cfg, profile, directory)
    if stage == "relax":
        from aimmat.stages.relax import run_relax

        return run_relax(structure, profile, directory, previous)
    if stage == "scf":
        from aimmat.stages.relax import run_scf

        return run_scf(structure, profile, directory, previous)
    if stage == "elastic":
        from aimmat.stages.elastic import run_elastic

        return run_elastic(structure, stage_cfg, profile, directory, previous)
    raise ValueError(f"unknown stage {stage!r}")
