"""Typed views of what each stage records (``StageRecord.outputs``).

Records keep the stage's whole output as JSON; readers (status, evidence,
plan summaries) read it through these models instead of by string key, so
a renamed field fails in one place. Extra fields are allowed: a record
holds more than any one reader needs (cells, engine facts, overrides).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class StageResult(BaseModel):
    """Any stage's outputs (the fields every reader may ask for)."""

    model_config = ConfigDict(extra="allow")


class Criterion(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)

    value: Any = None
    threshold: Any = None
    unit: str | None = None
    # ``pass`` is a Python keyword: the JSON name is kept, the attribute is ``passed``
    passed: bool = Field(False, alias="pass")


class ScreenResult(StageResult):
    criteria: dict[str, Criterion] = {}
    strict_pass: bool = False
    formula: str | None = None
    prerelax: dict[str, Any] | None = None

    @property
    def structure(self) -> dict[str, Any] | None:
        """The pre-relaxed structure (None without a pre-relaxation): the
        stages whose ``structure_source`` is the screen start from it."""
        return (self.prerelax or {}).get("structure")

    def failed(self) -> list[str]:
        return [name for name, c in self.criteria.items() if not c.passed]


class EngineFacts(BaseModel):
    model_config = ConfigDict(extra="allow")

    metallic: bool | None = None
    kpoints: list[int] | None = None


class EngineStageResult(StageResult):
    """Relax and SCF: energies in eV, stress in GPa (tensile positive)."""

    energy_ev: float | None = None
    energy_per_atom_ev: float | None = None
    max_force_ev_per_a: float | None = None
    stress_gpa: list[list[float]] | None = None
    pressure_gpa: float | None = None
    structure: dict[str, Any] | None = None
    structure_sha256: str | None = None
    converged: bool | None = None
    engine: EngineFacts = EngineFacts()


class ElasticResult(StageResult):
    """The fitted tensor, its gates and VRH moduli (GPa)."""

    b_h_gpa: float | None = None
    g_h_gpa: float | None = None
    e_h_gpa: float | None = None
    poisson_h: float | None = None
    fit_rms_gpa: float | None = None
    min_eigenvalue_gpa: float | None = None
    pass_fit_rms: bool = False
    pass_pd: bool = False
    complete: bool = True

    @property
    def pass_both(self) -> bool:
        return self.pass_fit_rms and self.pass_pd


class ConvergeResult(StageResult):
    """The chosen settings and the whole convergence table."""

    chosen: dict[str, Any] | None = None  # ecutwfc_ry, ecutrho_ry, kspacing_per_a, degauss_ry (metals), metallic
    why: list[str] = []  # one line per ladder: the value chosen and the changes that justified it
    table: list[dict[str, Any]] = []
    converged: bool = False
    probe: dict[str, Any] | None = None  # the probe cell's vc-relax: ok, volume_change, structure (relax starts there)
