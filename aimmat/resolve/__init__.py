"""Resolve: the manifest plus what this machine says about it, once.

``resolve(spec, species)`` asks the environment everything a stage key or a
task needs (engine versions, pseudopotential files and their md5s, cutoffs)
and freezes the answers into per-stage recipes. It is the only step that
probes the environment: plan is a pure function of (resolved campaign,
observed records), and evidence and render read the facts the records
carry (``key_inputs``) instead of asking again.
"""

from aimmat.resolve.recipe import Recipe, Resolved
from aimmat.resolve.environment import resolve

__all__ = ["Recipe", "Resolved", "resolve"]
