"""Load a manifest: YAML -> validated models -> resolved candidate sources.

Loading reads and never writes. Every problem becomes a ManifestError that
names the file, line and key path.
"""

from __future__ import annotations

import gc
import os
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import ValidationError

from aimmat.errors import ManifestError
from aimmat.manifest.executor_spec import EXECUTOR_KINDS
from aimmat.manifest.identity import sha256_file
from aimmat.manifest.models import Manifest
from aimmat.manifest.sources import CandidateSource, resolve_files, resolve_generator
from aimmat.manifest.yamlpos import line_of, load_yaml_with_lines


@dataclass
class CampaignSpec:
    """A validated manifest plus what it resolves to on this machine."""

    manifest: Manifest
    path: Path
    sha256: str
    candidates: list[CandidateSource] = field(default_factory=list)
    cache: dict = field(default_factory=dict, repr=False, compare=False)  # derived, per process

    @property
    def base(self) -> Path:
        return self.path.parent

    @property
    def campaign_dir(self) -> Path:
        root = Path(self.manifest.campaign.root)
        if not root.is_absolute():
            root = self.base / root
        return Path(os.path.normpath(root / self.manifest.campaign.name))

    @property
    def stages(self) -> list[str]:
        return self.manifest.stages.enabled()

    def model_file(self, name: str) -> Path:
        p = Path(self.manifest.models[name].path)
        return p if p.is_absolute() else Path(os.path.normpath(self.base / p))

    def sets(self) -> list[str]:
        return [s.name for s in self.manifest.candidate_sets]

    @property
    def ablation_stages(self) -> list[str]:
        """Screen variants, as stage ids (and folder names): 'ablation-<name>'."""
        return [f"ablation-{a.name}" for a in self.manifest.ablations]

    def stage_config(self, stage: str):
        if stage.startswith("ablation-"):
            name = stage[len("ablation-"):]
            return next(a.screen for a in self.manifest.ablations if a.name == name)
        return getattr(self.manifest.stages, stage)


# Where the manifest has discriminated unions: the index at which pydantic
# inserts the tag (profiles.<name>.<kind>..., candidate_sets.<i>.source.<kind>...,
# executor.<kind>...), and the tags it may insert there.
_UNION_TAG_AT = {"profiles": 2, "candidate_sets": 3, "executor": 1}
_PROFILE_TAGS = {"emt", "chgnet", "qe"}
_UNION_TAGS = {"profiles": _PROFILE_TAGS, "candidate_sets": {"files", "generator"}, "executor": EXECUTOR_KINDS}


def _drop_union_tag(loc: tuple) -> tuple:
    i = _UNION_TAG_AT.get(loc[0]) if loc else None
    if i is None or len(loc) <= i:
        return loc
    if loc[0] == "candidate_sets" and loc[2] != "source":
        return loc
    if loc[i] in _UNION_TAGS[loc[0]]:
        return loc[:i] + loc[i + 1 :]
    return loc


def _format_validation(exc: ValidationError, path: Path, lines: dict) -> ManifestError:
    parts = []
    for err in exc.errors():
        loc = tuple(err["loc"])
        # Discriminated unions put the tag in the location ("profiles.x.emt.max_steps"):
        # drop it so the path is the one the user wrote.
        loc = _drop_union_tag(loc)
        key = ".".join(str(p) for p in loc) or "(top level)"
        line = line_of(lines, loc)
        where = f"{path}:{line}" if line else str(path)
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown key (typo?)"
        elif err["type"] == "missing":
            msg = "required key is missing"
        elif msg.startswith("Value error, "):
            msg = msg[len("Value error, "):]
        given = err.get("input")
        detail = f" (got {given!r})" if err["type"] not in {"missing", "extra_forbidden"} and not isinstance(given, (dict, list)) else ""
        parts.append(f"{where}: {key}: {msg}{detail}")
    fix = "see `aimmat schema` for every key, its type and its unit"
    return ManifestError("invalid manifest:\n  " + "\n  ".join(parts), fix=fix)


