"""Candidate status, derived from stage records (never stored)."""

from __future__ import annotations

from aimmat.manifest import stage_table
from aimmat.state.scan import CandidateObs

STATUSES = ("pending", "relaxdone", "scfdone", "elasticready", "outputpresentnotconverged", "not_converged_settings",
            "failed", "screened_out", "not_shortlisted")
# a failure code that is a candidate status of its own: the ladder's limits were reached, nothing to retry
OWN_STATUS = {"not_converged_settings"}


def candidate_status(cobs: CandidateObs | None, stages: list[str], outside=None, below: str | None = None) -> tuple[str, str]:
    """(status, detail) of one candidate from its records' summaries, walking the stages in order.

    ``outside``: a callable giving the elements of an element set (SEP-joined)
    outside the campaign's palette; a candidate with such an element and no
    screen record saying so (no screen stage) is screened out all the same.
    ``below``: the candidate ranked below its set's final shortlist (rank and
    score, ``aimmat.state.shortlisted.not_shortlisted``): with no engine stage
    begun it is ``not_shortlisted``, not ``pending``.
    """
    if cobs is None or cobs.summary is None:
        return "pending", "not imported"
    status, detail = "pending", ""
    if outside is not None and "screen" not in stages:
        missing = outside(cobs.summary.species)
        if missing:
            return "screened_out", "no_pseudopotential: " + " ".join(missing)
    for stage in stages:
        rec = cobs.summaries.get(stage)
        if rec is None or rec.status == "running":
            break
        if rec.status == "failed":
            code = f"{stage}: {rec.failure_code}"
            if rec.failure_code in OWN_STATUS:
                return rec.failure_code, code
            return ("outputpresentnotconverged" if rec.output_present else "failed"), code
        d = stage_table.get(stage)
        if d.kind == "screen":
            if not rec.strict_pass:
                return "screened_out", ", ".join(rec.failed_list())
            continue
        if d.done_status is not None:
            status, detail = d.done_status, ""
    if below is not None and status == "pending":
        return "not_shortlisted", below
    return status, detail
