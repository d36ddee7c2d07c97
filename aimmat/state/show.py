"""`aimmat status`: candidates by derived status, per set."""

from __future__ import annotations

from aimmat.manifest.load import CampaignSpec
from aimmat.state.scan import Observed
from aimmat.state.shortlisted import not_shortlisted, recorded_shortlists
from aimmat.state.status import STATUSES, candidate_status


def status_table(spec: CampaignSpec, observed: Observed, outside=None) -> dict:
    """Counts and rows by status; ``outside``: see ``candidate_status``."""
    sets = {s: {st: 0 for st in STATUSES} for s in spec.sets()}
    rows = []
    below = not_shortlisted(recorded_shortlists(spec, observed))
    for src in spec.candidates:
        cobs = observed.candidates.get((src.set_name, src.cand_id))
        st, detail = candidate_status(cobs, spec.stages, outside, below.get((src.set_name, src.cand_id)))
        sets[src.set_name][st] += 1
        formula = cobs.summary.formula if cobs is not None and cobs.summary is not None else None
        row = {"set": src.set_name, "candidate": src.cand_id, "formula": formula, "status": st, "detail": detail}
        if st == "elasticready":
            o = cobs.stages["elastic"].result()
            row["elastic"] = {k: getattr(o, k) for k in ("b_h_gpa", "g_h_gpa", "e_h_gpa", "poisson_h", "fit_rms_gpa", "pass_pd", "min_eigenvalue_gpa")}
        rows.append(row)
    total = {st: sum(v[st] for v in sets.values()) for st in STATUSES}
    return {"campaign": str(spec.campaign_dir), "stages": spec.stages, "sets": sets, "total": total, "candidates": rows}


def format_status(table: dict, *, verbose: bool = False) -> str:
    cols = list(STATUSES)
    width = max(len(s) for s in list(table["sets"]) + ["total"]) + 2
    head = "set".ljust(width) + "".join(c.rjust(max(len(c), 5) + 2) for c in cols) + "  all".rjust(7)
    lines = [f"campaign {table['campaign']}  (stages: {', '.join(table['stages'])})", head]
    for name, counts in list(table["sets"].items()) + [("total", table["total"])]:
        row = name.ljust(width) + "".join(str(counts[c]).rjust(max(len(c), 5) + 2) for c in cols)
        lines.append(row + str(sum(counts.values())).rjust(7))
    tri = table.get("triage")
    if tri:
        lines.append("")
        lines.append(f"uncertainty triage (bins {', '.join(map(str, tri['bins_dex']))} dex, {tri['bins_source']}): "
                     "shortlisted -> elastic-ready -> pass_both per bin")
        for m in tri["models"]:
            cells = [f"{b['label']}: {b['shortlisted']} -> {b['elasticready']} -> {b['pass_both']}" for b in m["bins"]]
            lines.append(f"  {m['model']:10s} " + "   ".join(cells))
    if table.get("milestones"):
        met = sum(m["met"] for m in table["milestones"])
        lines.append("")
        lines.append(f"milestones: {met} of {len(table['milestones'])} met")
        for m in table["milestones"]:
            lines.append(f"  {m['name']:10s} {'met' if m['met'] else 'NOT met':8s} {m['expression']}  ({m['why']})")
    if verbose:
        lines.append("")
        for r in table["candidates"]:
            detail = f"  ({r['detail']})" if r["detail"] else ""
            if "elastic" in r:
                e = r["elastic"]
                pd = "PD" if e["pass_pd"] else "NOT PD (moduli flagged)"
                detail = (f"  B_H {e['b_h_gpa']:.1f}  G_H {e['g_h_gpa']:.1f}  E_H {e['e_h_gpa']:.1f} GPa  "
                          f"nu {e['poisson_h']:.3f}  fit RMS {e['fit_rms_gpa']:.3f} GPa  {pd}")
            lines.append(f"  {r['set'] + '/' + r['candidate']:22s} {r['formula'] or '-':8s} {r['status']:13s}{detail}")
    return "\n".join(lines)
