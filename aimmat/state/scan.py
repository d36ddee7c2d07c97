"""Scan the campaign folder into records. Scanning never writes.

Records come through the index (``aimmat.state.index``) where a row's stat
signature matches its file, else from the file; the result is the same.
What a scan found changed is kept on ``Observed.index``; only apply, under
the campaign lock, writes it (``aimmat.state.index_write.save_index``).

Whether a ``running`` record's process is still alive is decided here, at
scan time (``Observed.alive``), so the plan reads it as data.

A record that cannot be read (a folder where the file should be, no
permission, invalid JSON, another schema) does not stop the scan: every
one is collected on ``Observed.damaged``, and every symlink found where a
set, candidate or stage folder (or a record file) should be on
``Observed.links``; the scan never reads through such a link. The commands
decide with ``check_observed``: an error listing all of them when one is in
a candidate they work on, a warning for the others.
"""

from __future__ import annotations

__all__ = ["CandidateObs", "Observed", "check_observed", "read_candidate_record", "read_stage_record", "running_alive",
           "scan", "scan_candidate"]

import marshal
import os
from dataclasses import dataclass, field
from pathlib import Path

from aimmat.errors import CampaignError
from aimmat.runtime.gcpause import gc_paused
from aimmat.state.atomic import TMP_PREFIX
from aimmat.state.index import Index
from aimmat.state.layout import CANDIDATE_FILE, RECORD_FILE, RESERVED, is_stage_dir, record_path
from aimmat.state.layout import sig as stat_sig
from aimmat.state.lock import lock_held
from aimmat.state.damage import check_observed
from aimmat.state.damage import problem as _problem
from aimmat.state.procs import process_alive
from aimmat.state.record_io import read_candidate_record, read_record, read_stage_record, read_with_stat
from aimmat.state.records import CandidateRecord, StageRecord
from aimmat.state.summary import CandidateSummary, StageSummary


class CandidateObs:
    """One candidate folder. ``summary`` / ``summaries`` (the fields the plan
    reads) are always there; the full records (``record``, ``stages``) are
    decoded from the index on first access when the scan took them from it.
    (A slotted class: 100k of them are made per scan.)"""

    __slots__ = ("set_name", "cand_id", "stage_dirs", "summary", "summaries", "_record", "_stages", "_pending", "_index")

    def __init__(self, set_name: str, cand_id: str):
        self.set_name, self.cand_id = set_name, cand_id
        self.stage_dirs: list[str] = []
        self.summary: CandidateSummary | None = None
        self.summaries: dict[str, StageSummary] = {}
        self._record: CandidateRecord | None = None
        self._stages: dict[str, StageRecord] = {}
        self._pending: list = []  # index entries (stage or None, signature, summary) not decoded yet
        self._index: Index | None = None

    def __repr__(self) -> str:
        return f"CandidateObs({self.set_name}/{self.cand_id}, stages={self.stage_dirs})"

    @property
    def record(self) -> CandidateRecord | None:
        if self._pending:
            self._decode()
        return self._record

    @property
    def stages(self) -> dict[str, StageRecord]:
        if self._pending:
            self._decode()
        return self._stages

    def _decode(self) -> None:
        # as in scan(): records decoded one candidate at a time must not trigger
        # collections that walk every record decoded so far (8x slower at 10k)
        with gc_paused():
            self._decode_pending()

    def _decode_pending(self) -> None:
        pending, self._pending = self._pending, []
        rel = f"{self.set_name}/{self.cand_id}"
        for stage, sig, _ in pending:
            model, name = (CandidateRecord, CANDIDATE_FILE) if stage is None else (StageRecord, f"{stage}/{RECORD_FILE}")
            rec = self._index.fetch(f"{rel}/{name}", sig, model)
            if rec is None:  # the body changed since the scan: the file says what is there now
                rec = read_record(f"{self._index.path.parent}/{rel}/{name}", model)
            if stage is None:
                self._record = rec
            elif rec is not None:
                self._stages[stage] = rec
        self._stages = {s: self._stages[s] for s in self.stage_dirs if s in self._stages}  # the files' order

    def __eq__(self, other) -> bool:
        if not isinstance(other, CandidateObs):
            return NotImplemented
        return ((self.set_name, self.cand_id, self.stage_dirs, self.summary, self.summaries, self.record, self.stages)
                == (other.set_name, other.cand_id, other.stage_dirs, other.summary, other.summaries, other.record, other.stages))


