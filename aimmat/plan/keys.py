"""Stage keys: what determines each stage's result, and how two differ."""

from __future__ import annotations

from functools import lru_cache
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from aimmat.manifest.identity import canonical, sha256_canonical
from aimmat.manifest.load import CampaignSpec
from aimmat.manifest.sources import CandidateSource
from aimmat.state.records import RECIPE_VERSIONS

# Where each stage's input structure comes from.
STRUCTURE_SOURCE = {"screen": "import", "relax": "import", "scf": "relax", "elastic": "relax"}


@lru_cache(maxsize=None)
def engine_version(kind: str) -> str:
    package = {"emt": "ase", "chgnet": "chgnet"}[kind]
    try:
        return f"{package} {version(package)}"
    except PackageNotFoundError:
        return f"{package} (not installed)"


def import_inputs(src: CandidateSource) -> dict[str, Any]:
    return {
        "recipe": RECIPE_VERSIONS["import"],
        "source_sha256": src.sha256,
        "frame": src.frame,
        "format": src.fmt,
    }


def import_key(src: CandidateSource) -> str:
    return sha256_canonical(import_inputs(src))


def _static_inputs(spec: CampaignSpec, stage: str) -> dict[str, Any]:
    """The part of a stage's key that is the same for every candidate,
    canonicalized once per spec (diff of 100k candidates hashes 400k keys)."""
    cached = spec.cache.get(("static_inputs", stage))
    if cached is not None:
        return cached
    cfg = getattr(spec.manifest.stages, stage)
    inputs: dict[str, Any] = {"recipe": RECIPE_VERSIONS[stage]}
    if stage == "screen":
        inputs["criteria"] = cfg.model_dump()
    else:
        profile = spec.manifest.profiles[cfg.profile]
        inputs["engine"] = engine_version(profile.kind)
        inputs["profile"] = profile.key_params(stage)
        if stage == "elastic":
            inputs["strains"] = {"norm": list(cfg.norm_strains), "shear": list(cfg.shear_strains)}
    inputs = canonical(inputs)
    spec.cache[("static_inputs", stage)] = inputs
    return inputs


def stage_inputs(spec: CampaignSpec, stage: str, structure_sha256: str) -> dict[str, Any]:
    """Everything that determines ``stage``'s result for one input structure (canonical)."""
    return {**_static_inputs(spec, stage), "structure_sha256": structure_sha256}


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


def _show(v: Any) -> str:
    if isinstance(v, str) and len(v) == 64 and all(c in "0123456789abcdef" for c in v):
        return v[:12]
    return "(absent)" if v is None else str(v)


def describe_changes(old: dict, new: dict, labels: dict[str, str] | None = None) -> list[str]:
    """One line per changed field: 'profile.fmax_ev_per_a 0.05 -> 0.02'."""
    a, b = _flatten(old), _flatten(new)
    lines = []
    for field in sorted(set(a) | set(b)):
        if a.get(field) != b.get(field):
            name = (labels or {}).get(field, field)
            lines.append(f"{name} {_show(a.get(field))} -> {_show(b.get(field))}")
    return lines
