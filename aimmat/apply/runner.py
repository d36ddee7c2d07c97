"""One stage task in a worker: attempts, retry ladder, records, journal.

Write order per attempt: record (running) -> journal start -> work ->
record (done/failed) -> journal end. The record is the truth; the journal
is reconciled from it after a crash.
"""

from __future__ import annotations

import os
import shutil
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

from pymatgen.core import Structure

from aimmat.state import journal
from aimmat.state.atomic import write_json_atomic
from aimmat.state.procs import HOST, pid_start_tick
from aimmat.state.records import Attempt, CandidateRecord, StageRecord
from aimmat.state.layout import CANDIDATE_FILE, RECORD_FILE
from aimmat.state.scan import read_stage_record
from aimmat.stages.base import StageOutcome, load_stage_fn


@dataclass
class StageTask:
    campaign_dir: str
    set_name: str
    cand_id: str
    stage: str
    key: str
    key_inputs: dict
    run: str | None = None  # "module:function" of the stage (aimmat.manifest.stage_table)
    structure: dict | None = None
    stage_cfg: dict | None = None
    profile: dict | None = None
    max_attempts: int = 1
    candidate: dict | None = None  # import only: the CandidateRecord to write


@dataclass
class TaskResult:
    set_name: str
    cand_id: str
    stage: str
    status: str
    failure_code: str | None = None
    message: str | None = None
    attempts: int = 0


def _ev(task: StageTask, event: str, **kw) -> None:
    journal.append(Path(task.campaign_dir), event, set=task.set_name, cand=task.cand_id, stage=task.stage, key=task.key, **kw)


def run_task(task: StageTask) -> TaskResult:
    if task.stage == "import":
        return _run_import(task)
    return _run_stage(task)


def _run_import(task: StageTask) -> TaskResult:
    rec = CandidateRecord.model_validate(task.candidate)
    cdir = Path(task.campaign_dir) / task.set_name / task.cand_id
    write_json_atomic(cdir / CANDIDATE_FILE, rec.model_dump(mode="json"))
    journal.append(Path(task.campaign_dir), "candidate_imported", set=task.set_name, cand=task.cand_id, key=task.key, source=rec.provenance.get("path"))
    return TaskResult(task.set_name, task.cand_id, "import", "done", attempts=1)


def _now() -> str:
    return journal.now_iso()


def _run_stage(task: StageTask) -> TaskResult:
    sdir = Path(task.campaign_dir) / task.set_name / task.cand_id / task.stage
    sdir.mkdir(parents=True, exist_ok=True)
    rec_path = sdir / RECORD_FILE
    old = read_stage_record(rec_path)
    attempts = [a.model_copy() for a in old.attempts] if old else []
    resumed = False
    for a in attempts:
        if a.status == "running":  # the process that ran it is gone
            a.status, a.ended, a.message = "interrupted", a.ended or _now(), "process gone; resumed by a later apply"
            resumed = True
    previous = None
    intervention = None
    if old and old.key == task.key and old.outputs and old.status != "done":
        previous = StageOutcome(ok=False, outputs=old.outputs)
        intervention = "resume from last recorded output"
    elif resumed:
        intervention = "resume after interruption"
    structure = Structure.from_dict(task.structure)
    fn = load_stage_fn(task.run)
    pid, tick = os.getpid(), pid_start_tick(os.getpid())

    while True:
        n = max((a.n for a in attempts), default=0) + 1
        adir = sdir / f"attempt-{n}"
        if adir.exists():  # left by a crash before its record was written: unrecorded, so not evidence
            shutil.rmtree(adir)
        att = Attempt(n=n, key=task.key, started=_now(), status="running", intervention=intervention)
        base = dict(stage=task.stage, key=task.key, key_inputs=task.key_inputs, host=HOST, pid=pid, pid_start=tick)
        write_json_atomic(rec_path, StageRecord(**base, status="running", attempts=attempts + [att], outputs=previous.outputs if previous else {}).model_dump(mode="json"))
        _ev(task, "stage_start", attempt=n, intervention=intervention)
        t0 = time.perf_counter()
        try:
            outcome = fn(structure, task.stage_cfg or {}, task.profile, adir, previous)
        except Exception as exc:  # a bug or an engine crash: recorded, never swallowed silently
            outcome = StageOutcome(ok=False, failure_code="crash", message=f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=3)}")
        att.ended, att.wall_s = _now(), round(time.perf_counter() - t0, 3)
        att.status = "done" if outcome.ok else "failed"
        att.failure_code, att.message = outcome.failure_code, outcome.message
        attempts.append(att)
        adir.mkdir(parents=True, exist_ok=True)
        write_json_atomic(adir / "outcome.json", {"ok": outcome.ok, "failure_code": outcome.failure_code, "message": outcome.message, "outputs": outcome.outputs})

        if outcome.ok:
            write_json_atomic(rec_path, StageRecord(**base, status="done", attempts=attempts, output_present=True, outputs=outcome.outputs).model_dump(mode="json"))
            _ev(task, "stage_done", attempt=n)
            return TaskResult(task.set_name, task.cand_id, task.stage, "done", attempts=len(attempts))

        tries = sum(1 for a in attempts if a.key == task.key and a.status == "failed")
        retry = outcome.retryable and tries < task.max_attempts
        rec = StageRecord(
            **base,
            status="running" if retry else "failed",
            attempts=attempts,
            failure_code=outcome.failure_code,
            output_present=outcome.output_present,
            retryable=outcome.retryable,
            outputs=outcome.outputs,
        )
        write_json_atomic(rec_path, rec.model_dump(mode="json"))
        _ev(task, "stage_failed", attempt=n, failure_code=outcome.failure_code, final=not retry)
        if not retry:
            return TaskResult(task.set_name, task.cand_id, task.stage, "failed", outcome.failure_code, outcome.message, len(attempts))
        previous, intervention = outcome, outcome.next_intervention
