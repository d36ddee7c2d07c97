"""The evidence snapshot: numbers by scope, from records only.

Three scopes never mix (DOMAIN.md): ``public`` (project scale), ``screening``
(the cohort under DFT) and ``validated`` (the de-duplicated elastic-ready
subset). The snapshot carries the manifest hash and a hash of the records
it read; its time stamp is the newest record event it saw, so computing it
twice from the same folder gives the same bytes.
"""

from __future__ import annotations

import functools
from collections import Counter

from aimmat import __version__
from aimmat.evidence.stats import wilson_interval
from aimmat.identity import sha256_json
from aimmat.manifest.load import CampaignSpec
from aimmat.manifest import stage_table
from aimmat.state.scan import Observed
from aimmat.state.shortlisted import not_shortlisted, recorded_shortlists
from aimmat.state.status import STATUSES, candidate_status


def _latest_time(observed: Observed) -> str | None:
    times = [a.ended or a.started for co in observed.candidates.values() for rec in co.stages.values() for a in rec.attempts]
    return max(times) if times else None


def _records_digest(observed: Observed) -> str:
    keys = sorted((s, c, st, rec.key, rec.status) for (s, c), co in observed.candidates.items() for st, rec in co.stages.items())
    cands = sorted((s, c, co.record.key) for (s, c), co in observed.candidates.items() if co.record)
    return sha256_json({"stages": [list(k) for k in keys], "candidates": [list(c) for c in cands]})


def _outside(spec: CampaignSpec):
    """(outside callable or None, palette as recorded) for candidate_status.

    Without a screen stage nothing in the records says a candidate's element
    is uncovered (the plan only blocks it): the palette is then read from the
    manifest, or derived from the pseudopotential folders as ``status`` does.
    A folder that cannot be read here (evidence on another machine) leaves
    such candidates pending, and the snapshot says the palette is unknown."""
    from aimmat.errors import AimmatError
    from aimmat.resolve.palette import campaign_palette
    from aimmat.state.summary import SEP

    if "screen" in spec.stages:
        return None, None
    try:
        pal = campaign_palette(spec)
    except AimmatError:
        return None, "unknown (pseudopotential folders unreadable here)"
    if pal.elements is None:
        return None, None
    return (lambda sp: pal.outside(sp.split(SEP)) if sp else []), pal.key_value()


