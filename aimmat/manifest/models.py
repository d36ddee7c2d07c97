"""Manifest models (desired state). Every model forbids unknown keys.

Units are part of field names (``fmax_ev_per_a``, ``min_distance_a``) and are
converted once, at the engine boundary.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal, Union

from pydantic import Field, create_model, model_validator

from aimmat.manifest import stage_table
from aimmat.manifest.executor_spec import ExecutorSpec, LocalExecutorSpec
from aimmat.manifest.models_base import FieldError, PathStr, SafeId, Strict, bounded
from aimmat.manifest.qe_profile import QeProfile
from aimmat.manifest.stage_configs import ScreenStage
from aimmat.manifest.steering_specs import EvidenceSpec, LearningSpec, Milestone, PublishSpec, WaveSpec


class CampaignSection(Strict):
    name: SafeId = Field(description="Campaign id; the folder under `root`.")
    root: PathStr = Field("campaigns", description="Folder holding campaigns, relative to the manifest.")
    palette: list[Annotated[str, Field(pattern=r"^[A-Z][a-z]{0,2}$")]] | None = Field(
        None, min_length=1, max_length=118,
        description="Elements candidates may contain. The generator samples only within it; a file candidate with another "
                    "element is screened out (no_pseudopotential). Default: every element the campaign's QE profiles "
                    "have a pseudopotential for (no restriction without QE stages).")

    @model_validator(mode="after")
    def _elements(self) -> "CampaignSection":
        from pymatgen.core.periodic_table import Element

        for i, el in enumerate(self.palette or []):
            if not Element.is_valid_symbol(el):
                raise FieldError(("palette", i), f"'{el}' is not an element symbol")
        if self.palette and len(set(self.palette)) != len(self.palette):
            raise FieldError(("palette",), "an element is listed twice")
        return self


# ---------------------------------------------------------------- profiles
class _AseProfile(Strict):
    """Shared settings of engines driven through an ASE calculator."""

    fmax_ev_per_a: float = bounded(0.05, gt=0, le=10, description="Force threshold of relaxations (eV/A).")
    max_steps: int = bounded(300, gt=0, le=100000, description="Optimizer step cap per attempt.")
    optimizer: Literal["FIRE", "BFGS", "LBFGS"] = Field("FIRE", description="ASE optimizer.")

    # Parameters that change the result of a single point; relaxations also
    # read the optimizer settings. Stage keys hold only what the stage reads,
    # so that tightening fmax does not throw away a finished SCF.
    STATIC_FIELDS: ClassVar[tuple[str, ...]] = ("kind",)

    def key_params(self, stage: str) -> dict[str, Any]:
        data = self.model_dump()
        if stage == "scf":
            return {k: data[k] for k in self.STATIC_FIELDS}
        return data


class EmtProfile(_AseProfile):
    """ASE's EMT potential: for fast tests of the machinery only."""

    kind: Literal["emt"]


class ChgnetProfile(_AseProfile):
    """CHGNet universal potential; weights ship in the `chgnet` package."""

    kind: Literal["chgnet"]
    model: Literal["0.3.0", "0.2.0"] = Field("0.3.0", description="CHGNet weights version.")
    STATIC_FIELDS: ClassVar[tuple[str, ...]] = ("kind", "model")


Profile = Annotated[Union[EmtProfile, ChgnetProfile, QeProfile], Field(discriminator="kind")]


# ---------------------------------------------------------------- sources
class FilesSource(Strict):
    """Structures read from files: CIF, POSCAR, extxyz (one or many frames), pymatgen JSON."""

    kind: Literal["files"]
    glob: list[PathStr] = Field(description="Glob patterns relative to the manifest; 1 to 1000.", min_length=1, max_length=1000)
    format: Literal["auto", "cif", "poscar", "extxyz", "json"] = "auto"

    @model_validator(mode="before")
    @classmethod
    def _one_glob(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("glob"), str):
            data = {**data, "glob": [data["glob"]]}
        return data


class SamplerSchedule(Strict):
    """Annealed Langevin schedule of the coordinate score network."""

    levels: int = bounded(10, ge=1, le=200, description="Noise levels, geometric from the model's sigma_max to sigma_min.")
    steps: int = bounded(5, ge=1, le=1000, description="Langevin steps per level (CDVAE: 50 levels x 100 steps).")
    step_lr: float = bounded(1e-4, gt=0, le=1, description="Step size at sigma_min; scales with sigma^2.")
    min_separation: float = bounded(0.5, ge=0, le=1.5, description="After sampling, push apart pairs closer than this x (sum of covalent radii); 0: off.")


