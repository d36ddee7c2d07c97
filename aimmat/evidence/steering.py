"""Screening-scope blocks that steer the next DFT hours: learning cycles and shortlist conversion per
checkpoint, uncertainty triage, rerun waves; and the declared milestones, evaluated per scope."""

from __future__ import annotations

from aimmat.evidence.stats import wilson_interval
from aimmat.evidence.validated import pass_both_rederived
from aimmat.manifest.load import CampaignSpec
from aimmat.state.scan import Observed


def learning_block(spec: CampaignSpec, observed: Observed, ranking: dict, statuses: dict) -> dict:
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
                m["pass_both"] += pass_both_rederived(spec, observed.candidates[(set_name, row["candidate"])])
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


def triage_block(spec: CampaignSpec, observed: Observed, ranking: dict, statuses: dict) -> dict | None:
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
                b["pass_both"] += pass_both_rederived(spec, observed.candidates[(set_name, row["candidate"])])
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


def waves_block(spec: CampaignSpec, observed: Observed, statuses: dict) -> list[dict]:
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
            pb = ok and pass_both_rederived(spec, cobs)
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

    from aimmat.manifest.steering_specs import MILESTONE_RE

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
