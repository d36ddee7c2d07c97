"""Engine results and the engine registry.

Units at this boundary: energy eV, forces eV/A, stress GPa with tensile
positive (sigma = C : epsilon), lengths A.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

Task = Literal["relax", "static", "relax_ions"]


@dataclass
class EngineResult:
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


class Engine(Protocol):
    name: str

    def run(self, structure, params: dict, task: Task, directory: Path) -> EngineResult: ...


_CACHE: dict[tuple, Engine] = {}


def get_engine(profile: dict) -> Engine:
    """One engine per process and profile kind/model: CHGNet loads its weights once."""
    kind = profile["kind"]
    ident = (kind, profile.get("model"))
    if ident not in _CACHE:
        if kind == "emt":
            from aimmat.engines.emt import EmtEngine

            _CACHE[ident] = EmtEngine()
        elif kind == "qe":
            from aimmat.engines.qe.engine import QeEngine

            _CACHE[ident] = QeEngine()
        elif kind == "chgnet":
            from aimmat.engines.chgnet import ChgnetEngine

            _CACHE[ident] = ChgnetEngine(profile.get("model", "0.3.0"))
        else:
            raise ValueError(f"unknown engine kind {kind!r}")
    return _CACHE[ident]