@dataclass
class Observed:
    campaign_dir: Path
    exists: bool = False
    candidates: dict[tuple[str, str], CandidateObs] = field(default_factory=dict)
    set_dirs: list[str] = field(default_factory=list)
    temp_files: list[Path] = field(default_factory=list)
    lock_held: bool = False
    alive: set[tuple[str, str, str]] = field(default_factory=set)  # (set, candidate, stage) of running records whose process lives
    index: Index | None = field(default=None, repr=False, compare=False)
    damaged: list[tuple[str, str]] = field(default_factory=list)  # (path, what is wrong) of records (or folders) that could not be read
    links: list[tuple[str, str]] = field(default_factory=list)  # (path, target) of symlinks where a folder or record should be

    def is_alive(self, set_name: str, cand_id: str, stage: str) -> bool:
        return (set_name, cand_id, stage) in self.alive


def _entries(path, observed: Observed | None = None):
    try:
        with os.scandir(path) as it:
            return list(it)
    except (FileNotFoundError, NotADirectoryError):
        return []
    except OSError as exc:
        _problem(observed, str(path), f"cannot be listed: {exc.strerror or exc}")
        return []


_NO_LINKS: frozenset = frozenset()


def _list_candidate(cdir: str, temp_files: list | None, observed: Observed | None = None) -> tuple[bool, list[str], set]:
    """(candidate.json present, sorted stage folders, the stage folders that
    are symlinks: not read) of a candidate folder; with ``temp_files``
    given, also collect half-written temp files (never behind a link)."""
    has_candidate, stage_dirs, links = False, [], _NO_LINKS
    for entry in _entries(cdir, observed):
        name = entry.name
        if name.startswith(TMP_PREFIX):
            if temp_files is not None:
                temp_files.append(Path(entry.path))
        elif name == CANDIDATE_FILE:
            has_candidate = True
        elif is_stage_dir(name):
            stage_dirs.append(name)
            if entry.is_symlink():  # from the listing's file type: no system call
                links = set(links) | {name}
                try:
                    target = os.readlink(entry.path)
                except OSError:
                    target = "?"
                _problem(observed, entry.path, "symlink", target)
            elif temp_files is not None:
                for e in _entries(entry.path, observed):
                    if e.name.startswith(TMP_PREFIX):
                        temp_files.append(Path(e.path))
                    elif e.name.startswith("attempt-") and e.is_dir(follow_symlinks=False):  # outcome.json of a killed attempt
                        temp_files.extend(Path(t.path) for t in _entries(e.path, observed) if t.name.startswith(TMP_PREFIX))
        elif entry.is_dir():
            stage_dirs.append(name)
    stage_dirs.sort()
    return has_candidate, stage_dirs, links


def scan_candidate(campaign_dir, set_name: str, cand_id: str, temp_files: list | None = None,
                   index: Index | None = None, set_fd: int | None = None, observed: Observed | None = None) -> CandidateObs:
    """Records of one candidate. With ``temp_files`` given, also collect
    half-written temp files (apply sweeps them; diff does not need them).
    ``set_fd``: an open descriptor of the set folder, for shorter stat paths.
    ``observed``: where damaged records and symlinks are collected; without
    it the first one raises a CampaignError."""
    obs = CandidateObs(set_name, cand_id)
    rel = f"{set_name}/{cand_id}"
    cdir = f"{campaign_dir}/{rel}"  # os.path.join costs more than the stat it feeds, 500k times at 100k candidates
    if index is None:
        has_candidate, obs.stage_dirs, links = _list_candidate(cdir, temp_files, observed)
        for name in ([None] if has_candidate else []) + obs.stage_dirs:
            if name is None or (is_stage_dir(name) and name not in links):
                got = read_with_stat(record_path(cdir, name), CandidateRecord if name is None else StageRecord, observed)
                if got is not None:
                    _set_record(obs, name, got[0])
        return obs
    row = index.rows.pop(rel, None)
    try:
        st = os.stat(cand_id, dir_fd=set_fd) if set_fd is not None else os.stat(cdir)
    except (FileNotFoundError, NotADirectoryError):  # the folder is gone
        return obs
    listing = None
    if (temp_files is None and row is not None and row[1] == st.st_size and row[2] == st.st_mtime_ns
            and row[3] == st.st_ctime_ns and row[4] == st.st_ino):  # the folder is unchanged: so is its listing
        obs.stage_dirs = row[6].split("/") if row[6] else []
        if row[5] & Index.COMPLETE and _all_hits(obs, index, row, cand_id if set_fd is not None else cdir, set_fd):
            return obs
        obs.summary, obs.summaries, obs._pending = None, {}, []
        listing = bool(row[5] & Index.HAS_CANDIDATE), obs.stage_dirs, _NO_LINKS
    _scan_changed(obs, index, rel, cdir, st, row, listing, temp_files, observed)
    return obs


