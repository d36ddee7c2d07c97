"""Stage keys: what determines each stage's result, and how two differ."""

from __future__ import annotations

import hashlib
import json
from functools import lru_cache
from pathlib import Path
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from aimmat.engines.qe.pseudos import md5_file
from aimmat.errors import ManifestError
from aimmat.manifest.identity import canonical, sha256_canonical
from aimmat.manifest.load import CampaignSpec
from aimmat.manifest.sources import CandidateSource, GeneratedSource
from aimmat.state.records import RECIPE_VERSIONS

# Where each stage's input structure comes from (ablation screens: the candidate's).
STRUCTURE_SOURCE = {"screen": "import", "relax": "import", "scf": "relax", "elastic": "relax"}


def is_screen(stage: str) -> bool:
    return stage == "screen" or stage.startswith("ablation-")


def structure_source(stage: str) -> str:
    return "import" if stage.startswith("ablation-") else STRUCTURE_SOURCE[stage]


@lru_cache(maxsize=None)
def engine_version(kind: str) -> str:
    if kind == "qe":
        from aimmat.engines.qe.engine import pw_version

        return pw_version()
    package = {"emt": "ase", "chgnet": "chgnet"}[kind]
    try:
        return f"{package} {version(package)}"
    except PackageNotFoundError:
        return f"{package} (not installed)"


def import_inputs(src: CandidateSource, spec: CampaignSpec | None = None) -> dict[str, Any]:
    if isinstance(src, GeneratedSource):
        out: dict[str, Any] = {
            "recipe": RECIPE_VERSIONS["import"],
            "checkpoint_sha256": src.sha256,
            "seed": src.seed,
            "index": src.frame,
            "n_elements": src.n_elements,
            "schedule": dict(src.schedule) or None,
        }
    else:
        out = {
            "recipe": RECIPE_VERSIONS["import"],
            "source_sha256": src.sha256,
            "frame": src.frame,
            "format": src.fmt,
        }
    predictor = predictor_sha256(spec, src.set_name) if spec is not None else None
    if predictor:  # the prediction stored with the candidate comes from this checkpoint
        out["predictor_sha256"] = predictor
    return out


def predictor_sha256(spec: CampaignSpec, set_name: str) -> str | None:
    cache = spec.cache.setdefault("predictor_sha256", {})
    if set_name not in cache:
        cset = next(s for s in spec.manifest.candidate_sets if s.name == set_name)
        model = cset.rank_model()
        cache[set_name] = spec.manifest.models[model].sha256.lower() if model else None
    return cache[set_name]


def import_key(src: CandidateSource, spec: CampaignSpec | None = None) -> str:
    """Key of a candidate's import; memoized per spec (plan and new_candidates
    both ask). File sources hash a cached template (see ``stage_key_for``)."""
    if spec is None:
        return sha256_canonical(import_inputs(src))
    memo = spec.cache.get("import_key")
    if memo is None:
        memo = spec.cache["import_key"] = {}
    k = (src.set_name, src.cand_id)
    key = memo.get(k)
    if key is None:
        key = memo[k] = _file_import_key(src, spec) or sha256_canonical(import_inputs(src, spec))
    return key


def _file_import_key(src: CandidateSource, spec: CampaignSpec) -> str | None:
    if isinstance(src, GeneratedSource) or not (src.sha256.isascii() and src.sha256.isalnum()):
        return None
    tk = ("import_template", src.set_name, src.fmt, src.frame)
    template = spec.cache.get(tk)
    if template is None:
        inputs = {**import_inputs(src, spec), "source_sha256": _HOLE}
        template = spec.cache[tk] = _template(inputs)
    return _fill(template, src.sha256) if template else None


