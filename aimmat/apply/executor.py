"""Execute the plan: dependency order, one task per candidate at a time.

Apply runs in passes. A pass scans once, plans once (the same ``plan``
diff prints) and computes each ranked set's shortlist once; its pending
candidates form the queue. After each finished task only that candidate is
read again and planned against the pass's shortlists, so a stage whose
upstream reran to an identical result is kept and a failed screen blocks
what follows. A candidate that reaches a shortlist still waiting for other
screens goes on in the next pass. Apply is the only writer of the campaign
folder, and the record index is refreshed here, under the lock.

A damaged record or a symlink in a candidate apply works on stops it before
the first write (all of them named at once); those of other candidates are
warnings. A task that cannot write its folder fails with ``io_error`` (or
``symlink``) and the others go on; after ``apply_start`` the journal is
closed with ``apply_end`` on success and on any error (which it names).
"""

from __future__ import annotations

import os
import time
from collections import Counter
from concurrent.futures import FIRST_COMPLETED, wait
from dataclasses import dataclass, field

import aimmat
from aimmat.apply.backend import make_backend
from aimmat.apply.prepare import prepare
from aimmat.apply.progress import Progress
from aimmat.apply.render_step import render
from aimmat.apply.prune import prune as prune_orphans
from aimmat.apply.reconcile import reconcile_journal
from aimmat.apply.runner import IO_FAILURES, TaskResult, run_task
from aimmat.apply.tasks import make_task
from aimmat.manifest.load import CampaignSpec
from aimmat.plan.actions import Action, Plan, StageAction
from aimmat.plan.candidate import plan_candidate
from aimmat.plan.plan import plan
from aimmat.plan.shortlist import shortlists
from aimmat.state.shortlist_freeze import freeze_final
from aimmat.runtime import slots, stop
from aimmat.runtime.gcpause import gc_paused
from aimmat.state import journal
from aimmat.state.atomic import write_json_atomic
from aimmat.state.index_write import save_index
from aimmat.state.layout import CAMPAIGN_FILE
from aimmat.state.lock import CampaignLock
from aimmat.state.scan import Observed, check_observed, scan, scan_candidate


@dataclass
class ApplySummary:
    ran: Counter = field(default_factory=Counter)  # (stage, status) -> n
    failed: list[TaskResult] = field(default_factory=list)
    kept: int = 0
    blocked: int = 0
    pruned: list[str] = field(default_factory=list)
    passes: int = 0
    rendered: dict | None = None  # the render lock, when apply rendered
    wall_s: float = 0.0
    warnings: list[str] = field(default_factory=list)  # damaged records / symlinks outside --target, orphans'

    @property
    def n_ran(self) -> int:
        return sum(self.ran.values())

    @property
    def io_failed(self) -> list[TaskResult]:
        """Tasks that could not read or write their folder (``io_error``, ``symlink``)."""
        return [r for r in self.failed if r.failure_code in IO_FAILURES]


def _first_runnable(actions: list[StageAction], gates: dict[str, bool]) -> StageAction | None:
    """The first pending action whose upstream stages are done: the gating
    chain in order, then variants (which depend on the import only)."""
    chain = [a for a in actions if gates.get(a.stage, True)]
    for a in chain:
        if a.action in (Action.CREATE, Action.RERUN):
            return a
        if not (a.action == Action.KEEP and a.state == "done"):
            break
    if actions[0].action == Action.KEEP and actions[0].state == "done":  # imported
        for a in actions:
            if not gates.get(a.stage, True) and a.action in (Action.CREATE, Action.RERUN):
                return a
    return None


def _observe(cdir, rescan: bool = False, check=None) -> Observed:
    # apply holds the lock: no running record is alive, whatever it says
    observed = scan(cdir, probe_alive=False, rescan=rescan)
    if check is not None:
        check(observed)
    return observed


def _checker(spec: CampaignSpec, target, summary: "ApplySummary"):
    """Refuse (CampaignError) a damaged record or symlink in a candidate in
    scope; collect the warnings of the others on ``summary`` (once each)."""
    def check(observed: Observed) -> None:
        for w in check_observed(observed, ((c.set_name, c.cand_id) for c in spec.candidates), target):
            if w not in summary.warnings:
                summary.warnings.append(w)
    return check


def apply(spec: CampaignSpec, *, jobs: int = 1, target: tuple[str, str | None] | None = None,
          replace: frozenset[str] = frozenset(), prune: bool = False, progress: bool = True,
          cores: int | None = None, render_command: list[str] | None = None,
          rescan: bool = False) -> tuple[ApplySummary, Plan]:
    """Make the campaign folder match ``spec``. ``render_command``: render
    the manifest's targets last (recorded as the command in the render lock).
    ``rescan``: read every record file and rebuild the record index."""
    t0 = time.perf_counter()
    cdir = spec.campaign_dir
    summary = ApplySummary()
    check = _checker(spec, target, summary)
    # Validate every input before the first write (exit 3, folder untouched); a
    # damaged record or a symlink in scope is refused here too (exit 4).
    prepared = prepare(spec, _observe(cdir, check=check), progress=progress)
    cdir.mkdir(parents=True, exist_ok=True)
    with CampaignLock(cdir):
        journal.repair_tail(cdir)
        observed = scan(cdir, temp_files=True, probe_alive=False)
        check(observed)  # again, under the lock: before the first write to a record
        for tmp in observed.temp_files:  # half-written files of a killed apply
            tmp.unlink(missing_ok=True)
        damaged_log = reconcile_journal(cdir, observed)  # the journal is a log: bad lines are skipped, and said
        if damaged_log:
            summary.warnings.append(f"warning: {damaged_log}")
        journal.append(cdir, "apply_start", manifest_sha256=spec.sha256, aimmat=aimmat.__version__, pid=os.getpid())
        try:
            final = _apply_locked(spec, prepared, observed, jobs, target, replace, prune, progress, cores, rescan,
                                  summary, check)
        except Exception as exc:  # the journal says this apply ended, and how
            try:
                journal.append(cdir, "apply_end", ran=summary.n_ran, failed=len(summary.failed),
                               error=f"{type(exc).__name__}: {exc}")
            except OSError:
                pass
            raise
        journal.append(cdir, "apply_end", ran=summary.n_ran, failed=len(summary.failed))
        if render_command is not None and spec.manifest.render:  # the manuscript follows the records it reports
            summary.rendered = render(spec, render_command)
    summary.wall_s = time.perf_counter() - t0
    return summary, final


