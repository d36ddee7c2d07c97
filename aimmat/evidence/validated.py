"""The validated scope: the de-duplicated elastic-ready subset, its gates re-derived from the stored metrics
and the manifest's thresholds, physics flags per row, and the best candidate by the declared ordering."""

from __future__ import annotations

from aimmat.evidence.stats import wilson_interval
from aimmat.manifest.load import CampaignSpec


def _gates(spec: CampaignSpec, o) -> tuple[dict, list[str]]:
    """The gates re-derived from the stored metrics and the manifest's thresholds, and the names of those whose
    stored pass flag disagrees (an edited record, or one written by code with another rule): such a gate counts as
    failed whatever the record says."""
    import math

    cfg = spec.stage_config("elastic")
    ok = lambda v: v is not None and math.isfinite(v)  # noqa: E731
    derived = {"pass_fit_rms": ok(o.fit_rms_gpa) and o.fit_rms_gpa < cfg.fit_rms_max_gpa,
               "pass_pd": ok(o.min_eigenvalue_gpa) and o.min_eigenvalue_gpa > cfg.pd_min_eigenvalue_gpa}
    inconsistent = [g for g, v in derived.items() if bool(getattr(o, g)) != v]
    passes = {g: v and g not in inconsistent for g, v in derived.items()}
    return passes, inconsistent


def physics_flags(row: dict) -> list[str]:
    """What a reader must see beside a validated row: moduli that are not positive, a Poisson ratio outside the
    range an isotropic stable solid allows (-1, 1/2), values missing."""
    flags = []
    for key, name in (("b_h_gpa", "B_H"), ("g_h_gpa", "G_H"), ("e_h_gpa", "E_H")):
        v = row.get(key)
        if v is None or v != v:
            flags.append(f"{name} missing")
        elif v <= 0:
            flags.append(f"{name} <= 0")
    nu = row.get("poisson_h")
    if nu is None or nu != nu:
        flags.append("nu missing")
    elif not -1.0 < nu < 0.5:
        flags.append("nu outside (-1, 0.5)")
    return flags


def validated_row(spec: CampaignSpec, src, cobs) -> dict:
    o = cobs.stages["elastic"].result()
    passes, inconsistent = _gates(spec, o)
    row = {
        "set": src.set_name,
        "candidate": src.cand_id,
        "relpath": f"{src.set_name}/{src.cand_id}",
        "campaign": spec.manifest.campaign.name,
        "formula": cobs.record.formula,
        "structure_sha256": cobs.stages["relax"].result().structure_sha256 if "relax" in cobs.stages else None,
        "fit_rms_gpa": o.fit_rms_gpa,
        "min_eigenvalue_gpa": o.min_eigenvalue_gpa,
        "pass_fit_rms": passes["pass_fit_rms"],
        "pass_pd": passes["pass_pd"],
        "pass_both": passes["pass_fit_rms"] and passes["pass_pd"],
        "inconsistent_gates": inconsistent,
        "b_h_gpa": o.b_h_gpa,
        "g_h_gpa": o.g_h_gpa,
        "e_h_gpa": o.e_h_gpa,
        "poisson_h": o.poisson_h,
        "complete": o.complete,
    }
    row["flags"] = physics_flags(row)
    return row


def _best(spec: CampaignSpec, rows: list[dict]) -> dict | None:
    """The best validated row by the manifest's declared ordering (evidence.best); rows with physics flags,
    inconsistent gates or a missing value are never best. Ties: the first relpath."""
    b = spec.manifest.evidence.best
    pool = [r for r in rows if not r["flags"] and not r["inconsistent_gates"] and r[b.by] is not None
            and (b.require == "none" or r["pass_both"])]
    if not pool:
        return None
    sign = -1 if b.order == "desc" else 1
    r = min(pool, key=lambda r: (sign * r[b.by], r["relpath"]))
    return {"relpath": r["relpath"], "formula": r["formula"], "by": b.by, "order": b.order, "require": b.require,
            "value": r[b.by], "b_h_gpa": r["b_h_gpa"], "g_h_gpa": r["g_h_gpa"], "e_h_gpa": r["e_h_gpa"],
            "poisson_h": r["poisson_h"], "candidates_considered": len(pool)}


def _structure_groups(rows: list[dict], structures: dict) -> dict[str, int]:
    """relpath -> group id: pymatgen's StructureMatcher on the relaxed structures
    (same composition, matching lattice and sites within its default tolerances)."""
    from pymatgen.analysis.structure_matcher import StructureMatcher
    from pymatgen.core import Structure

    with_s = [r for r in rows if structures.get(r["relpath"])]
    objs = [Structure.from_dict(structures[r["relpath"]]) for r in with_s]
    groups = StructureMatcher().group_structures(objs) if objs else []
    gid = {}
    for i, group in enumerate(groups):
        for s in group:
            gid[with_s[next(j for j, o in enumerate(objs) if o is s)]["relpath"]] = i
    return gid


def _dedup_key(row: dict, keys: list[str], groups: dict[str, int]) -> tuple:
    parts = {"campaign": row["campaign"], "relpath": row["relpath"], "structure": groups.get(row["relpath"], row["relpath"])}
    return tuple(parts[k] for k in keys)


def validated_scope(spec: CampaignSpec, rows: list[dict], structures: dict | None = None) -> dict:
    keys = list(spec.manifest.evidence.dedup_keys)
    groups = _structure_groups(rows, structures or {}) if "structure" in keys else {}
    seen, unique = set(), []
    for row in sorted(rows, key=lambda r: (r["set"], r["candidate"])):
        k = _dedup_key(row, keys, groups)
        if k in seen:
            continue
        seen.add(k)
        unique.append(row)
    n = len(unique)
    both = sum(r["pass_both"] for r in unique)
    ci = wilson_interval(both, n)
    cfg = spec.stage_config("elastic") if "elastic" in spec.stages else None
    return {
        "dedup_keys": keys,
        "fit_rms_max_gpa": cfg.fit_rms_max_gpa if cfg else None,
        "pd_min_eigenvalue_gpa": cfg.pd_min_eigenvalue_gpa if cfg else None,
        "inconsistent": sum(bool(r["inconsistent_gates"]) for r in unique),
        "flagged": sum(bool(r["flags"]) for r in unique),
        "best": _best(spec, unique),
        "n": n,
        "duplicates_removed": len(rows) - n,
        "pass_fit_rms": sum(r["pass_fit_rms"] for r in unique),
        "pass_pd": sum(r["pass_pd"] for r in unique),
        "pass_both": both,
        "pass_both_rate": both / n if n else None,
        "pass_both_wilson95": list(ci) if ci else None,
        "rows": unique,
    }
def pass_both_rederived(spec: CampaignSpec, cobs) -> bool:
    """pass_both of an elastic-ready candidate, re-derived from its metrics (see ``_gates``)."""
    passes, _ = _gates(spec, cobs.stages["elastic"].result())
    return passes["pass_fit_rms"] and passes["pass_pd"]
