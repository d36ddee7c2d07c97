"""What each stage asks of an engine, and what it records."""

from aimmat.stages.base import StageOutcome, load_stage_fn

__all__ = ["StageOutcome", "load_stage_fn"]