def snapshot(spec: CampaignSpec, observed: Observed) -> dict:
    """The snapshot of ``observed`` for ``spec``: records and the manifest
    only (no engine, no plan; the pseudopotential folders only when a chain
    without a screen needs the palette, see ``_outside``)."""
    stages = spec.stages
    outside, palette = _outside(spec)
    coverage_stages = stage_table.coverage_stages()
    sets = spec.sets()
    by_set = {s: Counter() for s in sets}
    coverage = {s: Counter() for s in sets}
    failures = {s: Counter() for s in sets}
    rows, reruns, relaxed, statuses = [], [], {}, {}
    shortlists = recorded_shortlists(spec, observed)
    below = not_shortlisted(shortlists)
    for src in spec.candidates:
        cobs = observed.candidates.get((src.set_name, src.cand_id))
        st, _ = candidate_status(cobs, stages, outside, below.get((src.set_name, src.cand_id)))
        statuses[(src.set_name, src.cand_id)] = st
        by_set[src.set_name][st] += 1
        if cobs:
            for stage in coverage_stages:
                rec = cobs.stages.get(stage)
                if rec is not None and rec.output_present:
                    coverage[src.set_name][stage] += 1
                if rec is not None and rec.status == "failed":
                    failures[src.set_name][rec.failure_code or "unknown"] += 1
        if st == "elasticready":
            rows.append(validated_row(spec, src, cobs))
            relaxed[f"{src.set_name}/{src.cand_id}"] = cobs.stages["relax"].result().structure if "relax" in cobs.stages else None
        elif st == "outputpresentnotconverged":
            reruns.append(_rerun_row(src, cobs, stages))

    def block(counts: Counter, cov: Counter, fail: Counter, n: int) -> dict:
        return {
            "candidates": n,
            "status": {k: counts[k] for k in STATUSES},
            "coverage": {f"{k}_outputs": cov[k] for k in coverage_stages} | {
                f"{k}_rate": (cov[k] / n if n else None) for k in coverage_stages},
            "failures": dict(sorted(fail.items())),
        }

    n_by_set = {s: sum(by_set[s].values()) for s in sets}
    screening = {"sets": {s: block(by_set[s], coverage[s], failures[s], n_by_set[s]) for s in sets}}
    screening["rerun_priority"] = reruns
    screening["palette_for_status"] = palette  # None: the screen's records decide
    screening["ablations"] = _ablations(spec, observed)
    screening["ranking"] = _ranking(spec, shortlists)
    screening["learning"] = _learning(spec, observed, screening["ranking"], statuses)
    screening["triage"] = _triage(spec, observed, screening["ranking"], statuses)
    screening["waves"] = _waves(spec, observed, statuses)
    screening["overall"] = block(sum(by_set.values(), Counter()), sum(coverage.values(), Counter()),
                                 sum(failures.values(), Counter()), sum(n_by_set.values()))
    validated = _validated(spec, rows, relaxed)
    public = _public(spec, observed)
    scopes = {"public": public, "screening": screening, "validated": validated}
    # each milestone reads one scope and is reported inside it: a template of that scope can show it
    evaluated = milestones(spec, scopes)
    for name in scopes:
        scopes[name]["milestones"] = [r for r in evaluated if r["scope"] == name]
    return {
        "aimmat": __version__,
        "campaign": spec.manifest.campaign.name,
        "as_of": _latest_time(observed),
        "manifest_sha256": spec.sha256,
        "records_sha256": _records_digest(observed),
        "scopes": scopes,
        "protocol": _protocol(spec, observed),
    }


def _public(spec: CampaignSpec, observed: Observed) -> dict:
    """Project scale from records only: structures in the campaign, those the model generated (their import
    records' provenance), and MPContribs contributions from the publish records (never from the manifest)."""
    from aimmat.state.publish_records import count_payloads, read_records

    wanted = {(s.set_name, s.cand_id) for s in spec.candidates}
    recs = [co.record for k, co in observed.candidates.items() if k in wanted and co.record is not None]
    project = spec.manifest.publish.project if spec.manifest.publish is not None else None
    pub = read_records(spec.campaign_dir, project) if project is not None else []
    return {"structures": len(recs), "generated": sum(1 for r in recs if (r.provenance or {}).get("kind") == "generator"),
            "contributions_prepared": count_payloads(spec.campaign_dir, project) if project is not None else 0,
            "contributions_uploaded": len(pub), "contributions_with_structures": sum(1 for r in pub if r.get("structures")),
            "project": project}


def _ranking(spec: CampaignSpec, shortlists: dict) -> dict:
    """Per ranked set: the model's predicted moduli, score, rank and whether
    the candidate made the shortlist (predictions, not validated results)."""
    from aimmat.model.rank import score

    out = {}
    for cset in spec.manifest.candidate_sets:
        if cset.rank is None:
            continue
        sl, per = shortlists[cset.name]
        top_k = sl.top_k
        rows = []
        for (cid, state), rec in per:
            if rec is None or rec.prediction is None:
                continue
            p = rec.prediction
            rank = sl.ranks.get(cid, (None, None))[0]
            rows.append({"candidate": cid, "formula": rec.formula, "k_vrh_pred_gpa": p["k_vrh_gpa"],
                         "g_vrh_pred_gpa": p["g_vrh_gpa"], "uncertainty_dex": round(p["terms"]["uncertainty"], 4),
                         "uncertainty_source": p.get("uncertainty_source", "ensemble_spread"),
                         "pd_margin_pred_gpa": p["pd_margin_gpa"], "score": round(score(p, cset.rank.weights), 4),
                         "screen": {"eligible": "pass", "ineligible": "fail"}.get(state, "pending"), "rank": rank,
                         "shortlisted": bool(rank is not None and rank <= top_k and not sl.waiting)})
        rows.sort(key=lambda r: (r["rank"] is None, r["rank"] or 0, r["candidate"]))
        out[cset.name] = {"model": cset.rank_model(), "weights": dict(cset.rank.weights), "top_k": cset.rank.top_k,
                          "waiting": len(sl.waiting), "rows": rows}
    return out


