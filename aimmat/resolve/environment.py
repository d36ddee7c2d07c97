"""``resolve``: the one place that asks the environment.

Engine versions (``pw.x`` is run once for its banner), pseudopotential files
per element and their md5s, and cutoffs from the family's recommendations
are looked up here, once per command, and frozen into recipes.
"""

from __future__ import annotations

from aimmat.state.waves import assignments

from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path
from types import MappingProxyType
from typing import Any

from aimmat.engines.base import engine_version
from aimmat.errors import ManifestError
from aimmat.identity import canonical
from aimmat.manifest.load import CampaignSpec
from aimmat.manifest import stage_table
from aimmat.manifest.stage_table import StageDef
from aimmat.resolve.imports import import_inputs, import_keys, predictor_sha256
from aimmat.resolve.palette import Palette, campaign_palette, profile_folder
from aimmat.resolve.recipe import SEP, Recipe, Resolved, SpeciesInputs, with_templates


def resolve(spec: CampaignSpec, species: Iterable[str] = (), *, import_keys_: dict | None = None,
            palette: Palette | None = None) -> Resolved:
    """Resolve ``spec`` for candidates whose element sets are ``species``
    (SEP-joined sorted symbols, as ``CandidateSummary.species``).

    Raises ManifestError (exit 3) for an element without a pseudopotential
    or a family without a recommended cutoff, EnvironmentProblem (exit 5)
    when an engine program is missing. ``import_keys_``: the candidates'
    import keys when the caller already made them (``resolve.imports``).
    ``palette``: the campaign's element palette when the caller already
    has it; element sets outside it are not resolved (their candidates are
    screened out, ``no_pseudopotential``).
    """
    palette = palette if palette is not None else campaign_palette(spec)
    species_sets = sorted(sp for sp in set(species) if not palette.outside(sp.split(SEP) if sp else []))
    probe = _Probe(spec)
    recipes = {}
    for d in spec.chain():
        recipe = _recipe(spec, d, probe)
        if recipe.qe:
            recipe = _with_species(recipe, {sp: probe.species_inputs(recipe.profile_name, sp) for sp in species_sets})
        if d.kind == "screen" and palette.elements is not None:  # the screen rejects elements outside it
            recipe = _with_palette(recipe, palette.key_value())
        recipes[d.name] = with_templates(recipe, species_sets)
    predictors = predictor_sha256(spec)
    pal = palette.key_value()
    ikeys = import_keys_ if import_keys_ is not None else import_keys(spec, predictors, pal)
    ranked = {c.name: c.rank for c in spec.manifest.candidate_sets if c.rank is not None and c.rank.top_k is not None}
    return Resolved(
        spec=spec,
        recipes=MappingProxyType(recipes),
        import_keys=MappingProxyType(ikeys),
        import_inputs=lambda src: import_inputs(src, predictors.get(src.set_name), pal),
        environment=MappingProxyType({"engines": dict(sorted(probe.engines.items())),
                                      "pseudopotentials_md5": dict(sorted(probe.md5.items()))}),
        shortlist_stage=next((d.name for d in spec.chain() if d.kind == "engine"), None),
        ranked=MappingProxyType(ranked),
        palette=palette,
        waves=MappingProxyType(assignments(spec)) if spec.manifest.waves else MappingProxyType({}),
    )


def _recipe(spec: CampaignSpec, d: StageDef, probe: "_Probe") -> Recipe:
    cfg = spec.stage_config(d.name)
    pname = spec.profile_name(d.name)
    profile = spec.manifest.profiles[pname] if pname else None
    static: dict[str, Any] = {"recipe": d.recipe_version}
    engine = None
    if d.kind == "screen":
        static["criteria"] = cfg.key_criteria()
        if profile is not None:  # ML pre-relaxation before the checks
            static["prerelax"] = {"engine": probe.engine(profile.kind), "profile": profile.key_params("relax")}
    else:
        engine = static["engine"] = probe.engine(profile.kind)
        static["profile"] = profile.key_params(d.name)
        own = cfg.model_dump(exclude={d.profile_field})
        if own:  # the stage's own settings (elastic: strains, gates)
            static[d.name] = own
    qe = d.kind == "engine" and profile.kind == "qe"
    # a stage run with another stage's chosen settings (converge) takes its mesh from them
    settings_from = d.settings_from if d.settings_from in spec.stages else None
    source = spec.structure_source(d.name)
    # scf/elastic read a relaxed structure whose bands say metal or not: the k-spacing follows
    metal = (qe and stage_table.get(source).kind == "engine" and profile.kpoints is None
             and profile.kspacing_metal_per_a is not None and settings_from is None)
    return Recipe(stage=d, config=cfg, profile_name=pname, profile=profile, engine=engine,
                  static=MappingProxyType(canonical(static)), qe=qe, metal_mesh=metal, settings_from=settings_from,
                  source=source)