class GeneratorSource(Strict):
    """Crystals sampled from a model checkpoint, conditioned on the set's element count.

    Candidate i depends only on (checkpoint, seed, i): raising `count` keeps
    the candidates generated before.
    """

    kind: Literal["generator"]
    model: SafeId = Field(description="A key of `models:`.")
    count: int = bounded(ge=1, le=100000, description="Number of candidates to generate.")
    seed: int = bounded(0, ge=0, le=2**63 - 1, description="Sampling seed; recorded in each candidate's provenance.")
    schedule: SamplerSchedule | None = Field(None, description="Default: the schedule recorded in the checkpoint.")


Source = Annotated[Union[FilesSource, GeneratorSource], Field(discriminator="kind")]


class ModelSpec(Strict):
    """A trained checkpoint (`aimmat model train`), pinned by its sha256."""

    path: PathStr = Field(description="Checkpoint file, relative to the manifest.")
    sha256: str = Field(pattern=r"^[0-9a-fA-F]{64}$", description="sha256 of the file; a mismatch stops diff and apply.")


RANK_TERMS = ("log10_k_vrh", "log10_g_vrh", "log10_pd_margin", "uncertainty", "hhi_production")


class RankSpec(Strict):
    """Composite ranking score from the model's predicted elastic tensor.

    score = sum of weight x term over: log10_k_vrh, log10_g_vrh (predicted
    VRH moduli, GPa), log10_pd_margin (smallest eigenvalue of the predicted
    tensor, GPa), uncertainty (dex: the checkpoint's error head's predicted |error| of log10 K_VRH where
    it has one, else the ensemble spread of log10 K_VRH), hhi_production (the composition's production
    Herfindahl-Hirschman index / 10,000 from pymatgen's HHI data: a negative weight prefers elements whose
    supply is spread over many producers).
    Only candidates that pass the screen are eligible.
    """

    model: SafeId | None = Field(None, description="A key of `models:`; default: the set's generator model.")
    weights: dict[str, Annotated[float, Field(ge=-1000, le=1000)]] = Field(
        default_factory=lambda: {"log10_k_vrh": 1.0, "log10_g_vrh": 1.0, "uncertainty": -1.0},
        description="Weight per term (" + ", ".join(RANK_TERMS) + "), each in [-1000, 1000].")
    top_k: int | None = bounded(None, ge=1, le=100000, description="Shortlist: only the best top_k of the set go to relax and after.")

    @model_validator(mode="after")
    def _terms(self) -> "RankSpec":
        bad = sorted(set(self.weights) - set(RANK_TERMS))
        if bad:
            raise FieldError(("weights",), f"unknown ranking term(s) {', '.join(bad)}; known: {', '.join(RANK_TERMS)}")
        if not self.weights:
            raise FieldError(("weights",), "give at least one term")
        return self


class CandidateSetSpec(Strict):
    name: SafeId = Field(description="Set id, e.g. '2-element'; a folder of the campaign.")
    elements: int = bounded(ge=1, le=10, description="Number of distinct elements per candidate.")
    source: Source
    check_elements: bool = Field(True, description="Refuse structures whose element count differs.")
    rank: RankSpec | None = Field(None, description="Rank by predicted elastic tensor; optional shortlist.")

    def rank_model(self) -> str | None:
        if self.rank is None:
            return None
        if self.rank.model is not None:
            return self.rank.model
        return self.source.model if isinstance(self.source, GeneratorSource) else None


class StagesBase(Strict):
    """The ``stages:`` block: one optional field per stage of the stage table
    (``stages_model`` adds them), in chain order."""

    def enabled(self) -> list[str]:
        return [d.name for d in stage_table.stages() if getattr(self, d.name, None) is not None]

    def get(self, name: str):
        return getattr(self, name, None)


class AblationVariant(Strict):
    """A pipeline variant screened over the same candidates; it gates nothing.

    The snapshot reports each variant's strict-pass rate and the deltas
    between variants (e.g. raw structures vs CHGNet pre-relaxed ones).
    """

    name: SafeId
    screen: ScreenStage = Field(default_factory=ScreenStage)


