"""Engine results, remedies, the engine protocol and the registry by name.

Units at this boundary: energy eV, forces eV/A, stress GPa with tensile
positive (sigma = C : epsilon), lengths A.

This module imports no concrete engine: ``ENGINES`` names each one as
``"module:Class"`` and ``engine_class`` imports it on first use, so asking
for EMT never loads torch (CHGNet) and a new engine is one line of data.
"""

from __future__ import annotations

import importlib
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal, Protocol

Task = Literal["relax", "static", "relax_ions"]

ENGINES: dict[str, str] = {
    "emt": "aimmat.engines.emt:EmtEngine",
    "chgnet": "aimmat.engines.chgnet:ChgnetEngine",
    "qe": "aimmat.engines.qe.engine:QeEngine",
}


@dataclass
class EngineResult:
    """What one engine run produced, in boundary units."""

    energy_ev: float | None = None
    forces_ev_per_a: list[list[float]] | None = None
    stress_gpa: list[list[float]] | None = None  # 3x3, tensile positive
    structure: dict[str, Any] | None = None  # pymatgen Structure.as_dict()
    converged: bool = False
    n_steps: int = 0
    wall_s: float = 0.0
    failure_code: str | None = None
    message: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    has_output: bool | None = None  # set by engines whose partial outputs count (DFT)

    @property
    def output_present(self) -> bool:
        if self.has_output is not None:
            return self.has_output
        return self.structure is not None and self.energy_ev is not None

    def to_json(self) -> dict:
        return asdict(self)


@dataclass
class Remedy:
    """The next rung of an engine's retry ladder.

    Attributes
    ----------
    overrides : dict
        Parameter overrides for the next attempt (all rungs so far).
    tag : str
        Human-readable description of the change, recorded per attempt.
    restart : bool
        Continue from the last structure of the failed run.
    """

    overrides: dict
    tag: str
    restart: bool = False


class Engine(Protocol):
    name: str

    def run(self, structure, params: dict, task: Task, directory: Path, kpts=None) -> EngineResult: ...

    def remedy(self, code: str, overrides: dict, params: dict) -> Remedy | None: ...


def engine_class(kind: str) -> type:
    """Import the class registered for ``kind`` in ``ENGINES``.

    Raises
    ------
    ValueError
        When ``kind`` is not registered.
    """
    try:
        target = ENGINES[kind]
    except KeyError:
        raise ValueError(f"unknown engine kind {kind!r} (known: {', '.join(sorted(ENGINES))})") from None
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


_CACHE: dict[tuple, Engine] = {}


def get_engine(profile: dict) -> Engine:
    """One engine per process and profile kind/model: CHGNet loads its weights once.

    An engine class with a ``from_profile`` classmethod builds itself from the
    profile (CHGNet picks its weights version); others take no arguments.
    """
    kind = profile["kind"]
    ident = (kind, profile.get("model"))
    if ident not in _CACHE:
        cls = engine_class(kind)
        _CACHE[ident] = cls.from_profile(profile) if hasattr(cls, "from_profile") else cls()
    return _CACHE[ident]


@lru_cache(maxsize=None)
def engine_version(kind: str) -> str:
    """Version string of the engine behind ``kind`` (part of every stage key).

    Each engine class answers through its ``version()`` static/classmethod:
    pw.x asks the binary, the ASE engines report their package's version.
    """
    return engine_class(kind).version()
