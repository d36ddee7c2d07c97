"""Frozen results of resolving: one Recipe per stage, one Resolved campaign.

Nothing here touches the environment: every fact (engine version,
pseudopotential md5, cutoffs) was asked once by ``aimmat.resolve.resolve``
and is only read back. Keys of candidates whose element set was not
resolved raise ``Unresolved`` (a bug in the caller: resolve was given the
element sets of every candidate it plans).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any, Mapping

from aimmat.errors import AimmatError
from aimmat.identity import canonical
from aimmat.manifest.load import CampaignSpec
from aimmat.manifest.stage_table import StageDef
from aimmat.resolve.keys import HOLE, fill, fillable, stage_key, template

SEP = "\x1f"  # joins a candidate's sorted element symbols (as aimmat.state.summary does)


class Unresolved(AimmatError):
    exit_code = 4


@dataclass(frozen=True)
class SpeciesInputs:
    """What a qe profile resolved for one element set."""

    pseudo_files: Mapping[str, Path]  # element -> UPF path
    pseudo_md5: Mapping[str, str]  # file name -> md5, in element order
    cutoffs_ry: tuple[float, float | None] | None  # (ecutwfc, ecutrho) when the profile leaves them to the family


@dataclass(frozen=True)
class Recipe:
    """One stage of the chain, resolved: its key recipe and the task profile."""

    stage: StageDef
    config: Any  # the stage's manifest block (pydantic model)
    profile_name: str | None
    profile: Any  # the engine profile (pydantic model) or None
    engine: str | None  # engine version string
    static: Mapping[str, Any]  # canonical key inputs shared by every candidate
    qe: bool = False
    metal_mesh: bool = False  # scf/elastic take the k-spacing from the relaxation's metallic flag
    settings_from: str | None = None  # the stage whose chosen settings (cutoff, k-spacing, smearing) this one runs with
    source: str = "import"  # the stage whose output structure this one reads (CampaignSpec.structure_source)
    species: Mapping[str, SpeciesInputs] = field(default_factory=dict)
    templates: Mapping[tuple, Any] = field(default_factory=dict)  # (species or None, metallic or None) -> template
    run_extra: Mapping[str, Any] = field(default_factory=dict)  # given to the stage function beside its config (screen: palette)

    @property
    def name(self) -> str:
        return self.stage.name

    def run_config(self) -> dict:
        """The config dict the stage function receives: its manifest block plus what resolving added."""
        return {**self.config.model_dump(), **self.run_extra}

    def inputs(self, structure_sha256, species: str = "", metallic=None, settings=None, wave=None) -> dict[str, Any]:
        """Everything that determines this stage's result for one input
        structure (canonical). For qe profiles the md5 of each element's
        pseudopotential file, named by file: changing a UPF's bytes reruns
        exactly the candidates that contain that element. ``settings``: the
        chosen settings of ``settings_from`` (converge) this stage runs with."""
        inputs = {**self.static, "structure_sha256": structure_sha256}
        if self.qe:
            sp = self._species(species)
            inputs["pseudos"] = dict(sp.pseudo_md5)
            if sp.cutoffs_ry is not None and settings is None:
                inputs["cutoffs_ry"] = list(sp.cutoffs_ry)
            if self.metal_mesh:
                inputs["metallic"] = bool(metallic)
        if settings is not None:
            inputs["settings"] = canonical(dict(settings))
        if wave is not None:  # a frozen rerun wave (aimmat.state.waves): its name, policy hash and overrides
            inputs["wave"] = canonical(wave.settings())
        return inputs

    def key(self, structure_sha256, species: str = "", metallic=None, settings=None, wave=None) -> str:
        """``stage_key(self.inputs(...))``, from a template when the hash allows."""
        if settings is not None or wave is not None:  # per-candidate values: no template
            return stage_key(self.inputs(structure_sha256, species, metallic, settings, wave))
        if fillable(structure_sha256):
            t = self.templates.get(self._template_id(species, metallic))
            if t is not None:
                return fill(t, structure_sha256)
        return stage_key(self.inputs(structure_sha256, species, metallic))

    def simple_template(self):
        """The template when the key depends on the structure hash alone (not qe), else None."""
        return None if self.qe or self.settings_from else self.templates.get((None, None))

    def _template_id(self, species: str, metallic) -> tuple:
        if not self.qe:
            return (None, None)
        return (species, bool(metallic) if self.metal_mesh else None)

    def _species(self, species: str) -> SpeciesInputs:
        try:
            return self.species[species]
        except KeyError:
            raise Unresolved(f"stage {self.name}: element set {species.split(SEP)} was not resolved",
                             fix="report this: resolve() must be given every candidate's elements") from None

    def task_profile(self, species: str, metallic, retry_policy: dict, settings=None, wave=None) -> dict | None:
        """The profile dict an engine receives: the manifest profile plus what
        resolving found (pseudopotential paths, cutoffs, the metal k-spacing)
        and, last, the chosen ``settings`` of ``settings_from``."""
        if self.profile is None:
            return None
        prof = self.profile.model_dump()
        prof["retry_policy"] = retry_policy
        if self.qe:
            sp = self._species(species)
            prof["pseudo_files"] = {el: str(p) for el, p in sp.pseudo_files.items()}
            if sp.cutoffs_ry is not None:
                prof["ecutwfc_ry"], prof["ecutrho_ry"] = sp.cutoffs_ry
            if self.metal_mesh and metallic:  # the relaxation's bands cross E_F: denser mesh
                prof["kspacing_per_a"] = prof["kspacing_metal_per_a"]
        if settings:
            apply_settings(prof, settings)
        if wave is not None:  # the wave's overrides, last: they are what the wave changes
            prof.update(wave.overrides)
            if "kspacing_per_a" in wave.overrides:
                prof["kspacing_metal_per_a"] = wave.overrides["kspacing_per_a"]
                prof["kpoints"] = None
        return prof


SETTING_FIELDS = ("ecutwfc_ry", "ecutrho_ry", "kspacing_per_a", "degauss_ry", "occupations", "conv_thr_per_atom")


def apply_settings(prof: dict, settings) -> dict:
    """``prof`` with converged settings in place: the chosen k-spacing is
    used for metals and insulators alike and replaces an explicit mesh."""
    for k in SETTING_FIELDS:
        if settings.get(k) is not None:
            prof[k] = settings[k]
    if settings.get("kspacing_per_a") is not None:
        prof["kspacing_metal_per_a"] = settings["kspacing_per_a"]
        prof["kpoints"] = None
    return prof


def with_templates(recipe: Recipe, species_sets) -> Recipe:
    """``recipe`` with its key templates made for the given element sets."""
    out: dict[tuple, Any] = {}
    if not recipe.qe:
        out[(None, None)] = template(recipe.inputs(HOLE))
    else:
        for sp in species_sets:
            for metallic in ((False, True) if recipe.metal_mesh else (None,)):
                out[(sp, metallic)] = template(recipe.inputs(HOLE, sp, metallic))
    return replace(recipe, templates=MappingProxyType(out))


@dataclass(frozen=True)
class Resolved:
    """A campaign resolved on this machine: the spec, a recipe per stage, the
    import key of every candidate and the environment facts found."""

    spec: CampaignSpec
    recipes: Mapping[str, Recipe]  # stage name -> recipe, chain order then variants
    import_keys: Mapping[tuple[str, str], str]
    import_inputs: Any  # (source) -> canonical import inputs (to show what changed, to write the record)
    environment: Mapping[str, Any]  # engines and pseudopotential md5s found (recorded in campaign.json)
    shortlist_stage: str | None  # the first engine stage: ranked sets' shortlist gates it
    ranked: Mapping[str, Any]  # set name -> RankSpec with a top_k
    palette: Any = None  # aimmat.resolve.palette.Palette: elements candidates may contain
    waves: Mapping[tuple[str, str, str], Any] = field(default_factory=dict)  # (set, cand, stage) -> waves.Assignment

    def wave_for(self, set_name: str, cand_id: str, stage: str):
        """The frozen wave that reruns this candidate's ``stage``, or None."""
        return self.waves.get((set_name, cand_id, stage)) if self.waves else None

    def outside_palette(self, species: str) -> list[str]:
        """Elements of a SEP-joined element set that the palette excludes (sorted)."""
        if self.palette is None or not species:
            return []
        return self.palette.outside(species.split(SEP))

    @property
    def chain(self) -> list[str]:
        return ["import", *self.recipes]

    @property
    def campaign_dir(self) -> Path:
        return self.spec.campaign_dir

    @property
    def retry_policy(self) -> dict:
        return self.spec.manifest.retry.model_dump(exclude={"max_attempts"})

    @property
    def max_attempts(self) -> int:
        return self.spec.manifest.retry.max_attempts