class RetryPolicy(Strict):
    """The retry ladder as policy. Retries are attempts, not new inputs: they never change a stage key."""

    max_attempts: int = bounded(3, ge=1, le=20, description="Attempts per stage, first try included.")
    mixing_beta_factor: float = bounded(0.8, gt=0, lt=1, description="Electronic non-convergence: mixing_beta x this.")
    mixing_beta_min: float = bounded(0.1, gt=0, le=1, description="No electronic retry below this mixing_beta.")
    diagonalization: list[Literal["david", "ppcg", "paro", "cg"]] = Field(
        default_factory=lambda: ["david", "ppcg", "cg"], min_length=1, description="Diagonalization failures climb this list."
    )
    trust_radius_ini_bohr: float = bounded(0.1, gt=0, le=1, description="BFGS history failure: first restart with this trust radius.")
    damped_dynamics: bool = Field(True, description="BFGS history failure twice: switch to damped dynamics.")
    restart_from_last_structure: bool = Field(True, description="Ionic, walltime and truncated runs continue from the last structure.")


class RenderTarget(Strict):
    template: PathStr = Field(description="Jinja template, relative to the manifest; it declares its one scope in its first line.")
    output: PathStr | None = Field(
        None, description="Relative path under <campaign>/manuscript/, without '..', '\\' or a leading '/' "
                          "(default: the template name without .j2).")
    scope: Literal["public", "screening", "validated"] | None = Field(None, description="If given, must equal the template's declared scope.")