def _check_render_targets(spec: CampaignSpec, lines: dict) -> None:
    """Templates must exist and declare their scope: found at load, before apply runs anything."""
    from aimmat.errors import RenderError
    from aimmat.render.scoped import declared_scope

    for i, t in enumerate(spec.manifest.render):
        where = f"{spec.path}:{line_of(lines, ('render', i, 'template'))}: render.{i}.template"
        tpath = (spec.base / t.template).resolve()
        if not tpath.is_file():
            raise ManifestError(f"{where}: {tpath} not found", fix="paths are relative to the manifest's folder")
        try:
            scope = declared_scope(tpath)
        except RenderError as exc:
            raise ManifestError(f"{where}: {exc.message}", fix=exc.fix) from None
        if t.scope and t.scope != scope:
            raise ManifestError(f"{where}: render.{i}.scope is '{t.scope}' but {tpath.name} declares '{scope}'")


def load_manifest(path: str | Path, *, rescan: bool = False) -> CampaignSpec:
    """``rescan``: hash every source file instead of trusting the campaign
    index's hashes of files whose stat signature is unchanged."""
    path = Path(path)
    if not path.is_file():
        raise ManifestError(f"{path}: manifest file not found", fix="give the path to a manifest YAML file")
    data, lines = load_yaml_with_lines(path)
    if not isinstance(data, dict):
        raise ManifestError(f"{path}: a manifest must be a YAML mapping, got {type(data).__name__}")
    try:
        manifest = Manifest.model_validate(data)
    except ValidationError as exc:
        raise _format_validation(exc, path, lines) from None
    spec = CampaignSpec(manifest=manifest, path=path.resolve(), sha256=sha256_file(path))
    _check_render_targets(spec, lines)
    _check_models(spec, lines)
    # Source hashes come from the campaign's record index while each file's
    # stat signature matches (state.index.SourceHashes); the manifest layer
    # only sees a function path, stat -> sha256.
    from aimmat.state.index import SourceHashes

    hashes = spec.cache["source_hashes"] = SourceHashes(spec.campaign_dir, rescan=rescan)
    _resolve_sources(spec, path, lines, hashes)
    return spec


def _resolve_sources(spec: CampaignSpec, path: Path, lines: dict, hashes) -> None:
    manifest = spec.manifest
    enabled = gc.isenabled()
    gc.disable()  # 100k long-lived sources: automatic collections would walk them again and again
    try:
        for i, cs in enumerate(manifest.candidate_sets):
            where = f"{path}:{line_of(lines, ('candidate_sets', i, 'source'))}: candidate_sets.{i}.source"
            if cs.source.kind == "generator":
                spec.candidates.extend(resolve_generator(cs.name, cs.elements, cs.source, spec.model_file(cs.source.model),
                                                         manifest.models[cs.source.model].path,
                                                         manifest.models[cs.source.model].sha256.lower()))
            else:
                spec.candidates.extend(resolve_files(cs.name, cs.source.glob, cs.source.format, spec.base, where,
                                                     hasher=hashes.sha256))
    finally:
        gc.freeze()  # hand them to the oldest generation in O(1), as state.scan does
        gc.unfreeze()
        if enabled:
            gc.enable()


def _check_models(spec: CampaignSpec, lines: dict) -> None:
    """Checkpoints exist and have the pinned sha256 (hashing only: torch is not imported)."""
    for name, m in spec.manifest.models.items():
        where = f"{spec.path}:{line_of(lines, ('models', name, 'path'))}: models.{name}"
        file = spec.model_file(name)
        if not file.is_file():
            raise ManifestError(f"{where}.path: checkpoint {file} not found",
                                fix="paths are relative to the manifest; train one with `aimmat model train`")
        digest = sha256_file(file)
        if digest != m.sha256.lower():
            raise ManifestError(f"{where}.sha256: {file} has sha256 {digest}, the manifest pins {m.sha256}",
                                fix="restore the pinned file, or pin the new hash if the change is intended")