def _static_inputs(spec: CampaignSpec, stage: str) -> dict[str, Any]:
    """The part of a stage's key that is the same for every candidate,
    canonicalized once per spec (diff of 100k candidates hashes 400k keys)."""
    cached = spec.cache.get(("static_inputs", stage))
    if cached is not None:
        return cached
    cfg = spec.stage_config(stage)
    inputs: dict[str, Any] = {"recipe": RECIPE_VERSIONS["screen" if is_screen(stage) else stage]}
    if is_screen(stage):
        inputs["criteria"] = cfg.model_dump()
        if cfg.prerelax_profile:
            pre = spec.manifest.profiles[cfg.prerelax_profile]
            inputs["prerelax"] = {"engine": engine_version(pre.kind), "profile": pre.key_params("relax")}
    else:
        profile = spec.manifest.profiles[cfg.profile]
        inputs["engine"] = engine_version(profile.kind)
        inputs["profile"] = profile.key_params(stage)
        if stage == "elastic":
            inputs["elastic"] = cfg.model_dump(exclude={"profile"})
    inputs = canonical(inputs)
    spec.cache[("static_inputs", stage)] = inputs
    return inputs


def stage_inputs(spec: CampaignSpec, stage: str, structure_sha256: str, elements: list[str] | None = None,
                 metallic: bool | None = None) -> dict[str, Any]:
    """Everything that determines ``stage``'s result for one input structure (canonical).

    For `kind: qe` profiles the md5 of each element's pseudopotential file is
    part of the key, named by file: changing a UPF's bytes reruns exactly the
    candidates that contain that element.
    """
    inputs = {**_static_inputs(spec, stage), "structure_sha256": structure_sha256}
    cfg = spec.stage_config(stage)
    if not is_screen(stage) and spec.manifest.profiles[cfg.profile].kind == "qe":
        files = qe_pseudo_files(spec, cfg.profile, elements or [])
        inputs["pseudos"] = {p.name: md5_file(p) for p in files.values()}
        if spec.manifest.profiles[cfg.profile].ecutwfc_ry is None:
            inputs["cutoffs_ry"] = list(qe_cutoffs(spec, cfg.profile, elements or []))
        if uses_metal_mesh(spec.manifest.profiles[cfg.profile], stage):
            inputs["metallic"] = bool(metallic)
    return inputs


def uses_metal_mesh(profile, stage: str) -> bool:
    """SCF and elastic of a qe profile pick their k-spacing from whether the
    relaxation came out metallic (unless the mesh is explicit)."""
    return stage in ("scf", "elastic") and profile.kpoints is None and profile.kspacing_metal_per_a is not None


def qe_cutoffs(spec: CampaignSpec, profile_name: str, elements) -> tuple[float, float | None]:
    """(ecutwfc, ecutrho) for a structure from per-element recommendations:
    the maximum over its elements (SSSP's convention)."""
    from aimmat.engines.qe.engine import pseudo_folder
    from aimmat.engines.qe.pseudos import recommended_cutoffs

    profile = spec.manifest.profiles[profile_name]
    folder = pseudo_folder(profile.pseudo.model_dump(), spec.base)
    wfc, rho = 0.0, None
    for el, path in qe_pseudo_files(spec, profile_name, elements).items():
        rec = recommended_cutoffs(folder, el, path)
        if rec is None:
            raise ManifestError(
                f"{spec.path}: profiles.{profile_name}.ecutwfc_ry: no recommended cutoff for {el} ({path.name}) in {folder}",
                fix="set ecutwfc_ry (and ecutrho_ry) in the profile, or use a family that ships cutoffs (SSSP)",
            )
        wfc = max(wfc, rec[0])
        if rec[1]:
            rho = max(rho or 0.0, rec[1])
    if profile.ecutrho_ry is not None:
        rho = profile.ecutrho_ry
    return wfc, rho


def qe_pseudo_files(spec: CampaignSpec, profile_name: str, elements) -> dict[str, Path]:
    """Element -> UPF path for a qe profile; ManifestError naming element and folder."""
    from aimmat.engines.qe.engine import pseudo_folder
    from aimmat.engines.qe.pseudos import find_pseudo

    out = {}
    profile = spec.manifest.profiles[profile_name]
    for el in elements:
        ck = ("pseudo", profile_name, el)
        if ck not in spec.cache:
            pseudo = profile.pseudo.model_dump()
            folder = pseudo_folder(pseudo, spec.base)
            try:
                spec.cache[ck] = find_pseudo(folder, el, pseudo["files"], pseudo["functional"])
            except (LookupError, OSError, ImportError) as exc:
                raise ManifestError(
                    f"{spec.path}: profiles.{profile_name}.pseudo: {exc}",
                    fix=f"add a UPF file for {el} to {folder}, name one under `pseudo.files`, or choose another family",
                ) from None
        out[el] = spec.cache[ck]
    return out


