"""Ranked sets: which candidates the first engine stage runs for.

A set with ``rank.top_k`` shortlists its best screen passes by the model's
predicted tensor (``aimmat.model.rank.build_shortlist``); the shortlist
waits until every candidate of the set is imported and screened.
"""

from __future__ import annotations

from collections.abc import Callable, Collection

from aimmat.model.rank import build_shortlist
from aimmat.plan.actions import PENDING, Action, StageAction
from aimmat.plan.candidate import plan_candidate
from aimmat.resolve import Resolved


def shortlist_entry(actions: list[StageAction]) -> tuple[str, str]:
    """(cand_id, 'eligible' | 'ineligible' | 'waiting') from a candidate's import and screen actions."""
    by = {a.stage: a for a in actions}
    last = by.get("screen", by["import"])
    if last.action == Action.KEEP and last.state == "done":
        return last.cand_id, "eligible"
    if last.action in PENDING or last.state == "running" or by["import"].action in PENDING:
        return last.cand_id, "waiting"
    return last.cand_id, "ineligible"


def set_shortlist(res: Resolved, set_name: str, observe: Callable, replace: frozenset[str] = frozenset(),
                  alive: Collection = frozenset()):
    """The set's Shortlist (None if the set has no top_k), from each
    candidate's import and screen actions; ``observe(src)`` gives a
    candidate's records (CandidateObs or None)."""
    rank = res.ranked.get(set_name)
    if rank is None:
        return None
    entries = []
    for src in res.spec.candidates:
        if src.set_name == set_name:
            cobs = observe(src)
            cid, state = shortlist_entry(plan_candidate(res, src, cobs, replace=replace, alive=alive))
            rec = cobs.record if cobs else None  # the prediction: decoded for ranked sets only
            entries.append((cid, state, rec.prediction if rec is not None else None))
    return build_shortlist(rank.top_k, rank.weights, entries)


def shortlists(res: Resolved, observed, replace: frozenset[str] = frozenset()) -> dict:
    """Every ranked set's Shortlist from one observed state."""
    get = observed.candidates.get
    return {name: set_shortlist(res, name, lambda src: get((src.set_name, src.cand_id)), replace, observed.alive)
            for name in res.ranked}