def _with_palette(recipe: Recipe, palette: list[str]) -> Recipe:
    return replace(recipe, static=MappingProxyType(canonical({**recipe.static, "palette": palette})),
                   run_extra=MappingProxyType({"palette": palette}))


def _with_species(recipe: Recipe, species: dict[str, SpeciesInputs]) -> Recipe:
    return replace(recipe, species=MappingProxyType(species))


class _Probe:
    """Environment look-ups of one resolve, each asked once."""

    def __init__(self, spec: CampaignSpec):
        self.spec = spec
        self.engines: dict[str, str] = {}
        self.md5: dict[str, str] = {}
        self._pseudo: dict[tuple[str, str], Path] = {}

    def engine(self, kind: str) -> str:
        if kind not in self.engines:
            self.engines[kind] = engine_version(kind)
        return self.engines[kind]

    def folder(self, profile_name: str) -> Path:
        return profile_folder(self.spec, profile_name)

    def pseudo(self, profile_name: str, element: str) -> Path:
        from aimmat.engines.qe.pseudos import find_pseudo

        key = (profile_name, element)
        if key not in self._pseudo:
            pseudo = self.spec.manifest.profiles[profile_name].pseudo
            folder = self.folder(profile_name)
            try:
                self._pseudo[key] = find_pseudo(folder, element, pseudo.files, pseudo.functional)
            except (LookupError, OSError, ImportError) as exc:
                raise ManifestError(
                    f"{self.spec.path}: profiles.{profile_name}.pseudo: {exc}",
                    fix=f"add a UPF file for {element} to {folder}, name one under `pseudo.files`, or choose another family",
                ) from None
        return self._pseudo[key]

    def species_inputs(self, profile_name: str, species: str) -> SpeciesInputs:
        from aimmat.engines.qe.pseudos import md5_file

        elements = species.split(SEP) if species else []
        files = {el: self.pseudo(profile_name, el) for el in elements}
        md5 = {p.name: md5_file(p) for p in files.values()}
        self.md5.update(md5)
        profile = self.spec.manifest.profiles[profile_name]
        cutoffs = self.cutoffs(profile_name, files) if profile.ecutwfc_ry is None else None
        if cutoffs == (0.0, None):  # no recommendation; the converge stage finds the cutoff
            cutoffs = None
        return SpeciesInputs(MappingProxyType(files), MappingProxyType(md5), cutoffs)

    def cutoffs(self, profile_name: str, files: dict[str, Path]) -> tuple[float, float | None]:
        """(ecutwfc, ecutrho) from per-element recommendations: the maximum
        over the structure's elements (SSSP's convention)."""
        from aimmat.engines.qe.pseudos import recommended_cutoffs

        profile = self.spec.manifest.profiles[profile_name]
        folder = self.folder(profile_name)
        wfc, rho = 0.0, None
        for el, path in files.items():
            rec = recommended_cutoffs(folder, el, path)
            if rec is None and "converge" in self.spec.stages:
                return 0.0, None  # the converge stage's cutoff ladder starts from its ecutwfc_start_ry
            if rec is None:
                raise ManifestError(
                    f"{self.spec.path}: profiles.{profile_name}.ecutwfc_ry: no recommended cutoff for {el} ({path.name}) in {folder}",
                    fix="set ecutwfc_ry (and ecutrho_ry) in the profile, enable `stages.converge` (it finds the cutoff), "
                        "or use a family that ships cutoffs (SSSP)",
                )
            wfc = max(wfc, rec[0])
            if rec[1]:
                rho = max(rho or 0.0, rec[1])
        if profile.ecutrho_ry is not None:
            rho = profile.ecutrho_ry
        return wfc, rho