_HOLE = "aimmat-hash-placeholder"


def stage_key_for(spec: CampaignSpec, stage: str, structure_sha256: str | None, species: str = "",
                  metallic: bool | int | None = None) -> str:
    """``stage_key(stage_inputs(...))`` without building the inputs.

    A stage's canonical inputs are the same JSON text for every candidate
    except the structure hash (and, for qe profiles, the elements' pseudos
    and the metallic flag), so the text around the hash is hashed once per
    spec and each key costs one sha256 state copy (4 keys per candidate at
    100k candidates). ``species``: SEP-joined elements (``CandidateSummary``).
    """
    if not (isinstance(structure_sha256, str) and structure_sha256.isascii() and structure_sha256.isalnum()):
        return stage_key(stage_inputs(spec, stage, structure_sha256, _species(species), metallic))
    simple = spec.cache.get("key_template_simple")  # stages whose key depends on the structure alone
    if simple is None:
        simple = spec.cache["key_template_simple"] = {}
    template = simple.get(stage)
    if template is not None:
        return _fill(template, structure_sha256)
    qe = spec.cache.get(("qe_stage", stage))
    if qe is None:
        cfg = spec.stage_config(stage)
        profile = None if is_screen(stage) else spec.manifest.profiles[cfg.profile]
        qe = spec.cache[("qe_stage", stage)] = (profile is not None and profile.kind == "qe",
                                                profile is not None and profile.kind == "qe" and uses_metal_mesh(profile, stage))
    tk = ("key_template", stage, species if qe[0] else None, bool(metallic) if qe[1] else None)
    template = spec.cache.get(tk)
    if template is None:
        template = spec.cache[tk] = _template(stage_inputs(spec, stage, _HOLE, _species(species), metallic))
    if template is False:  # the placeholder is not where the hash goes: build the inputs
        return stage_key(stage_inputs(spec, stage, structure_sha256, _species(species), metallic))
    if not qe[0]:
        simple[stage] = template
    return _fill(template, structure_sha256)


def _template(inputs: dict[str, Any]):
    """(sha256 state after the canonical JSON up to the placeholder string's
    content, the bytes after it), or False when the placeholder does not
    occur exactly once."""
    parts = json.dumps(inputs, sort_keys=True, separators=(",", ":"), ensure_ascii=True).split(f'"{_HOLE}"')
    return (hashlib.sha256((parts[0] + '"').encode()), ('"' + parts[1]).encode()) if len(parts) == 2 else False


def _fill(template, value: str) -> str:
    """sha256 of the template's text with ``value`` (alphanumeric ASCII) in the placeholder."""
    h = template[0].copy()
    h.update(value.encode() + template[1])
    return h.hexdigest()


def _species(species: str) -> list[str]:
    from aimmat.state.summary import SEP

    return species.split(SEP) if species else []


def stage_key(inputs: dict[str, Any]) -> str:
    """Key of canonical inputs from ``stage_inputs`` / ``import_inputs``."""
    return sha256_canonical(inputs)


def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(d, dict):
        out: dict[str, Any] = {}
        for k, v in d.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix: d}


_ABSENT = object()


def _show(v: Any) -> str:
    if isinstance(v, str) and len(v) == 64 and all(c in "0123456789abcdef" for c in v):
        return v[:12]
    if v is _ABSENT:
        return "(absent)"
    return "null" if v is None else str(v)


def describe_changes(old: dict, new: dict, labels: dict[str, str] | None = None) -> list[str]:
    """One line per changed field: 'profile.fmax_ev_per_a 0.05 -> 0.02'."""
    a, b = _flatten(old), _flatten(new)
    lines = []
    for field in sorted(set(a) | set(b)):
        if a.get(field, _ABSENT) != b.get(field, _ABSENT):
            name = (labels or {}).get(field, field)
            if field.startswith("pseudos."):
                name = f"pseudopotential {field[len('pseudos.'):]} md5"
            lines.append(f"{name} {_show(a.get(field, _ABSENT))} -> {_show(b.get(field, _ABSENT))}")
    return lines