def _apply_locked(spec: CampaignSpec, prepared, observed: Observed, jobs: int, target, replace, prune: bool,
                  progress: bool, cores, rescan: bool, summary: ApplySummary, check) -> Plan:
    """Apply's work between ``apply_start`` and ``apply_end``: prune, the
    passes, the final scan and plan, the index and campaign.json."""
    res = prepared.resolved
    cdir = spec.campaign_dir
    with gc_paused():
        lists = shortlists(res, observed, replace)
        current = plan(res, observed, replace=replace, target=target, lists=lists)
    freeze_final(spec, lists)  # before the first engine stage runs for a final shortlist
    if prune:
        summary.pruned = prune_orphans(cdir, current.orphans)
        gone = [f"warning: {cdir / p.split(' (')[0]}" for p in summary.pruned]  # their warnings are moot now
        summary.warnings = [w for w in summary.warnings if not any(w.startswith((g + " ", g + ":", g + "/")) for g in gone)]
    slots.init(cores or os.cpu_count() or 1)  # before the pool forks: shared by all workers
    stop.clear()
    # Ctrl-C / SIGTERM: running pw.x are ended, none is launched (aimmat.runtime.stop);
    # installed before the pool forks, so the workers inherit the handler
    handlers = stop.install()
    try:
        backend = make_backend(jobs, spec)
        try:
            _run_passes(res, prepared, backend, max(1, jobs), current, lists, replace, target, summary, Progress(progress),
                        check)
        finally:
            backend.shutdown()
    finally:
        stop.restore(handlers)
    observed = _observe(cdir, rescan)
    with gc_paused():
        final = plan(res, observed, target=target)
    summary.kept = final.count(Action.KEEP)
    summary.blocked = final.count(Action.BLOCKED)
    save_index(observed.index, spec.source_hashes)
    write_json_atomic(cdir / CAMPAIGN_FILE, {"manifest_sha256": spec.sha256, "manifest": str(spec.path),
                                             "aimmat": aimmat.__version__, "applied": journal.now_iso(),
                                             "environment": dict(res.environment)})
    return final


def _run_passes(res, prepared, backend, jobs: int, current: Plan, lists: dict, replace, target, summary: ApplySummary,
                prog: Progress, check=None) -> None:
    cdir = res.campaign_dir
    srcs = {(s.set_name, s.cand_id): s for s in res.spec.candidates}
    queue = current.pending_candidates()
    stuck: set = set()  # candidates whose folder could not be written: not tried again in this apply
    replace_left = {k: set(replace) for k in queue}
    width = max(1, getattr(backend, "width", jobs))  # a Parsl backend: its worker slots
    inflight: dict = {}
    gates = {name: r.stage.gates for name, r in res.recipes.items()}

    def schedule(cand) -> None:
        cobs = scan_candidate(cdir, *cand)  # only this candidate is read again
        acts = plan_candidate(res, srcs[cand], cobs, replace=frozenset(replace_left.get(cand, ())),
                              shortlist=lists.get(cand[0]))
        a = _first_runnable(acts, gates)
        if a is None:
            return
        replace_left.get(cand, set()).discard(a.stage)
        prog.start(a.stage)
        inflight[backend.submit(run_task, make_task(res, a, cobs, prepared))] = cand

    try:
        for _pass in range(len(res.recipes) + 2):
            summary.passes += 1
            while queue or inflight:
                while queue and len(inflight) < width:
                    schedule(queue.pop(0))
                if not inflight:
                    continue
                done, _ = wait(list(inflight), return_when=FIRST_COMPLETED)
                for fut in done:
                    cand = inflight.pop(fut)
                    r = fut.result()
                    prog.finish(r)
                    summary.ran[(r.stage, r.status)] += 1
                    if r.status == "failed":
                        summary.failed.append(r)
                    if r.status == "lost":  # its worker died: the record stays `running`, the next apply resumes it
                        continue
                    if r.failure_code in IO_FAILURES:  # its folder cannot be written: the same would happen again
                        stuck.add(cand)
                        continue
                    queue.insert(0, cand)  # continue this candidate's chain first
            if not res.ranked:
                break
            # a set's shortlist resolves once all its candidates are screened:
            # one scan and one plan, and the candidates it lets through go on
            observed = _observe(cdir, check=check)
            with gc_paused():
                lists = shortlists(res, observed)
                queue = [c for c in plan(res, observed, target=target, lists=lists).pending_candidates() if c not in stuck]
            freeze_final(res.spec, lists)
            if not queue:
                break
    finally:
        prog.close()
