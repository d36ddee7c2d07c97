"""Engines turn (structure, parameters, task, directory) into results.

Engines know nothing of manifests or campaigns. This package imports no
concrete engine: ``get_engine`` loads one by name from ``base.ENGINES``.
"""

from aimmat.engines.base import ENGINES, EngineResult, Remedy, engine_version, get_engine
from aimmat.engines.run_profile import RunProfile, split_profile

__all__ = ["ENGINES", "EngineResult", "Remedy", "RunProfile", "engine_version", "get_engine", "split_profile"]
