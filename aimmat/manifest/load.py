"""Load a manifest: YAML -> validated models -> resolved candidate sources.

Loading reads and never writes. Every problem becomes a ManifestError that
names the file, line and key path.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import ValidationError

from aimmat.errors import ManifestError
from aimmat.identity import sha256_file
from aimmat.manifest import stage_table
from aimmat.manifest.executor_spec import EXECUTOR_KINDS
from aimmat.manifest.models import ManifestBase, manifest_model
from aimmat.manifest.models_base import FieldError
from aimmat.manifest.sources import CandidateSource, resolve_files, resolve_generator
from aimmat.manifest.stage_table import StageDef
from aimmat.manifest.yamlpos import dotted, line_of, load_yaml_with_lines
from aimmat.runtime.gcpause import gc_paused


@dataclass
class CampaignSpec:
    """A validated manifest plus what it resolves to on this machine."""

    manifest: ManifestBase
    path: Path
    sha256: str
    candidates: list[CandidateSource] = field(default_factory=list)
    # the cache that hashed the source files (``aimmat.state.source_hashes``); apply saves it with the index
    source_hashes: object = field(default=None, repr=False, compare=False)

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
        """Screen variants, as stage ids (and folder names)."""
        return [d.name for d in self._variants()]

    def _variants(self) -> list[StageDef]:
        return [stage_table.variant("screen", a.name) for a in self.manifest.ablations]

    def chain(self) -> list[StageDef]:
        """The enabled stages in chain order, then the variants."""
        return [stage_table.get(s) for s in self.stages] + self._variants()

    def stage_config(self, stage: str):
        d = stage_table.get(stage)
        if d.is_variant:
            return next(a.screen for a, v in zip(self.manifest.ablations, self._variants()) if v.name == stage)
        return self.manifest.stages.get(stage)

    def structure_source(self, stage: str) -> str:
        """The stage whose output structure ``stage`` reads: its declared
        ``structure_source``, passed down the chain past a source that is
        not enabled or computes no structure (a screen without an ML
        pre-relaxation), ending at ``import`` (the candidate as imported)."""
        src = stage_table.get(stage).structure_source
        while src != "import" and (src not in self.stages or self.profile_name(src) is None):
            src = stage_table.get(src).structure_source
        return src

    def profile_name(self, stage: str) -> str | None:
        """The engine profile a stage runs with (screens: the pre-relaxation's, or None)."""
        d = stage_table.get(stage)
        return getattr(self.stage_config(stage), d.profile_field) if d.profile_field else None


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


def _key_of_message(msg: str, lines: dict) -> tuple[tuple, str]:
    """A top-level ValueError's message that starts with a key path ("stages.scf: needs ...")
    -> (that path, as written in the manifest, the rest); else ((), msg)."""
    head, sep, rest = msg.partition(": ")
    if not sep or not all(p and (p.replace("_", "").replace("-", "").isalnum()) for p in head.split(".")):
        return (), msg
    loc: tuple = ()
    for p in head.split("."):  # list indices are ints in the line map, mapping keys are strings
        loc += (int(p),) if p.isdigit() and loc + (p,) not in lines else (p,)
    return loc, rest


def _error_at(err: dict, lines: dict) -> tuple[tuple, str]:
    """Key path and message of one pydantic error. A cross-field error names the field at
    fault (FieldError, or a message starting with its key path): it is reported there."""
    # Discriminated unions put the tag in the location ("profiles.x.emt.max_steps"):
    # drop it so the path is the one the user wrote.
    loc = _drop_union_tag(tuple(err["loc"]))
    msg = err["msg"]
    if err["type"] == "extra_forbidden":
        return loc, "unknown key (typo?)"
    if err["type"] == "missing":
        return loc, "required key is missing"
    if err["type"] != "value_error":
        return loc, msg
    msg = msg.removeprefix("Value error, ")
    cause = (err.get("ctx") or {}).get("error")
    if isinstance(cause, FieldError):
        return loc + cause.loc, cause.detail
    if not loc:
        return _key_of_message(msg, lines)
    return loc, msg


def _given(value) -> str:
    """The offending value for a message: short, and never a 5,000-digit integer
    (whose repr raises ValueError past Python's int-string limit)."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 64:
        return f"an integer of {value.bit_length():,} bits"
    text = repr(value)
    return text if len(text) <= 100 else f"{text[:100]}... ({len(text):,} characters)"


def _one_line(msg: str, limit: int = 400) -> str:
    """pydantic quotes inputs in some messages ("Input tag 'a\\nb' found ..."): one line, bounded."""
    if not msg.isprintable():
        msg = "".join(c if c.isprintable() else repr(c)[1:-1] for c in msg)
    return msg if len(msg) <= limit else msg[:limit] + "..."


def _format_validation(exc: ValidationError, path: Path, lines: dict) -> ManifestError:
    parts = []
    for err in exc.errors():
        loc, msg = _error_at(err, lines)
        msg = _one_line(msg)
        key = dotted(loc) or "(top level)"
        line = line_of(lines, loc)
        where = f"{path}:{line}" if line else str(path)
        given = err.get("input")
        show = err["type"] not in {"missing", "extra_forbidden"} and not isinstance(given, (dict, list))
        detail = f" (got {_given(given)})" if show else ""
        parts.append(f"{where}: {key}: {msg}{detail}")
    fix = "see `aimmat schema` for every key, its type and its unit"
    return ManifestError("invalid manifest:\n  " + "\n  ".join(parts), fix=fix)


def _output_problem(out: str) -> str | None:
    """Why ``out`` is not a relative path under the manuscript folder (None: it is)."""
    if "\0" in out:
        return "contains a NUL byte"
    if "\\" in out:
        return "contains a backslash; separate folders with '/'"
    if out.startswith("/"):
        return "is an absolute path"
    parts = out.split("/")
    if ".." in parts:
        return "contains a '..' part"
    if all(p in ("", ".") for p in parts) or out.endswith("/"):
        return "names no file"
    return None


def _default_output(template: str) -> str:
    name = template.rsplit("/", 1)[-1]
    return name[:-3] if name.endswith(".j2") else name


def _check_render_outputs(spec: CampaignSpec, lines: dict) -> None:
    """Outputs are relative paths under <campaign>/manuscript/: never absolute, never out through '..'."""
    seen: dict[str, int] = {}
    for i, t in enumerate(spec.manifest.render):
        out = t.output if t.output is not None else _default_output(t.template)
        key = ("render", i, "output")
        where = f"{spec.path}:{line_of(lines, key)}: render.{i}.output"
        problem = _output_problem(out)
        if problem is not None:
            given = f"{out[:200]!r}" if t.output is not None else f"{out[:200]!r} (the template's name without .j2)"
            raise ManifestError(f"{where}: {given} {problem}; outputs are written under <campaign>/manuscript/",
                                fix="give a relative path such as 'tables/summary.md', without '..'")
        norm = os.path.normpath(out)
        if norm in seen:
            raise ManifestError(f"{where}: {out!r} is also the output of render.{seen[norm]}",
                                fix="give each render target its own output")
        seen[norm] = i


def _check_render_targets(spec: CampaignSpec, lines: dict) -> None:
    """Templates must exist and declare their scope, outputs stay in the manuscript
    folder: found at load, before apply runs anything."""
    from aimmat.errors import RenderError
    from aimmat.manifest.templates import declared_scope

    _check_render_outputs(spec, lines)
    for i, t in enumerate(spec.manifest.render):
        where = f"{spec.path}:{line_of(lines, ('render', i, 'template'))}: render.{i}.template"
        tpath = Path(os.path.abspath(spec.base / t.template))
        if not tpath.is_file():
            raise ManifestError(f"{where}: {tpath} not found", fix="paths are relative to the manifest's folder")
        try:
            scope = declared_scope(tpath)
        except RenderError as exc:
            raise ManifestError(f"{where}: {exc.message}", fix=exc.fix) from None
        if t.scope and t.scope != scope:
            raise ManifestError(f"{where}: render.{i}.scope is '{t.scope}' but {tpath.name} declares '{scope}'")


def load_manifest(path: str | Path, *, source_hashes=None) -> CampaignSpec:
    """Validate a manifest and list its candidates. Reads, never writes.

    ``source_hashes``: ``campaign_dir -> cache`` whose ``sha256(path, stat)``
    hashes source files (the campaign index's cache of unchanged files,
    ``aimmat.state.source_hashes.SourceHashes``); default: hash every file."""
    path = Path(path)
    if not path.is_file():
        raise ManifestError(f"{path}: manifest file not found", fix="give the path to a manifest YAML file")
    data, lines = load_yaml_with_lines(path)
    if not isinstance(data, dict):
        raise ManifestError(f"{path}: a manifest must be a YAML mapping, got {type(data).__name__}")
    try:
        manifest = manifest_model().model_validate(data)
    except ValidationError as exc:
        raise _format_validation(exc, path, lines) from None
    except (TypeError, ValueError, OverflowError, RecursionError) as exc:  # a validator that did not expect this input
        raise ManifestError(f"{path}: invalid manifest ({type(exc).__name__}: {str(exc)[:200]})",
                            fix="see `aimmat schema` for every key, its type and its unit") from None
    spec = CampaignSpec(manifest=manifest, path=path.resolve(), sha256=sha256_file(path))
    _check_render_targets(spec, lines)
    _check_models(spec, lines)
    if source_hashes is not None:
        spec.source_hashes = source_hashes(spec.campaign_dir)
    _resolve_sources(spec, path, lines, spec.source_hashes.sha256 if spec.source_hashes is not None else None)
    return spec


def _resolve_sources(spec: CampaignSpec, path: Path, lines: dict, hasher) -> None:
    manifest = spec.manifest
    with gc_paused():  # 100k long-lived sources: automatic collections would walk them again and again
        for i, cs in enumerate(manifest.candidate_sets):
            where = f"{path}:{line_of(lines, ('candidate_sets', i, 'source'))}: candidate_sets.{i}.source"
            if cs.source.kind == "generator":
                spec.candidates.extend(resolve_generator(cs.name, cs.elements, cs.source, spec.model_file(cs.source.model),
                                                         manifest.models[cs.source.model].path,
                                                         manifest.models[cs.source.model].sha256.lower()))
            else:
                spec.candidates.extend(resolve_files(cs.name, cs.source.glob, cs.source.format, spec.base, where,
                                                     hasher=hasher))


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