def _learning(spec: CampaignSpec, observed: Observed, ranking: dict, statuses: dict) -> dict:
    """Learning cycles (their records under <campaign>/learning/) and, per checkpoint that ranked a set, how
    its shortlists converted: shortlisted -> elastic-ready -> pass_both, with Wilson intervals (screening
    scope: the cohort a model sent to DFT). A cycle's child ranking the next shortlist is the "after"."""
    from aimmat.candidates.learning import records

    cycles = []
    for r in records(spec.campaign_dir):
        lf = r.get("learned_from") or {}
        cycles.append({"name": r.get("name"), "parent_sha256": r.get("parent_sha256"),
                       "child_sha256": r.get("child_sha256"), "policy_sha256": r.get("policy_sha256"),
                       "learned_tensors": len(lf.get("tensors", [])), "seek": len(lf.get("seek", [])),
                       "avoid": len(lf.get("avoid", [])), "holdout": len(r.get("holdout", [])),
                       "holdout_before": r.get("holdout_before"), "holdout_after": r.get("holdout_after")})
    by_model: dict[str, dict] = {}
    for set_name, rk in ranking.items():
        model = rk["model"]
        m = by_model.setdefault(model, {"model": model, "checkpoint_sha256": spec.manifest.models[model].sha256.lower(),
                                        "sets": [], "ranked": 0, "screen_pass": 0, "shortlisted": 0, "elasticready": 0,
                                        "pass_both": 0})
        m["sets"].append(set_name)
        for row in rk["rows"]:
            m["ranked"] += 1
            m["screen_pass"] += row["screen"] == "pass"
            if not row["shortlisted"]:
                continue
            m["shortlisted"] += 1
            if statuses[(set_name, row["candidate"])] == "elasticready":
                m["elasticready"] += 1
                m["pass_both"] += _pass_both(spec, observed.candidates[(set_name, row["candidate"])])
    for m in by_model.values():
        ci = wilson_interval(m["screen_pass"], m["ranked"])
        m["screen_pass_rate"], m["screen_pass_wilson95"] = (m["screen_pass"] / m["ranked"] if m["ranked"] else None,
                                                            list(ci) if ci else None)
        n = m["shortlisted"]
        for k in ("elasticready", "pass_both"):
            m[f"{k}_rate"] = m[k] / n if n else None
            ci = wilson_interval(m[k], n)
            m[f"{k}_wilson95"] = list(ci) if ci else None
    children = {c["child_sha256"]: c["name"] for c in cycles}
    for m in by_model.values():
        m["learned_in_cycle"] = children.get(m["checkpoint_sha256"])
    return {"cycles": cycles, "shortlist_conversion": list(by_model.values())}


def _pass_both(spec: CampaignSpec, cobs) -> bool:
    """pass_both of an elastic-ready candidate, re-derived from its metrics (see ``_gates``)."""
    passes, _ = _gates(spec, cobs.stages["elastic"].result())
    return passes["pass_fit_rms"] and passes["pass_pd"]


