"""What each stage asks of an engine, and what it records."""

from aimmat.stages.base import StageOutcome, run_stage_fn

__all__ = ["StageOutcome", "run_stage_fn"]
