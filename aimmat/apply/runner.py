"""One stage task in a worker: attempts, retry ladder, records, journal.

Write order per attempt: record (running) -> journal start -> work ->
record (done/failed) -> journal end. The record is the truth; the journal
is reconciled from it after a crash.

A task that cannot read or write its folder (an OSError: no permission, a
file where a folder should be, a full disk) ends as a failed result with
``io_error`` and the path and errno in its message; a path that goes
through a symlink inside the campaign folder is never written (``symlink``).
An attempt already started is closed in the journal (``stage_interrupted``);
its record, if it got one, still says ``running`` and the next apply resumes it.
"""

from __future__ import annotations

import errno
import os
import shutil
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

from pymatgen.core import Structure

from aimmat.errors import CampaignError
from aimmat.state import journal
from aimmat.state.atomic import write_json_atomic
from aimmat.state.procs import HOST, pid_start_tick
from aimmat.state.records import Attempt, CandidateRecord, StageRecord
from aimmat.state.layout import CANDIDATE_FILE, RECORD_FILE, symlink_in
from aimmat.state.scan import read_stage_record
from aimmat.stages.base import EARLIER_ATTEMPTS, StageOutcome, load_stage_fn


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
    wave: str | None = None  # the frozen rerun wave this run belongs to (aimmat.state.waves)
    intervention: str | None = None  # what the first attempt changes (a wave's overrides)


@dataclass
class TaskResult:
    set_name: str
    cand_id: str
    stage: str
    status: str
    failure_code: str | None = None
    message: str | None = None
    attempts: int = 0


IO_FAILURES = frozenset({"io_error", "symlink"})  # the folder, not the stage, failed


class SymlinkRefused(CampaignError):
    """A write whose path goes through a symlink inside the campaign folder."""


def _ev(task: StageTask, event: str, **kw) -> None:
    journal.append(Path(task.campaign_dir), event, set=task.set_name, cand=task.cand_id, stage=task.stage, key=task.key, **kw)


def _safe(task: StageTask, path: Path) -> Path:
    """``path``, after checking that no folder on its way down from the
    campaign folder (nor the path itself) is a symlink: apply never writes
    through a link (one made after the scan included)."""
    found = symlink_in(task.campaign_dir, path)
    if found is not None:
        link, target = found
        what = target if not link else f"{link} is a symlink to {target}"
        raise SymlinkRefused(f"refused to write {path}: {what}",
                             fix=f"replace {link or path} with a real folder, or remove it")
    return path


def _write(task: StageTask, path: Path, obj) -> None:
    write_json_atomic(_safe(task, path), obj)


def run_task(task: StageTask) -> TaskResult:
    started: list[int] = []  # the attempt whose stage_start is in the journal, while it runs
    try:
        if task.stage == "import":
            return _run_import(task)
        return _run_stage(task, started)
    except (OSError, SymlinkRefused) as exc:
        return _io_failure(task, exc, started)


def _io_failure(task: StageTask, exc: Exception, started: list[int]) -> TaskResult:
    """The failed result of a task that could not read or write its folder."""
    if isinstance(exc, SymlinkRefused):
        code, msg = "symlink", exc.message
    else:
        code = "io_error"
        where = exc.filename if exc.filename else f"{task.set_name}/{task.cand_id}/{task.stage}"
        what = f"[Errno {exc.errno}] {exc.strerror or exc}" if exc.errno else str(exc)
        msg = f"file system error at {where}: {what}"
    if started:  # close the attempt in the journal; its record (if written) still says running
        try:
            _ev(task, "stage_interrupted", attempt=started[-1], failure_code=code, message=msg)
        except OSError:
            pass
    return TaskResult(task.set_name, task.cand_id, task.stage, "failed", code, msg, started[-1] if started else 0)


def _run_import(task: StageTask) -> TaskResult:
    rec = CandidateRecord.model_validate(task.candidate)
    cdir = Path(task.campaign_dir) / task.set_name / task.cand_id
    _write(task, cdir / CANDIDATE_FILE, rec.model_dump(mode="json"))
    journal.append(Path(task.campaign_dir), "candidate_imported", set=task.set_name, cand=task.cand_id, key=task.key, source=rec.provenance.get("path"))
    return TaskResult(task.set_name, task.cand_id, "import", "done", attempts=1)


def _now() -> str:
    return journal.now_iso()


def _run_stage(task: StageTask, started: list[int]) -> TaskResult:
    sdir = Path(task.campaign_dir) / task.set_name / task.cand_id / task.stage
    rec_path = _safe(task, sdir / RECORD_FILE)
    sdir.mkdir(parents=True, exist_ok=True)
    try:
        old = read_stage_record(rec_path)
    except CampaignError as exc:  # damaged since the scan
        raise OSError(errno.EIO, f"unreadable record ({exc.message})", str(rec_path)) from None
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
    elif task.intervention:
        intervention = task.intervention
    structure = Structure.from_dict(task.structure)
    fn = load_stage_fn(task.run)
    # earlier attempts under this same key: a stage may read their finished engine runs
    # instead of computing them again (RunProfile.reuse_from); newest first
    earlier = [str(sdir / f"attempt-{a.n}") for a in sorted(attempts, key=lambda a: -a.n) if a.key == task.key]
    cfg = {**(task.stage_cfg or {}), EARLIER_ATTEMPTS: earlier}
    pid, tick = os.getpid(), pid_start_tick(os.getpid())

    while True:
        n = max((a.n for a in attempts), default=0) + 1
        adir = _safe(task, sdir / f"attempt-{n}")
        if adir.is_dir():  # left by a crash before its record was written: unrecorded, so not evidence
            shutil.rmtree(adir)
        elif os.path.lexists(adir):  # a stray file (a symlink was refused above)
            adir.unlink()
        att = Attempt(n=n, key=task.key, started=_now(), status="running", intervention=intervention, wave=task.wave)
        base = dict(stage=task.stage, key=task.key, key_inputs=task.key_inputs, host=HOST, pid=pid, pid_start=tick)
        _write(task, rec_path, StageRecord(**base, status="running", attempts=attempts + [att], outputs=previous.outputs if previous else {}).model_dump(mode="json"))
        _ev(task, "stage_start", attempt=n, intervention=intervention)
        started.append(n)
        t0 = time.perf_counter()
        try:
            outcome = fn(structure, cfg, task.profile, adir, previous)
        except Exception as exc:  # a bug or an engine crash: recorded, never swallowed silently
            outcome = StageOutcome(ok=False, failure_code="crash", message=f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=3)}")
        att.ended, att.wall_s = _now(), round(time.perf_counter() - t0, 3)
        att.status = "done" if outcome.ok else "failed"
        att.failure_code, att.message = outcome.failure_code, outcome.message
        attempts.append(att)
        _safe(task, adir).mkdir(parents=True, exist_ok=True)
        _write(task, adir / "outcome.json", {"ok": outcome.ok, "failure_code": outcome.failure_code, "message": outcome.message, "outputs": outcome.outputs})

        if outcome.ok:
            _write(task, rec_path, StageRecord(**base, status="done", attempts=attempts, output_present=True, outputs=outcome.outputs).model_dump(mode="json"))
            _ev(task, "stage_done", attempt=n)
            started.clear()
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
        _write(task, rec_path, rec.model_dump(mode="json"))
        _ev(task, "stage_failed", attempt=n, failure_code=outcome.failure_code, final=not retry)
        started.clear()
        if not retry:
            return TaskResult(task.set_name, task.cand_id, task.stage, "failed", outcome.failure_code, outcome.message, len(attempts))
        previous, intervention = outcome, outcome.next_intervention
