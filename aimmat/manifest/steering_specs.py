"""Manifest blocks that steer and report a campaign rather than compute it: evidence (best candidate, uncertainty
triage), milestones, pre-registered rerun waves, MPContribs publishing and the active-learning cycle.
``aimmat.manifest.models`` assembles them into the manifest."""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import AfterValidator, Field, model_validator

from aimmat.manifest.models_base import FieldError, SafeId, Strict, bounded


MILESTONE_RE = re.compile(r"^\s*(public|screening|validated)((?:\.[A-Za-z0-9_-]+)+)\s*"
                        r"(?:(>=|<=|==|!=|>|<)\s*(-?[0-9]+(?:\.[0-9]+)?(?:[eE][-+]?[0-9]+)?)|(present))\s*$")


def _milestone(value: str) -> str:
    """`<scope>.<key>[.<key>...] <op> <number>` or `<scope>.<key>... present`: a path into one scope of the
    snapshot, never an expression that is evaluated."""
    if len(value) > 300 or not MILESTONE_RE.match(value):
        raise ValueError(f"'{value[:80]}' is not a milestone: write '<scope>.<figure> <op> <number>' (scope: public, "
                         "screening or validated; op: >=, <=, >, <, ==, !=) or '<scope>.<figure> present', "
                         "e.g. 'validated.pass_both >= 5'")
    return value.strip()


Milestone = Annotated[str, AfterValidator(_milestone)]


WAVE_STATUSES = ("outputpresentnotconverged", "failed", "not_converged_settings", "not_shortlisted")


class WaveSelect(Strict):
    """Which candidates a rerun wave takes, decided from the records when it is frozen."""

    statuses: list[Literal[WAVE_STATUSES]] = Field(  # type: ignore[valid-type]
        default_factory=lambda: ["outputpresentnotconverged"], min_length=1,
        description="Candidate statuses the wave takes: a failed stage is rerun; not_shortlisted candidates enter the "
                    "first engine stage past the shortlist.")
    failure_classes: list[Annotated[str, Field(max_length=64, pattern=r"^[a-z0-9_]+$")]] | None = Field(
        None, max_length=100, description="Only these failure classes of the failed stage (default: any).")
    sets: list[SafeId] | None = Field(None, max_length=1000, description="Only these sets (default: all).")
    score_min: float | None = bounded(None, ge=-1000, le=1000, description="Ranked sets: only candidates scoring at least this.")
    uncertainty_max_dex: float | None = bounded(None, ge=0, le=100, description="Ranked sets: only candidates predicted this certain or better.")
    max_previous_attempts: int | None = bounded(None, ge=0, le=100, description="Only candidates whose failed stage ran at most this many attempts.")
    max_candidates: int = bounded(50, ge=1, le=100000, description="Take at most this many (best score first, then name).")


class WaveSpec(Strict):
    """A pre-registered rerun wave: its policy is frozen (`aimmat waves freeze`) before it runs."""

    name: SafeId
    select: WaveSelect = Field(default_factory=WaveSelect)
    overrides: dict[Annotated[str, Field(max_length=64, pattern=r"^[a-z_][a-z0-9_]*$")], float | int | str | bool] = Field(
        default_factory=dict, max_length=50,
        description="Profile fields the wave's attempts run with (e.g. mixing_beta: 0.3, electron_maxstep: 300, "
                    "kspacing_per_a: 0.15, fmax_ev_per_a: 0.05); each must be a field of the profile it reaches.")
    max_attempts: int = bounded(2, ge=1, le=20, description="Attempts the wave may spend per selected candidate (its retry ladder included).")
    intervention: Annotated[str, Field(max_length=200)] | None = Field(
        None, description="A name for the intervention in reports (default: the overrides).")


class PublishSpec(Strict):
    """Publishing to MPContribs (`aimmat publish`): which candidates, which scope, which project."""

    project: Annotated[str, Field(min_length=3, max_length=31, pattern=r"^[a-zA-Z0-9_]+$")] = Field(
        description="The MPContribs project (created on the platform by its owner).")
    host: Annotated[str, Field(max_length=200, pattern=r"^[A-Za-z0-9.-]+(:[0-9]{1,5})?$")] = Field(
        "contribs-api.materialsproject.org", description="The MPContribs API host.")
    scope: Literal["validated", "screening"] = Field(
        "validated", description="validated: elastic-ready candidates with tensors and gates; screening: every imported "
                                 "candidate with its structure and status.")
    sets: list[SafeId] | None = Field(None, max_length=1000, description="Only these sets (default: all).")
    api_key_env: Annotated[str, Field(max_length=64, pattern=r"^[A-Z_][A-Z0-9_]*$")] = Field(
        "MPCONTRIBS_API_KEY", description="Environment variable holding the API key (the key never goes in the manifest).")
    public: bool = Field(False, description="Upload as public contributions (default: private to the project).")


class BestSpec(Strict):
    """How the snapshot names the best validated candidate."""

    by: Literal["g_h_gpa", "b_h_gpa", "e_h_gpa", "poisson_h", "fit_rms_gpa"] = Field(
        "g_h_gpa", description="The validated-table column that orders candidates.")
    order: Literal["desc", "asc"] = Field("desc", description="desc: the largest value is best; asc: the smallest.")
    require: Literal["pass_both", "none"] = Field(
        "pass_both", description="pass_both: only candidates passing both gates (re-derived) can be best.")