def _triage(spec: CampaignSpec, observed: Observed, ranking: dict, statuses: dict) -> dict | None:
    """Uncertainty triage (evidence.triage): per ranking checkpoint (uncertainties of two models are not on one
    scale), its shortlisted candidates binned by the ranking's uncertainty term, and per bin how many reached
    elastic-ready and pass_both, with Wilson intervals. Does the model's own uncertainty say where DFT hours
    convert? (screening scope: the cohort sent to DFT)"""
    from aimmat.state.shortlist_freeze import read as read_frozen_shortlists

    spec_t = spec.manifest.evidence.triage
    if spec_t is None:
        return None
    # the bins frozen with the first final shortlist of a ranked set (apply records them); the manifest's only
    # while no shortlist is frozen
    firsts = [e for s in ranking for e in read_frozen_shortlists(spec.campaign_dir, s)[:1]]
    frozen = [e for e in firsts if e.get("triage_bins_dex")]
    first = min(frozen, key=lambda e: e.get("triage_bins_frozen_at") or e["frozen_at"]) if frozen else None
    bins_dex = list(first["triage_bins_dex"]) if first else list(spec_t.bins_dex)
    if first and first.get("triage_bins_frozen_at"):
        source = (f"recorded at {first['triage_bins_frozen_at']}, after the shortlist was frozen at {first['frozen_at']}: "
                  "declared once conversions could be known, not pre-registered")
    elif first:
        source = f"frozen with the shortlist at {first['frozen_at']}"
    elif firsts:
        source = (f"the manifest, declared after the shortlist was frozen at {min(e['frozen_at'] for e in firsts)}: "
                  "not pre-registered (the next apply records them)")
    else:
        source = "the manifest (no shortlist frozen yet)"
    edges = [0.0] + bins_dex + [None]
    by_model: dict[str, dict] = {}
    for set_name, rk in ranking.items():
        model = rk["model"]
        m = by_model.get(model)
        if m is None:
            m = by_model[model] = {
                "model": model, "checkpoint_sha256": spec.manifest.models[model].sha256.lower(), "sets": [],
                "shortlisted": 0,
                "bins": [{"lo_dex": lo, "hi_dex": hi, "label": f"[{lo:g}, {hi:g})" if hi is not None else f">= {lo:g}",
                          "shortlisted": 0, "elasticready": 0, "pass_both": 0, "candidates": []}
                         for lo, hi in zip(edges, edges[1:])]}
        m["sets"].append(set_name)
        for row in rk["rows"]:
            if not row["shortlisted"]:
                continue
            u = row["uncertainty_dex"]
            b = next(b for b in m["bins"] if b["hi_dex"] is None or u < b["hi_dex"])
            m["shortlisted"] += 1
            b["shortlisted"] += 1
            b["candidates"].append(f"{set_name}/{row['candidate']}")
            if statuses[(set_name, row["candidate"])] == "elasticready":
                b["elasticready"] += 1
                b["pass_both"] += _pass_both(spec, observed.candidates[(set_name, row["candidate"])])
    for m in by_model.values():
        for b in m["bins"]:
            n = b["shortlisted"]
            for k in ("elasticready", "pass_both"):
                b[f"{k}_rate"] = b[k] / n if n else None
                ci = wilson_interval(b[k], n)
                b[f"{k}_wilson95"] = list(ci) if ci else None
    return {"bins_dex": bins_dex, "bins_source": source, "uncertainty": "the ranking's uncertainty term (dex)",
            "manifest_bins_dex": list(spec_t.bins_dex),
            "manifest_bins_ignored": list(spec_t.bins_dex) != bins_dex, "models": list(by_model.values())}


def _waves(spec: CampaignSpec, observed: Observed, statuses: dict) -> list[dict]:
    """Per declared wave: its frozen policy and selection, how many of the selected it converted to elastic-ready
    and pass_both (Wilson intervals), and for each candidate the attempts the wave triggered with their
    interventions: a conversion is attributed to what those attempts changed."""
    from aimmat.errors import AimmatError
    from aimmat.state.waves import read_frozen

    out = []
    for w in spec.manifest.waves:
        try:
            rec = read_frozen(spec, w.name)
        except AimmatError as exc:
            out.append({"name": w.name, "frozen": False, "error": str(exc)})
            continue
        if rec is None:
            out.append({"name": w.name, "frozen": False})
            continue
        rows, ran, ready, both = [], 0, 0, 0
        for sel in rec.get("selected", []):
            s, c = sel["candidate"].split("/", 1)
            cobs = observed.candidates.get((s, c))
            srec = cobs.stages.get(sel["stage"]) if cobs else None
            atts = [a for a in (srec.attempts if srec else []) if a.wave == w.name]
            now = statuses.get((s, c), "pending")
            ok = now == "elasticready"
            pb = ok and _pass_both(spec, cobs)
            ran += bool(atts)
            ready += ok
            both += pb
            rows.append({"candidate": sel["candidate"], "stage": sel["stage"], "before": sel["failure_code"] or sel["status"],
                         "now": now, "pass_both": pb, "attempts": len(atts),
                         "interventions": [a.intervention for a in atts if a.intervention],
                         "converted_by": next((a.intervention for a in reversed(atts) if a.status == "done"), None)})
        n = len(rows)
        row = {"name": w.name, "frozen": True, "frozen_at": rec.get("frozen_at"), "policy_sha256": rec.get("policy_sha256"),
               "intervention": rec.get("intervention"), "selected": n, "ran": ran, "elasticready": ready, "pass_both": both,
               "candidates": rows}
        for k in ("elasticready", "pass_both"):
            row[f"{k}_rate"] = row[k] / n if n else None
            ci = wilson_interval(row[k], n)
            row[f"{k}_wilson95"] = list(ci) if ci else None
        out.append(row)
    return out


