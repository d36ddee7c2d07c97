"""Scan the campaign folder into records. Scanning never writes.

Records come through the index (``aimmat.state.index``) where a row's stat
signature matches its file, else from the file; the result is the same.
Writing the index is the caller's step (``save_index``), except under the
campaign lock held by this process (apply), where a scan saves it itself.
"""

from __future__ import annotations

import gc
import os
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import ValidationError

from aimmat.errors import CampaignError
from aimmat.manifest.models import STAGES
from aimmat.state.atomic import TMP_PREFIX
from aimmat.state.index import INDEX_FILE, Index
from aimmat.state.lock import held_here, lock_held
from aimmat.state.records import CandidateRecord, StageRecord

CANDIDATE_FILE = "candidate.json"
RECORD_FILE = "record.json"
CAMPAIGN_FILE = "campaign.json"
_RESERVED = {"journal.jsonl", ".aimmat.lock", CAMPAIGN_FILE, "evidence", "manuscript", ".index", INDEX_FILE}


@dataclass
class CandidateObs:
    set_name: str
    cand_id: str
    record: CandidateRecord | None = None
    stages: dict[str, StageRecord] = field(default_factory=dict)
    stage_dirs: list[str] = field(default_factory=list)


@dataclass
class Observed:
    campaign_dir: Path
    exists: bool = False
    candidates: dict[tuple[str, str], CandidateObs] = field(default_factory=dict)
    set_dirs: list[str] = field(default_factory=list)
    temp_files: list[Path] = field(default_factory=list)
    lock_held: bool = False
    index: Index | None = field(default=None, repr=False, compare=False)


def read_stage_record(path) -> StageRecord | None:
    return _read_if_exists(str(path), StageRecord)


def read_candidate_record(path) -> CandidateRecord | None:
    return _read_if_exists(str(path), CandidateRecord)


def _entries(path):
    try:
        with os.scandir(path) as it:
            return list(it)
    except FileNotFoundError:
        return []


def _read_if_exists(path: str, model, index: Index | None = None, rel: str = ""):
    if index is not None:
        found, rec = index.read(rel, path, model)
        if found:
            return rec
    try:
        with open(path, "rb") as fh:
            st = os.fstat(fh.fileno())  # before reading: a later rewrite changes what the index compares
            data = fh.read()
    except (FileNotFoundError, NotADirectoryError):
        return None
    try:
        rec = model.model_validate_json(data)
    except (ValidationError, ValueError) as exc:
        raise CampaignError(
            f"{path}: unreadable {model.__name__}: {str(exc).splitlines()[0]}",
            fix=f"restore the file from a backup, or delete its folder ({os.path.dirname(path)}) to recompute it",
        ) from None
    if index is not None:
        index.put(rel, st, rec)
    return rec


def _is_stage(name: str) -> bool:
    return name in STAGES or name.startswith("ablation-")


def _list_candidate(cdir: str, temp_files: list | None) -> tuple[bool, list[str]]:
    """(candidate.json present, sorted stage folders) of a candidate folder;
    with ``temp_files`` given, also collect half-written temp files."""
    has_candidate, stage_dirs = False, []
    for entry in _entries(cdir):
        name = entry.name
        if name.startswith(TMP_PREFIX):
            if temp_files is not None:
                temp_files.append(Path(entry.path))
        elif name == CANDIDATE_FILE:
            has_candidate = True
        elif name in STAGES or entry.is_dir():
            stage_dirs.append(name)
            if temp_files is not None and _is_stage(name):
                for e in _entries(entry.path):
                    if e.name.startswith(TMP_PREFIX):
                        temp_files.append(Path(e.path))
                    elif e.name.startswith("attempt-") and e.is_dir():  # outcome.json of a killed attempt
                        temp_files.extend(Path(t.path) for t in _entries(e.path) if t.name.startswith(TMP_PREFIX))
    stage_dirs.sort()
    return has_candidate, stage_dirs