# campaign folders that are not candidate sets (aimmat.state.layout.RESERVED holds them and the files)
RESERVED_FOLDERS = ("evidence", "manuscript", "learning", "handoff", "waves", "publish", "shortlists")
class ManifestBase(Strict):
    version: Literal[1] = 1
    campaign: CampaignSection
    profiles: dict[SafeId, Profile] = Field(default_factory=dict, max_length=1000)
    models: dict[SafeId, ModelSpec] = Field(default_factory=dict, max_length=1000)
    candidate_sets: list[CandidateSetSpec] = Field(min_length=1, max_length=1000)
    retry: RetryPolicy = Field(default_factory=RetryPolicy)
    evidence: EvidenceSpec = Field(default_factory=EvidenceSpec)
    render: list[RenderTarget] = Field(default_factory=list, max_length=1000)
    ablations: list[AblationVariant] = Field(default_factory=list, max_length=100)
    learning: LearningSpec | None = Field(None, description="One active-learning cycle (`aimmat model update`).")
    publish: PublishSpec | None = Field(None, description="Publishing to MPContribs (`aimmat publish MANIFEST [--dry-run]`).")
    waves: list[WaveSpec] = Field(
        default_factory=list, max_length=100,
        description="Pre-registered rerun waves: frozen by `aimmat waves freeze MANIFEST W` before apply runs them.")
    milestones: dict[SafeId, Milestone] = Field(
        default_factory=dict, max_length=100,
        description="Named claims checked against the evidence snapshot, e.g. `R1: validated.pass_both >= 5` or "
                    "`R3: screening.triage present`; `aimmat status` and the report show each as met / not met.")
    executor: ExecutorSpec = Field(
        default_factory=LocalExecutorSpec, description="Where stage tasks run: `kind: local` (default) or `kind: parsl` (local workers or Slurm)."
    )

    @model_validator(mode="after")
    def _references(self) -> "ManifestBase":
        seen: set[str] = set()
        for i, s in enumerate(self.candidate_sets):
            if s.name in seen:
                raise FieldError(("candidate_sets", i, "name"), f"duplicate set id '{s.name}'")
            if s.name in RESERVED_FOLDERS:
                raise FieldError(("candidate_sets", i, "name"), f"'{s.name}' is a folder the campaign keeps for itself "
                                 f"({', '.join(RESERVED_FOLDERS)}); name the set otherwise")
            seen.add(s.name)
            if isinstance(s.source, GeneratorSource):
                if s.source.model not in self.models:
                    raise FieldError(("candidate_sets", i, "source", "model"), f"unknown model '{s.source.model}' "
                                     f"(models: {', '.join(sorted(self.models)) or 'none declared'})")
                if s.elements > 5:
                    raise FieldError(("candidate_sets", i, "elements"), "the generator is conditioned on 1 to 5 elements")
            if s.rank is not None:
                m = s.rank_model()
                if m is None:
                    raise FieldError(("candidate_sets", i, "rank", "model"), "required for a set that is not generated")
                if m not in self.models:
                    raise FieldError(("candidate_sets", i, "rank", "model"), f"unknown model '{m}'")
        for d in stage_table.stages():
            cfg = self.stages.get(d.name)
            if cfg is None:
                continue
            if d.kind == "engine" and getattr(cfg, d.profile_field) not in self.profiles:
                known = ", ".join(sorted(self.profiles)) or "none declared"
                raise FieldError(("stages", d.name, d.profile_field),
                                 f"unknown profile '{getattr(cfg, d.profile_field)}' (profiles: {known})")
            for need in d.requires:
                if self.stages.get(need) is None:
                    raise FieldError(("stages", d.name), f"needs stages.{need} (it runs on the {need} stage's output)")
        conv = self.stages.get("converge")
        if conv is not None:
            if self.profiles[conv.profile].kind != "qe":
                raise FieldError(("stages", "converge", "profile"), f"'{conv.profile}' must name a qe profile (cutoffs, k-points, smearing)")
            for d in stage_table.stages():
                cfg = self.stages.get(d.name)
                if d.settings_from == "converge" and cfg is not None and getattr(cfg, d.profile_field) != conv.profile:
                    raise FieldError(("stages", d.name, d.profile_field),
                                     f"'{getattr(cfg, d.profile_field)}' differs from stages.converge.profile '{conv.profile}': "
                                     "settings converged for one profile's pseudopotentials do not carry over to another's")
        if self.learning is not None:
            if self.learning.parent not in self.models:
                raise FieldError(("learning", "parent"), f"unknown model '{self.learning.parent}' "
                                 f"(models: {', '.join(sorted(self.models)) or 'none declared'})")
            for i, s in enumerate(self.learning.select.sets or []):
                if s not in seen:
                    raise FieldError(("learning", "select", "sets", i), f"unknown set '{s}'")
        names = [a.name for a in self.ablations]
        for i, n in enumerate(names):
            if n in names[:i]:
                raise FieldError(("ablations", i, "name"), f"duplicate variant name '{n}' (variant names must be unique)")
        screens = [(("stages", "screen"), self.stages.screen)] + [(("ablations", i, "screen"), a.screen) for i, a in enumerate(self.ablations)]
        for where, scr in screens:
            if scr is not None and scr.prerelax_profile is not None:
                prof = self.profiles.get(scr.prerelax_profile)
                if prof is None or prof.kind not in ("emt", "chgnet"):
                    raise FieldError(where + ("prerelax_profile",), f"'{scr.prerelax_profile}' must name an emt or chgnet profile")
        if self.executor.kind == "parsl":
            for name, prof in self.profiles.items():
                if prof.kind == "qe" and prof.mpi_ranks > self.executor.cores_per_worker:
                    raise FieldError(("profiles", name, "mpi_ranks"), f"{prof.mpi_ranks} ranks do not fit in a worker of "
                                     f"executor.cores_per_worker = {self.executor.cores_per_worker}")
        names = [w.name for w in self.waves]
        for i, w in enumerate(self.waves):
            if w.name in names[:i]:
                raise FieldError(("waves", i, "name"), f"duplicate wave name '{w.name}'")
            fields = set()
            for prof in self.profiles.values():
                fields |= set(type(prof).model_fields)
            bad = sorted(k for k in w.overrides if k not in fields or k in ("kind", "pseudo", "launcher", "pw_command"))
            if bad:
                raise FieldError(("waves", i, "overrides"), f"{', '.join(bad)}: not a field of any declared profile")
            unknown = sorted(set(w.select.sets or []) - {s.name for s in self.candidate_sets})
            if unknown:
                raise FieldError(("waves", i, "select", "sets"), f"unknown set(s): {', '.join(unknown)}")
        if self.publish is not None and self.publish.sets is not None:
            unknown = sorted(set(self.publish.sets) - {s.name for s in self.candidate_sets})
            if unknown:
                raise FieldError(("publish", "sets"), f"unknown set(s): {', '.join(unknown)}")
        if self.evidence.triage is not None and not any(s.rank is not None for s in self.candidate_sets):
            raise FieldError(("evidence", "triage"), "uncertainty triage bins a shortlist: declare `rank:` on a candidate set")
        return self


_MODELS: dict[int, type[ManifestBase]] = {}


def stages_model() -> type[StagesBase]:
    """The ``stages:`` block's model for the current stage table."""
    fields = {d.name: (d.config | None, Field(None, description=(d.config.__doc__ or "").strip() or None))
              for d in stage_table.stages() if d.config is not None}
    return create_model("StagesSpec", __base__=StagesBase, **fields)


def manifest_model() -> type[ManifestBase]:
    """The manifest model for the current stage table (cached per table version)."""
    v = stage_table.version()
    if v not in _MODELS:
        stages = stages_model()
        _MODELS[v] = create_model("Manifest", __base__=ManifestBase, __doc__=ManifestBase.__doc__,
                                  stages=(stages, Field(default_factory=stages)))
    return _MODELS[v]


Manifest = manifest_model()