def _lookup(scope: dict, keys: list[str]):
    """The value at ``keys`` in a scope block (dict keys; digits index lists), or raise KeyError naming the step."""
    cur = scope
    for i, k in enumerate(keys):
        if isinstance(cur, dict) and k in cur:
            cur = cur[k]
        elif isinstance(cur, list) and k.isdigit() and int(k) < len(cur):
            cur = cur[int(k)]
        else:
            raise KeyError(".".join(keys[: i + 1]))
    return cur


def milestones(spec: CampaignSpec, scopes: dict) -> list[dict]:
    """Each declared milestone, evaluated against its one scope: met / not met with the figure that decides it.
    A path that is not in the snapshot is not met, and says so (a typo must not read as "not yet")."""
    import operator

    from aimmat.manifest.models import MILESTONE_RE

    ops = {">=": operator.ge, "<=": operator.le, ">": operator.gt, "<": operator.lt, "==": operator.eq, "!=": operator.ne}
    out = []
    for name, expr in spec.manifest.milestones.items():
        m = MILESTONE_RE.match(expr)  # checked when the manifest was loaded
        scope, keys = m.group(1), m.group(2).lstrip(".").split(".")
        row = {"name": name, "expression": expr, "scope": scope, "figure": None, "met": False, "why": ""}
        try:
            value = _lookup(scopes[scope], keys)
        except KeyError as exc:
            row["why"] = f"{scope}.{exc.args[0]} is not in the snapshot"
            out.append(row)
            continue
        if m.group(5):  # present: there, and not empty
            row["met"] = value is not None and value != [] and value != {}
            row["figure"] = "present" if row["met"] else "absent"
            row["why"] = f"{scope}.{'.'.join(keys)} {'is' if row['met'] else 'is not'} present"
        elif isinstance(value, bool) or not isinstance(value, (int, float)):
            row["why"] = f"{scope}.{'.'.join(keys)} is {'not a number' if value is not None else 'not computed yet'}"
        else:
            target = float(m.group(4))
            row["figure"] = value
            row["met"] = bool(ops[m.group(3)](value, target))
            row["why"] = f"{value:g} {m.group(3)} {target:g}: {'met' if row['met'] else 'not met'}"
        out.append(row)
    return out


