"""Execute a plan: dependency order, one task per candidate at a time.

After each finished task the candidate is planned again from its fresh
records, so a stage whose upstream reran to an identical result is kept,
and a screen that fails blocks what follows.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from collections import Counter
from concurrent.futures import FIRST_COMPLETED, wait
from dataclasses import dataclass, field
from pathlib import Path

import aimmat
from aimmat.runtime import slots
from aimmat.apply.backend import make_backend
from aimmat.apply.prepare import candidate_record, new_candidates
from aimmat.apply.runner import StageTask, TaskResult, run_task
from aimmat.manifest.load import CampaignSpec
from aimmat.plan.keys import is_screen, qe_cutoffs, qe_pseudo_files, structure_source
from aimmat.plan.plan import Action, Plan, StageAction, plan, plan_candidate, set_shortlist
from aimmat.state import journal
from aimmat.state.atomic import write_json_atomic
from aimmat.state.lock import CampaignLock
from aimmat.state.records import record_elements
from aimmat.state.scan import CAMPAIGN_FILE, Observed, scan, scan_candidate


@dataclass
class ApplySummary:
    ran: Counter = field(default_factory=Counter)  # (stage, status) -> n
    failed: list[TaskResult] = field(default_factory=list)
    kept: int = 0
    blocked: int = 0
    pruned: list[str] = field(default_factory=list)
    wall_s: float = 0.0

    @property
    def n_ran(self) -> int:
        return sum(self.ran.values())


class Progress:
    """One status line on a terminal, one line per finished task otherwise."""

    def __init__(self, enabled: bool = True):
        self.enabled = enabled
        self.tty = sys.stderr.isatty()
        self.done: Counter = Counter()
        self.running: Counter = Counter()
        self.failed = 0

    def _line(self) -> str:
        order = {s: i for i, s in enumerate(["import", "screen", "relax", "scf", "elastic"])}
        stages = sorted(set(self.done) | set(self.running), key=lambda s: (order.get(s, 9), s))
        parts = [f"{s} {self.done[s]}" + (f" (+{self.running[s]} running)" if self.running[s] else "") for s in stages]
        return "apply: " + " | ".join(parts) + (f" | failed {self.failed}" if self.failed else "")

    def start(self, stage: str) -> None:
        self.running[stage] += 1
        if self.enabled and self.tty:
            print("\r" + self._line(), end="", file=sys.stderr, flush=True)

    def finish(self, res: TaskResult) -> None:
        self.running[res.stage] -= 1
        self.done[res.stage] += 1
        self.failed += res.status == "failed"
        if not self.enabled:
            return
        if self.tty:
            print("\r" + self._line() + "\033[K", end="", file=sys.stderr, flush=True)
        else:
            tail = f" ({res.failure_code})" if res.failure_code else ""
            print(f"  {res.stage:8s} {res.set_name}/{res.cand_id}: {res.status}{tail}", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.enabled and self.tty:
            print(file=sys.stderr)


def _reconcile_journal(campaign_dir: Path, observed: Observed) -> None:
    """Close journal entries a crash left open, from what the records say."""
    events = journal.read(campaign_dir)
    open_ = journal.open_attempts(events)
    started = {k for k in ((e.get("set"), e.get("cand"), e.get("stage"), e.get("attempt")) for e in events if e["event"] == "stage_start")}
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
        journal.append(campaign_dir, "stage_interrupted", set=k[0], cand=k[1], stage=k[2], attempt=k[3], key=open_[k].get("key", ""))


def _task(spec: CampaignSpec, a: StageAction, cobs, imports) -> StageTask:
    base = dict(campaign_dir=str(spec.campaign_dir), set_name=a.set_name, cand_id=a.cand_id, stage=a.stage, key=a.key, key_inputs=a.key_inputs)
    if a.stage == "import":
        rec = imports.get((a.set_name, a.cand_id)) or candidate_record(spec, _source_of(spec, a))
        return StageTask(**base, candidate=rec.model_dump(mode="json"))
    cfg = spec.stage_config(a.stage)
    screen = is_screen(a.stage)
    structure = cobs.record.structure if structure_source(a.stage) == "import" else cobs.stages["relax"].outputs["structure"]
    if screen:
        profile = spec.manifest.profiles[cfg.prerelax_profile].model_dump() if cfg.prerelax_profile else None
    else:
        profile = spec.manifest.profiles[cfg.profile].model_dump()
    if profile:
        profile["retry_policy"] = spec.manifest.retry.model_dump(exclude={"max_attempts"})
    if profile and profile["kind"] == "qe":  # the exact files the key hashed, as absolute paths
        elements = record_elements(cobs.record)
        files = qe_pseudo_files(spec, cfg.profile, elements)
        profile["pseudo_files"] = {el: str(p) for el, p in files.items()}
        if profile["ecutwfc_ry"] is None:
            profile["ecutwfc_ry"], profile["ecutrho_ry"] = qe_cutoffs(spec, cfg.profile, elements)
        if a.key_inputs.get("metallic"):  # the relaxation's bands cross E_F: denser mesh
            profile["kspacing_per_a"] = profile["kspacing_metal_per_a"]
    return StageTask(**base, structure=structure, stage_cfg=cfg.model_dump(), profile=profile, max_attempts=spec.manifest.retry.max_attempts)


def _source_of(spec: CampaignSpec, a: StageAction):
    return next(s for s in spec.candidates if (s.set_name, s.cand_id) == (a.set_name, a.cand_id))


def _set_shortlist(spec: CampaignSpec, set_name: str):
    return set_shortlist(spec, set_name, lambda src: scan_candidate(spec.campaign_dir, src.set_name, src.cand_id))


def _first_runnable(actions: list[StageAction]) -> StageAction | None:
    """The first pending action whose upstream stages are done: the main
    chain in order, then ablation screens (which depend on the import only)."""
    main = [a for a in actions if not a.stage.startswith("ablation-")]
    for a in main:
        if a.action in (Action.CREATE, Action.RERUN):
            return a
        if not (a.action == Action.KEEP and a.state == "done"):
            break
    imported = actions[0].action == Action.KEEP and actions[0].state == "done"
    for a in actions:
        if imported and a.stage.startswith("ablation-") and a.action in (Action.CREATE, Action.RERUN):
            return a
    return None


def _prune(spec: CampaignSpec, orphans: list[StageAction]) -> list[str]:
    removed = []
    for o in orphans:
        if o.stage == "set":
            path = spec.campaign_dir / o.set_name
        elif o.stage == "candidate":
            path = spec.campaign_dir / o.set_name / o.cand_id
        else:
            path = spec.campaign_dir / o.set_name / o.cand_id / o.stage
        if path.exists():
            shutil.rmtree(path)
            journal.append(spec.campaign_dir, "pruned", path=str(path.relative_to(spec.campaign_dir)), reason="; ".join(o.reasons))
            removed.append(str(path.relative_to(spec.campaign_dir)))
    return removed


def apply(
    spec: CampaignSpec,
    *,
    jobs: int = 1,
    target: tuple[str, str | None] | None = None,
    replace: frozenset[str] = frozenset(),
    prune: bool = False,
    progress: bool = True,
    cores: int | None = None,
) -> tuple[ApplySummary, Plan]:
    t0 = time.perf_counter()
    cdir = spec.campaign_dir
    # Validate every input before the first write (exit 3, folder untouched).
    observed = scan(cdir)
    imports = new_candidates(spec, observed)
    summary = ApplySummary()
    cdir.mkdir(parents=True, exist_ok=True)
    with CampaignLock(cdir):
        journal.repair_tail(cdir)
        observed = scan(cdir, temp_files=True)
        for tmp in observed.temp_files:  # half-written files of a killed apply
            tmp.unlink(missing_ok=True)
        _reconcile_journal(cdir, observed)
        journal.append(cdir, "apply_start", manifest_sha256=spec.sha256, aimmat=aimmat.__version__, pid=os.getpid())
        initial = plan(spec, observed, replace=replace, target=target, alive=lambda rec: False)
        if prune:
            summary.pruned = _prune(spec, initial.orphans)
        srcs = {(s.set_name, s.cand_id): s for s in spec.candidates}
        queue = list(dict.fromkeys((a.set_name, a.cand_id) for a in initial.actions if a.pending))
        replace_left = {k: set(replace) for k in queue}
        slots.init(cores or os.cpu_count() or 1)  # before the pool forks: shared by all workers
        backend = make_backend(jobs, spec)
        width = getattr(backend, "width", jobs)  # a Parsl backend: its worker slots
        prog = Progress(progress)
        inflight = {}

        ranked = {c.name for c in spec.manifest.candidate_sets if c.rank is not None and c.rank.top_k is not None}
        gate_stage = next((st for st in spec.stages if st != "screen"), None)

        def schedule(cand) -> None:
            cobs = scan_candidate(cdir, *cand)
            acts = plan_candidate(spec, srcs[cand], cobs, replace=frozenset(replace_left[cand]), alive=lambda rec: False)
            a = _first_runnable(acts)
            if a is not None and cand[0] in ranked and a.stage == gate_stage:
                acts = plan_candidate(spec, srcs[cand], cobs, replace=frozenset(replace_left[cand]),
                                      alive=lambda rec: False, shortlist=_set_shortlist(spec, cand[0]))
                a = _first_runnable(acts)
            if a is None:
                return
            replace_left[cand].discard(a.stage)
            prog.start(a.stage)
            inflight[backend.submit(run_task, _task(spec, a, cobs, imports))] = cand

        try:
            for _pass in range(len(spec.stages) + 2):
                while queue or inflight:
                    while queue and len(inflight) < max(1, width):
                        schedule(queue.pop(0))
                    if not inflight:
                        continue
                    done, _ = wait(list(inflight), return_when=FIRST_COMPLETED)
                    for fut in done:
                        cand = inflight.pop(fut)
                        res = fut.result()
                        prog.finish(res)
                        summary.ran[(res.stage, res.status)] += 1
                        if res.status == "failed":
                            summary.failed.append(res)
                        if res.status == "lost":  # its worker died: the record stays `running`, the next apply resumes it
                            continue
                        queue.insert(0, cand)  # continue this candidate's chain first
                if not ranked:
                    break
                # a set's shortlist resolves once all its candidates are screened:
                # plan again and continue the candidates it lets through
                again = plan(spec, scan(cdir), target=target, alive=lambda rec: False)
                queue = list(dict.fromkeys((a.set_name, a.cand_id) for a in again.actions if a.pending))
                if not queue:
                    break
        finally:
            prog.close()
            backend.shutdown()
        final = plan(spec, scan(cdir), target=target, alive=lambda rec: False)
        summary.kept = final.count(Action.KEEP)
        summary.blocked = final.count(Action.BLOCKED)
        write_json_atomic(cdir / CAMPAIGN_FILE, {"manifest_sha256": spec.sha256, "manifest": str(spec.path), "aimmat": aimmat.__version__, "applied": journal.now_iso()})
        journal.append(cdir, "apply_end", ran=summary.n_ran, failed=len(summary.failed))
    summary.wall_s = time.perf_counter() - t0
    return summary, final
