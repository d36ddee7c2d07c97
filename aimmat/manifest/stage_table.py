"""The stage table: every stage declared once.

Plan, apply, scan, status, evidence and the manifest schema all read this
table; none of them names a stage. Adding a stage is one ``register`` call:
its manifest block, its place in the chain, its key, its run function and
the candidate status it marks when done all follow from the entry.

A *variant* is a copy of a stage that runs beside the chain on the same
input (ablation screens: ``ablations:`` in the manifest). Variants hang off
the import alone, gate nothing, and live in folders named
``<variant prefix><name>``; the prefix is written here and nowhere else.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

from pydantic import BaseModel

from aimmat.manifest.stage_configs import ConvergeStage, ElasticStage, RelaxStage, ScfStage, ScreenStage
from aimmat.stages import results

Kind = Literal["import", "screen", "engine"]


@dataclass(frozen=True)
class StageDef:
    """One stage of the per-candidate chain.

    ``structure_source``: the stage whose output structure this stage reads
    (``import``: the candidate's own). A source that is not enabled, or
    that produces no structure (a screen without a pre-relaxation profile),
    passes on its own source's (``Recipe.source`` is the one read). ``run``: ``"module:function"`` with
    the signature of ``aimmat.stages.base.StageFn``, imported when a task
    runs (so the table imports no stage code). ``profile_field``: the
    config field naming an engine profile (None: no engine). ``done_status``:
    the candidate status once this stage is done (None: status unchanged).
    ``requires``: stages that must be enabled with this one.
    """

    name: str
    kind: Kind
    recipe_version: int
    structure_source: str = "import"
    run: str | None = None
    config: type[BaseModel] | None = None
    result: type[BaseModel] = results.StageResult
    profile_field: str | None = None
    done_status: str | None = None
    coverage: bool = False
    requires: tuple[str, ...] = ()
    variant_of: str | None = None  # the stage a variant copies
    settings_from: str | None = None  # a stage whose chosen settings (outputs["chosen"]) this one runs with, when enabled

    @property
    def is_variant(self) -> bool:
        return self.variant_of is not None

    @property
    def gates(self) -> bool:
        """Whether a failure or a screen-out here blocks the rest of the chain."""
        return not self.is_variant


VARIANT_PREFIX = "ablation-"

_TABLE: list[StageDef] = [
    StageDef("import", "import", 1),
    StageDef("screen", "screen", 1, run="aimmat.stages.screen:run_screen", config=ScreenStage,
             result=results.ScreenResult, profile_field="prerelax_profile"),
    # converge runs before the relaxation, so that the relaxation itself (its
    # final-SCF pressure, hence the cell) is computed at converged settings; it
    # and relax start from the screen's ML pre-relaxed cell when the screen has
    # one (a generated cell arrives 10-200 kbar off equilibrium; the pre-relaxed
    # one is near it), else from the candidate as imported (Recipe.source)
    StageDef("converge", "engine", 1, structure_source="screen", run="aimmat.stages.converge:run_converge",
             config=ConvergeStage, result=results.ConvergeResult, profile_field="profile"),
    StageDef("relax", "engine", 1, structure_source="screen", run="aimmat.stages.relax:run_relax", config=RelaxStage,
             result=results.EngineStageResult, profile_field="profile", done_status="relaxdone", coverage=True,
             settings_from="converge"),
    StageDef("scf", "engine", 1, structure_source="relax", run="aimmat.stages.scf:run_scf", config=ScfStage,
             result=results.EngineStageResult, profile_field="profile", done_status="scfdone", coverage=True,
             requires=("relax",), settings_from="converge"),
    StageDef("elastic", "engine", 2, structure_source="relax", run="aimmat.stages.elastic:run_elastic",
             config=ElasticStage, result=results.ElasticResult, profile_field="profile", done_status="elasticready",
             coverage=True, requires=("relax",), settings_from="converge"),
]
_VERSION = [0]  # bumped by register: cached manifest models are rebuilt


def stages() -> list[StageDef]:
    """Every declared stage after the import, in chain order."""
    return _TABLE[1:]


def get(name: str) -> StageDef:
    """The definition of a stage or of a variant folder name (KeyError when neither)."""
    for d in _TABLE:
        if d.name == name:
            return d
    if name.startswith(VARIANT_PREFIX) and len(name) > len(VARIANT_PREFIX):
        return variant("screen", name[len(VARIANT_PREFIX):])
    raise KeyError(name)


def get_import() -> StageDef:
    return _TABLE[0]


def names() -> tuple[str, ...]:
    return tuple(d.name for d in _TABLE[1:])


def is_stage_dir(name: str) -> bool:
    """Whether a folder of a candidate holds a stage record (chain stage or variant)."""
    return name in names() or (name.startswith(VARIANT_PREFIX) and len(name) > len(VARIANT_PREFIX))


def variant(of: str, name: str) -> StageDef:
    """The variant ``name`` of stage ``of``: same run function and key recipe,
    input from the import, gating nothing, no candidate status."""
    base = get(of)
    return replace(base, name=VARIANT_PREFIX + name, structure_source="import", done_status=None, coverage=False,
                   requires=(), variant_of=of)


def order(name: str) -> int:
    """Sort position of a stage name in listings (variants after the chain)."""
    for i, d in enumerate(_TABLE):
        if d.name == name:
            return i
    return len(_TABLE)


def coverage_stages() -> tuple[str, ...]:
    return tuple(d.name for d in _TABLE if d.coverage)


def version() -> int:
    return _VERSION[0]


def register(defn: StageDef, *, after: str | None = None) -> None:
    """Add a stage to the chain (after ``after``, default last). For plugins
    and tests; the manifest's ``stages:`` block accepts it from then on."""
    if any(d.name == defn.name for d in _TABLE) or defn.name.startswith(VARIANT_PREFIX):
        raise ValueError(f"stage {defn.name!r} exists or uses the variant prefix")
    at = len(_TABLE) if after is None else order(after) + 1
    _TABLE.insert(at, defn)
    _VERSION[0] += 1


def unregister(name: str) -> None:
    _TABLE[:] = [d for d in _TABLE if d.name != name]
    _VERSION[0] += 1