class TriageSpec(Strict):
    """Uncertainty triage of the shortlist (screening scope): shortlisted candidates binned by the model's
    predicted uncertainty, with conversion to elastic-ready and pass_both per bin."""

    bins_dex: list[Annotated[float, Field(gt=0, lt=100)]] = Field(
        min_length=1, max_length=20,
        description="Inner bin edges of the ranking's uncertainty term (dex, strictly increasing): [0.05, 0.1] gives "
                    "[0, 0.05), [0.05, 0.1), [0.1, inf). Range of each edge: (0, 100).")

    @model_validator(mode="after")
    def _increasing(self) -> "TriageSpec":
        e = self.bins_dex
        if any(not (0 < x < 100) for x in e) or any(b <= a for a, b in zip(e, e[1:])):
            raise FieldError(("bins_dex",), f"bin edges must be positive, below 100 and strictly increasing (got {e})")
        return self


class EvidenceSpec(Strict):
    scopes: list[Literal["public", "screening", "validated"]] = Field(default_factory=list)
    dedup_keys: list[Literal["campaign", "relpath", "structure"]] = Field(
        default_factory=lambda: ["campaign", "relpath"]
    )
    best: BestSpec = Field(default_factory=BestSpec, description="The ordering that names the best validated candidate; "
                                                               "candidates with physics flags or inconsistent gates are never best.")
    triage: TriageSpec | None = Field(None, description="Uncertainty triage of the shortlist (needs a ranked set).")


OUTCOMES = ("pass_both", "fail_gates", "outputpresentnotconverged", "not_converged_settings", "failed", "screened_out")


class LearningSelect(Strict):
    """Which DFT (or CHGNet) outcomes become training data."""

    sets: list[SafeId] | None = Field(None, max_length=1000, description="Sets whose records are read (default: all).")
    tensors: list[Literal["pass_both", "pass_pd", "pass_fit_rms"]] = Field(
        default_factory=lambda: ["pass_both"], min_length=1,
        description="Fitted elastic tensors that fine-tune the elastic head: those passing these gates.")
    seek: list[Literal[OUTCOMES]] = Field(  # type: ignore[valid-type]
        default_factory=lambda: ["pass_both"], max_length=6,
        description="Generated candidates with these outcomes pull generation toward their latents. Outcomes: "
                    + ", ".join(OUTCOMES) + " (fail_gates: elastic-ready, not pass_both).")
    avoid: list[Literal[OUTCOMES]] = Field(  # type: ignore[valid-type]
        default_factory=lambda: ["outputpresentnotconverged", "not_converged_settings", "failed", "screened_out"],
        max_length=6, description="Generated candidates with these outcomes push generation away from their latents "
                                  "(screened_out: atoms too close, density or charge outside the screen).")

    @model_validator(mode="after")
    def _disjoint(self) -> "LearningSelect":
        both = sorted(set(self.seek) & set(self.avoid))
        if both:
            raise FieldError(("avoid",), f"{', '.join(both)} also in seek")
        return self


class LearningUpdate(Strict):
    """How the parent checkpoint becomes the child: the elastic head is fine-tuned, generation re-weighted."""

    epochs: int = bounded(40, ge=1, le=10000, description="Fine-tuning epochs over the learned tensors.")
    lr: float = bounded(3e-4, gt=0, le=0.1, description="Fine-tuning learning rate (the parent trained at ~3e-3).")
    log_moduli_weight: float = bounded(1.0, ge=0, le=100, description="Weight of the log10 K_VRH / G_VRH error beside the tensor error.")
    proposals: int = bounded(8, ge=1, le=256, description="Prior latents drawn per generated candidate; the one the guidance scores best is decoded (1: no re-weighting).")
    bandwidth: float = bounded(2.0, gt=0, le=100, description="Width of the Gaussian kernel around each seek / avoid latent (prior std is 1).")


class LearningHoldout(Strict):
    """A hashed holdout: a candidate is held out when sha256(salt, set/candidate) falls below ``fraction``;
    no update may train on it, in this cycle or any later one (the salt and fraction are inherited)."""

    fraction: float = bounded(0.25, gt=0, lt=1, description="Share of candidates held out.")
    salt: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")] = Field(
        "holdout", description="Changes which candidates are held out; fixed for a lineage.")


class LearningSpec(Strict):
    """One active-learning cycle: `aimmat model update MANIFEST` writes the child checkpoint
    <campaign>/learning/<name>/checkpoint.pt and its record; pin it under `models:` like any other."""

    name: SafeId = Field(description="The cycle, e.g. 'cycle1': the folder under <campaign>/learning/.")
    parent: SafeId = Field(description="A key of `models:`: the checkpoint to update.")
    select: LearningSelect = Field(default_factory=LearningSelect)
    update: LearningUpdate = Field(default_factory=LearningUpdate)
    holdout: LearningHoldout = Field(default_factory=LearningHoldout)
