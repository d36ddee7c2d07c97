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
from aimmat.evidence.steering import learning_block, triage_block, waves_block, milestones
from aimmat.evidence.validated import validated_scope, validated_row
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
    screening["learning"] = learning_block(spec, observed, screening["ranking"], statuses)
    screening["triage"] = triage_block(spec, observed, screening["ranking"], statuses)
    screening["waves"] = waves_block(spec, observed, statuses)
    screening["overall"] = block(sum(by_set.values(), Counter()), sum(coverage.values(), Counter()),
                                 sum(failures.values(), Counter()), sum(n_by_set.values()))
    validated = validated_scope(spec, rows, relaxed)
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