def scan_candidate(campaign_dir, set_name: str, cand_id: str, temp_files: list | None = None,
                   index: Index | None = None) -> CandidateObs:
    """Records of one candidate. With ``temp_files`` given, also collect
    half-written temp files (apply sweeps them; diff does not need them)."""
    obs = CandidateObs(set_name, cand_id)
    rel = f"{set_name}/{cand_id}"
    cdir = f"{campaign_dir}/{rel}"  # os.path.join costs more than the stat it feeds, 400k times at 100k candidates
    cached = None
    if index is not None:
        st, cached = index.listing(rel, cdir)
        if st is None:  # the folder is gone
            return obs
    if cached is not None and temp_files is None:
        has_candidate, stage_dirs = cached
    else:
        has_candidate, stage_dirs = _list_candidate(cdir, temp_files)
        if index is not None:
            index.put_listing(rel, st, has_candidate, stage_dirs)
    obs.stage_dirs = stage_dirs
    if has_candidate:
        obs.record = _read_if_exists(f"{cdir}/{CANDIDATE_FILE}", CandidateRecord, index, f"{rel}/{CANDIDATE_FILE}")
    for name in stage_dirs:
        if _is_stage(name):
            rec = _read_if_exists(f"{cdir}/{name}/{RECORD_FILE}", StageRecord, index, f"{rel}/{name}/{RECORD_FILE}")
            if rec is not None:
                obs.stages[name] = rec
    return obs


def scan(campaign_dir: Path, *, temp_files: bool = False, rescan: bool = False, use_index: bool = True) -> Observed:
    """Read every record under ``campaign_dir``. Never writes, except the
    index when this process holds the campaign lock (see the module doc).

    ``rescan``: ignore the index's rows and read every file (``save_index``
    then rebuilds it). ``use_index=False``: the plain scan, no index at all.

    The garbage collector is paused while records are built: the scan makes
    hundreds of thousands of long-lived containers, and each automatic
    collection would walk all of them again (half the scan time at 10k
    candidates, measured by bench/reconcile.py).
    """
    campaign_dir = Path(campaign_dir)
    obs = Observed(campaign_dir)
    if not campaign_dir.is_dir():
        return obs
    obs.exists = True
    obs.lock_held = lock_held(campaign_dir)
    enabled = gc.isenabled()
    gc.disable()
    try:
        if use_index:
            obs.index = Index(campaign_dir, rescan=rescan)
        _scan_into(obs, campaign_dir, obs.temp_files if temp_files else None, obs.index)
    finally:
        # The records live as long as the command: hand them to the oldest
        # generation in O(1) (freeze, unfreeze) instead of letting the next
        # young collections walk all of them twice (0.5 s each at 10k).
        gc.freeze()
        gc.unfreeze()
        if enabled:
            gc.enable()
    obs.set_dirs.sort()
    if obs.index is not None and held_here(campaign_dir):
        obs.index.save()
    return obs


def save_index(observed: Observed) -> bool:
    """Write what ``scan`` found changed into the index; call it once the
    command has succeeded. False when nothing was written; never raises."""
    return observed.index is not None and observed.exists and observed.index.save()


def _scan_into(obs: Observed, campaign_dir: Path, temps: list | None, index: Index | None) -> None:
    root = str(campaign_dir)
    for entry in _entries(root):
        if entry.name.startswith(TMP_PREFIX):
            if temps is not None:
                temps.append(Path(entry.path))
            continue
        if entry.name in _RESERVED or not entry.is_dir() or entry.name.startswith("."):
            continue
        obs.set_dirs.append(entry.name)
        for cand in _entries(entry.path):
            if cand.name.startswith(TMP_PREFIX):
                if temps is not None:
                    temps.append(Path(cand.path))
            elif cand.is_dir():
                obs.candidates[(entry.name, cand.name)] = scan_candidate(root, entry.name, cand.name, temps, index)
