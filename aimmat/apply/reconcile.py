"""Close journal entries a crash left open, from what the records say.

Record first, journal second: after a SIGKILL the records are the truth and
the journal is brought in line with them by the next apply.
"""

from __future__ import annotations

from pathlib import Path

from aimmat.state import journal
from aimmat.state.scan import Observed


def reconcile_journal(campaign_dir: Path, observed: Observed) -> str | None:
    """Close journal entries a crash left open, from what the records say.

    Lines of the journal that are not events are passed over (the records
    are the truth); returns the warning naming them for the user, or None.
    """
    events = journal.read(campaign_dir)
    open_ = journal.open_attempts(events)
    started = {journal.attempt_id(e) for e in events if e.get("event") == "stage_start"}
    for (s, c), cobs in observed.candidates.items():
        for stage, rec in cobs.stages.items():
            for att in rec.attempts:
                k = (s, c, stage, att.n)
                if att.status == "running" and k not in started:
                    journal.append(campaign_dir, "stage_start", set=s, cand=c, stage=stage, key=att.key, attempt=att.n, recovered=True)
                    open_[k] = {}
                if k not in open_:
                    continue
                if att.status == "running":
                    journal.append(campaign_dir, "stage_interrupted", set=s, cand=c, stage=stage, key=att.key, attempt=att.n)
                elif att.status == "done":
                    journal.append(campaign_dir, "stage_done", set=s, cand=c, stage=stage, key=att.key, attempt=att.n, recovered=True)
                else:
                    final = rec.status == "failed" and att.n == rec.attempts[-1].n
                    journal.append(campaign_dir, "stage_failed", set=s, cand=c, stage=stage, key=att.key, attempt=att.n, failure_code=att.failure_code, final=final, recovered=True)
                open_.pop(k)
    for k in open_:  # started in the journal, never reached a record
        journal.append(campaign_dir, "stage_interrupted", set=k[0], cand=k[1], stage=k[2], attempt=k[3],
                       key=key if isinstance(key := open_[k].get("key"), str) else "")
    return events.warning()