def _all_hits(obs: CandidateObs, index: Index, row: tuple, base: str, set_fd: int | None) -> bool:
    """The common case, written out for speed (400k records at 100k
    candidates): the folder is unchanged and every record file still has its
    entry's signature. False (nothing kept) on the first difference."""
    stat = os.lstat  # a record replaced by a symlink has the link's signature: a miss
    summaries = obs.summaries
    try:
        entries = marshal.loads(row[7])
        for entry in entries:
            name = entry[0]
            try:
                fst = stat(f"{base}/{CANDIDATE_FILE}" if name is None else f"{base}/{name}/{RECORD_FILE}", dir_fd=set_fd)
            except OSError:  # gone, or not a folder on the way, or no permission: the slow path says which
                return False
            if entry[1] != (fst.st_size, fst.st_mtime_ns, fst.st_ctime_ns, fst.st_ino):  # layout.sig, inlined (hot)
                return False
            if name is None:
                obs.summary = tuple.__new__(CandidateSummary, entry[2])
            else:
                summaries[name] = tuple.__new__(StageSummary, entry[2])
    except (TypeError, IndexError, ValueError, EOFError):  # a damaged row: read the files
        return False
    if entries:
        obs._pending = entries
        obs._index = index
        index.hits += len(entries)
    return True


def _scan_changed(obs: CandidateObs, index: Index, rel: str, cdir: str, st: os.stat_result, row, listing,
                  temp_files, observed: Observed | None = None) -> None:
    """A candidate folder that changed (or is new to the index): list it
    unless ``listing`` is given, take each record from its entry when the
    file's signature matches, read the others, and queue the folder's row.
    A folder with a damaged record or a symlink gets no row (its old one is
    dropped): it is listed and read again until it is repaired."""
    dirty = listing is None
    n_problems = len(observed.damaged) + len(observed.links) if observed is not None else 0
    if listing is None:
        listing = _list_candidate(cdir, temp_files, observed)
        # apply lists every folder (for temp files): an unchanged one keeps its row
        dirty = not (row is not None and tuple(row[1:5]) == index.sig(st) and bool(row[5] & Index.HAS_CANDIDATE) == listing[0]
                     and (row[6].split("/") if row[6] else []) == listing[1])
    has_candidate, obs.stage_dirs, links = listing
    try:
        entries = {e[0]: e for e in index.entries(row) if len(e[1]) == 4 and len(e[2]) in (len(CandidateSummary._fields), len(StageSummary._fields))}
    except (TypeError, IndexError):  # a damaged row: read the files
        entries = {}
    kept: list[tuple] = []
    for name in ([None] if has_candidate else []) + obs.stage_dirs:
        if name is not None and (not is_stage_dir(name) or name in links):
            continue
        path = record_path(cdir, name)
        entry = entries.pop(name, None)
        if entry is not None:
            try:
                fst = os.lstat(path)
            except FileNotFoundError:
                dirty = True  # gone since the listing
                continue
            except OSError:  # the stage "folder" is a file, or cannot be entered: the read below says which
                fst = None
            if fst is not None and entry[1] == stat_sig(fst):
                if name is None:
                    obs.summary = CandidateSummary._make(entry[2])
                else:
                    obs.summaries[name] = StageSummary._make(entry[2])
                obs._pending.append(entry)
                kept.append(entry)
                continue
        got = read_with_stat(path, CandidateRecord if name is None else StageRecord, observed)
        dirty = True
        if got is None:
            continue
        rec, fst, data = got
        summary = _set_record(obs, name, rec)
        sig = index.sig(fst)
        kept.append((name, sig, tuple(summary)))
        index.put_body(_record_rel(rel, name), sig, data)
    if obs._pending:
        obs._index = index
        index.hits += len(obs._pending)
    if observed is not None and len(observed.damaged) + len(observed.links) > n_problems:
        index.put_rows.pop(rel, None)
        index.rows[rel] = row or (rel,)  # rows left here are deleted by the next save
        return
    if dirty or entries:  # something changed: the folder's row is written again
        names = ([None] if has_candidate else []) + [n for n in obs.stage_dirs if is_stage_dir(n)]
        index.put_candidate(rel, st, has_candidate, obs.stage_dirs, kept, [_record_rel(rel, n) for n in entries],
                            complete=[e[0] for e in kept] == names)


