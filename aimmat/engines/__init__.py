"""Engines turn (structure, parameters, task, directory) into results.

Engines know nothing of manifests or campaigns.
"""

from aimmat.engines.base import EngineResult, get_engine

__all__ = ["EngineResult", "get_engine"]
