"""Ranked sets' shortlists as the records show them (no plan, no engine).

The plan decides what to run (``aimmat.plan.shortlist``, which also checks
keys against the manifest); status, the snapshot and the tables need the
same answer from the records alone: which candidates were ranked, at what
rank and score, and which fell below ``top_k``. A candidate that passed its
screen but ranked below ``top_k`` is ``not_shortlisted`` (DOMAIN.md), not
``pending``: no DFT is coming for it unless the shortlist changes. While any
candidate of the set still waits for its import or screen, the shortlist is
not final and nothing is ``not_shortlisted``.
"""

from __future__ import annotations

from aimmat.manifest.load import CampaignSpec
from aimmat.model.rank import Shortlist, build_shortlist
from aimmat.state.scan import Observed
from aimmat.state.status import candidate_status


def screen_state(cobs, screened: bool) -> str:
    """'eligible' | 'ineligible' | 'waiting' for the shortlist, from the records."""
    if cobs is None or cobs.summary is None:
        return "waiting"
    if not screened:
        return "eligible"
    rec = cobs.summaries.get("screen")
    if rec is None or rec.status == "running" or (rec.status == "failed" and rec.retryable):
        return "waiting"
    return "eligible" if rec.status == "done" and rec.strict_pass else "ineligible"


def recorded_shortlists(spec: CampaignSpec, observed: Observed) -> dict[str, tuple[Shortlist, list]]:
    """set name -> (Shortlist, [((cand_id, screen state), candidate record or None)]) for every ranked set."""
    out = {}
    screened = "screen" in spec.stages
    for cset in spec.manifest.candidate_sets:
        if cset.rank is None:
            continue
        per = []
        for src in spec.candidates:
            if src.set_name == cset.name:
                cobs = observed.candidates.get((src.set_name, src.cand_id))
                per.append(((src.cand_id, screen_state(cobs, screened)), cobs.record if cobs else None))
        top_k = cset.rank.top_k or len(per)
        sl = build_shortlist(top_k, cset.rank.weights, [(e[0], e[1], r.prediction if r else None) for e, r in per])
        out[cset.name] = (sl, per)
    return out


def not_shortlisted(shortlists: dict[str, tuple[Shortlist, list]]) -> dict[tuple[str, str], str]:
    """(set, cand_id) -> "rank r of n, score s, top_k k" for every ranked candidate below its set's final shortlist."""
    out = {}
    for set_name, (sl, _) in shortlists.items():
        if sl.waiting:
            continue
        for cid, (rank, sc) in sl.ranks.items():
            if rank > sl.top_k:
                out[(set_name, cid)] = f"rank {rank} of {len(sl.ranks)}, score {sc:.3f}, top_k {sl.top_k}"
    return out


def candidate_statuses(spec: CampaignSpec, observed: Observed, outside=None) -> dict[tuple[str, str], tuple[str, str]]:
    """(set, cand_id) -> (status, detail) of every candidate of the manifest, not_shortlisted included."""
    below = not_shortlisted(recorded_shortlists(spec, observed))
    return {(s.set_name, s.cand_id): candidate_status(observed.candidates.get((s.set_name, s.cand_id)), spec.stages, outside,
                                                      below.get((s.set_name, s.cand_id)))
            for s in spec.candidates}
