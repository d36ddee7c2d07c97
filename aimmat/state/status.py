"""Candidate status, derived from stage records (never stored)."""

from __future__ import annotations

from aimmat.manifest import stage_table
from aimmat.state.scan import CandidateObs

STATUSES = ("pending", "relaxdone", "scfdone", "elasticready", "outputpresentnotconverged", "failed", "screened_out")


def candidate_status(cobs: CandidateObs | None, stages: list[str]) -> tuple[str, str]:
    """(status, detail) of one candidate from its records' summaries, walking the stages in order."""
    if cobs is None or cobs.summary is None:
        return "pending", "not imported"
    status, detail = "pending", ""
    for stage in stages:
        rec = cobs.summaries.get(stage)
        if rec is None or rec.status == "running":
            break
        if rec.status == "failed":
            code = f"{stage}: {rec.failure_code}"
            return ("outputpresentnotconverged" if rec.output_present else "failed"), code
        d = stage_table.get(stage)
        if d.kind == "screen":
            if not rec.strict_pass:
                return "screened_out", ", ".join(rec.failed_list())
            continue
        if d.done_status is not None:
            status, detail = d.done_status, ""
    return status, detail
