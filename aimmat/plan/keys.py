"""Stage keys: what determines each stage's result, and how two differ."""

from __future__ import annotations

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
    return sha256_canonical(import_inputs(src, spec))


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