def _ablations(spec: CampaignSpec, observed: Observed) -> dict:
    """Each screen variant's strict-pass rate over the candidates it has
    screened, and the deltas against the first variant, with the candidates
    that flip (a pre-relaxation can make a structure fail criteria it
    passed: a finding, not a bug)."""
    variants = []
    passes: dict[str, dict[str, bool]] = {}
    for a, stage in zip(spec.manifest.ablations, spec.ablation_stages):
        res = {}
        for src in spec.candidates:
            cobs = observed.candidates.get((src.set_name, src.cand_id))
            rec = cobs.stages.get(stage) if cobs else None
            if rec is not None and rec.status == "done":
                res[f"{src.set_name}/{src.cand_id}"] = rec.result().strict_pass
        passes[a.name] = res
        n, k = len(res), sum(res.values())
        ci = wilson_interval(k, n)
        variants.append({"name": a.name, "prerelax_profile": a.screen.prerelax_profile, "n": n, "strict_pass": k,
                         "strict_pass_rate": k / n if n else None, "wilson95": list(ci) if ci else None})
    deltas = []
    if variants:
        base = variants[0]
        for v in variants[1:]:
            common = sorted(set(passes[base["name"]]) & set(passes[v["name"]]))
            b = [passes[base["name"]][c] for c in common]
            o = [passes[v["name"]][c] for c in common]
            deltas.append({
                "variant": v["name"], "baseline": base["name"], "n_common": len(common),
                "delta_rate": (sum(o) - sum(b)) / len(common) if common else None,
                "gained": [c for c, x, y in zip(common, b, o) if y and not x],
                "lost": [c for c, x, y in zip(common, b, o) if x and not y],
            })
    return {"variants": variants, "deltas": deltas}


def _rerun_row(src, cobs, stages) -> dict:
    """A non-converged candidate with output: the cheapest evidence to gain."""
    stage = next(st for st in stages if st in cobs.stages and cobs.stages[st].status == "failed")
    rec = cobs.stages[stage]
    return {
        "set": src.set_name,
        "candidate": src.cand_id,
        "formula": cobs.record.formula,
        "stage": stage,
        "failure_code": rec.failure_code,
        "attempts": [{"n": a.n, "status": a.status, "failure_code": a.failure_code, "intervention": a.intervention}
                     for a in rec.attempts if a.key == rec.key],
    }


def _protocol(spec: CampaignSpec, observed: Observed) -> dict:
    """What the numbers were computed with (not a claim: shown in every scope as meta)."""
    used = {spec.profile_name(st): st for st in spec.stages if stage_table.get(st).kind == "engine"}
    pseudos, engines = {}, set()
    for co in observed.candidates.values():
        for rec in co.stages.values():
            pseudos.update(rec.key_inputs.get("pseudos", {}))
            if "engine" in rec.key_inputs:
                engines.add(rec.key_inputs["engine"])
    profiles = {}
    for name in sorted(used):
        p = spec.manifest.profiles[name].model_dump()
        profiles[name] = {k: v for k, v in p.items() if k not in ("launcher", "pw_command", "min_free_mem_mb")}
    out = {"profiles": profiles, "pseudopotentials_md5": dict(sorted(pseudos.items())), "engines": sorted(engines),
           "stages": {st: spec.stage_config(st).model_dump() for st in spec.stages}}
    if spec.manifest.models:  # checkpoints that generated or ranked candidates
        first = {}
        for i, c in enumerate(spec.manifest.candidate_sets):  # which set uses each model first (Figure 2 draws that one)
            for name in (getattr(c.source, "model", None), c.rank_model() if c.rank is not None else None):
                if name is not None:
                    first.setdefault(name, i)
        out["models"] = {name: {"path": m.path, "sha256": m.sha256.lower(), "hyperparameters": _describe(spec, m),
                                "first_set": first.get(name)}
                         for name, m in sorted(spec.manifest.models.items())}
        out["ranking"] = {c.name: c.rank.model_dump() for c in spec.manifest.candidate_sets if c.rank is not None}
    return out


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


def _describe(spec: CampaignSpec, m) -> dict:
    """The pinned checkpoint's hyperparameters (aimmat.model.checkpoint.describe), read once per file content;
    a file that cannot be read here gives {"error": ...} rather than no snapshot."""
    from aimmat.errors import AimmatError

    import copy

    try:
        return copy.deepcopy(_describe_cached(str((spec.base / m.path).resolve()), m.sha256.lower()))
    except AimmatError as exc:
        return {"error": str(exc)}


@functools.lru_cache(maxsize=16)
def _describe_cached(path: str, sha256: str) -> dict:
    from aimmat.model.checkpoint import describe

    return describe(path)  # the manifest's loader checked the pin; the sha256 keys the cache


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


def _validated(spec: CampaignSpec, rows: list[dict], structures: dict | None = None) -> dict:
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