def _record_rel(rel: str, name: str | None) -> str:
    return f"{rel}/{CANDIDATE_FILE}" if name is None else f"{rel}/{name}/{RECORD_FILE}"


def _set_record(obs: CandidateObs, name: str | None, rec):
    """A record read from its file, and its summary, into ``obs``; returns the summary."""
    if name is None:
        obs._record, obs.summary = rec, CandidateSummary.of(rec)
        return obs.summary
    obs._stages[name], obs.summaries[name] = rec, StageSummary.of(rec)
    return obs.summaries[name]


def scan(campaign_dir: Path, *, temp_files: bool = False, rescan: bool = False, use_index: bool = True,
         probe_alive: bool = True) -> Observed:
    """Read every record under ``campaign_dir``. Never writes.

    ``rescan``: ignore the index's rows and read every file (apply's save
    then rebuilds it). ``use_index=False``: the plain scan, no index at all.
    ``probe_alive``: mark running records whose process lives (only while
    some apply holds the lock); apply, which holds it, passes False.

    The garbage collector is paused while records are built (see
    ``aimmat.runtime.gcpause``).
    """
    campaign_dir = Path(campaign_dir)
    obs = Observed(campaign_dir)
    if not campaign_dir.is_dir():
        return obs
    obs.exists = True
    obs.lock_held = lock_held(campaign_dir)
    with gc_paused():
        if use_index:
            obs.index = Index(campaign_dir, rescan=rescan)
        _scan_into(obs, campaign_dir, obs.temp_files if temp_files else None, obs.index)
    obs.set_dirs.sort()
    if probe_alive and obs.lock_held:
        obs.alive = running_alive(obs.candidates.values())
    return obs


def running_alive(candidates) -> set[tuple[str, str, str]]:
    """(set, candidate, stage) of the running records whose process is alive."""
    return {(c.set_name, c.cand_id, stage) for c in candidates for stage, rec in c.summaries.items()
            if rec.status == "running" and process_alive(rec.host, rec.pid, rec.pid_start)}


def _link_to_folder(obs: Observed, entry) -> bool:
    """Whether ``entry`` (not a real folder) is a symlink to a folder: then
    it is collected on ``obs.links`` and never followed."""
    if not entry.is_symlink() or not os.path.isdir(entry.path):
        return False
    try:
        target = os.readlink(entry.path)
    except OSError:
        target = "?"
    obs.links.append((entry.path, target))
    return True


def _scan_into(obs: Observed, campaign_dir: Path, temps: list | None, index: Index | None) -> None:
    root = str(campaign_dir)
    try:
        with os.scandir(root) as it:
            top = list(it)
    except OSError as exc:
        raise CampaignError(f"{root}: the campaign folder cannot be listed: {exc.strerror or exc}",
                            fix="make it readable (chmod u+rx), or point the manifest's campaign root elsewhere") from None
    for entry in top:
        if entry.name.startswith(TMP_PREFIX):
            if temps is not None:
                temps.append(Path(entry.path))
            continue
        if entry.name in RESERVED or entry.name.startswith("."):
            continue
        if not entry.is_dir(follow_symlinks=False):
            if _link_to_folder(obs, entry):
                obs.set_dirs.append(entry.name)  # an orphan set behind a link is pruned as the link
            continue
        obs.set_dirs.append(entry.name)
        fd = None
        if index is not None and os.stat in os.supports_dir_fd:
            try:
                fd = os.open(entry.path, os.O_RDONLY | os.O_DIRECTORY)
            except OSError:
                fd = None
        try:
            for cand in _entries(entry.path, obs):
                if cand.name.startswith(TMP_PREFIX):
                    if temps is not None:
                        temps.append(Path(cand.path))
                elif cand.is_dir(follow_symlinks=False):
                    obs.candidates[(entry.name, cand.name)] = scan_candidate(root, entry.name, cand.name, temps, index, fd, obs)
                elif _link_to_folder(obs, cand):  # not read; an orphan is pruned as the link
                    obs.candidates[(entry.name, cand.name)] = CandidateObs(entry.name, cand.name)
        finally:
            if fd is not None:
                os.close(fd)
