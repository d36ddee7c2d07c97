"""Scan the campaign folder into records. Scanning never writes."""

from __future__ import annotations

import gc
import os
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import ValidationError

from aimmat.errors import CampaignError
from aimmat.manifest.models import STAGES
from aimmat.state.atomic import TMP_PREFIX
from aimmat.state.lock import lock_held
from aimmat.state.records import CandidateRecord, StageRecord

CANDIDATE_FILE = "candidate.json"
RECORD_FILE = "record.json"
CAMPAIGN_FILE = "campaign.json"
_RESERVED = {"journal.jsonl", ".aimmat.lock", CAMPAIGN_FILE, "evidence", "manuscript", ".index"}


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


def _read_if_exists(path: str, model):
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except (FileNotFoundError, NotADirectoryError):
        return None
    try:
        return model.model_validate_json(data)
    except (ValidationError, ValueError) as exc:
        raise CampaignError(
            f"{path}: unreadable {model.__name__}: {str(exc).splitlines()[0]}",
            fix=f"restore the file from a backup, or delete its folder ({os.path.dirname(path)}) to recompute it",
        ) from None


def scan_candidate(campaign_dir, set_name: str, cand_id: str, temp_files: list | None = None) -> CandidateObs:
    """Records of one candidate. With ``temp_files`` given, also collect
    half-written temp files (apply sweeps them; diff does not need them)."""
    obs = CandidateObs(set_name, cand_id)
    cdir = os.path.join(campaign_dir, set_name, cand_id)
    for entry in _entries(cdir):
        name = entry.name
        if name.startswith(TMP_PREFIX):
            if temp_files is not None:
                temp_files.append(Path(entry.path))
        elif name == CANDIDATE_FILE:
            obs.record = _read_if_exists(entry.path, CandidateRecord)
        elif name in STAGES or entry.is_dir():
            obs.stage_dirs.append(name)
            if name in STAGES or name.startswith("ablation-"):
                if temp_files is not None:
                    for e in _entries(entry.path):
                        if e.name.startswith(TMP_PREFIX):
                            temp_files.append(Path(e.path))
                        elif e.name.startswith("attempt-") and e.is_dir():  # outcome.json of a killed attempt
                            temp_files.extend(Path(t.path) for t in _entries(e.path) if t.name.startswith(TMP_PREFIX))
                rec = _read_if_exists(os.path.join(entry.path, RECORD_FILE), StageRecord)
                if rec is not None:
                    obs.stages[name] = rec
    return obs


def scan(campaign_dir: Path, *, temp_files: bool = False) -> Observed:
    """Read every record under ``campaign_dir``. Never writes.

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
        _scan_into(obs, campaign_dir, obs.temp_files if temp_files else None)
    finally:
        if enabled:
            gc.enable()
    obs.set_dirs.sort()
    return obs


def _scan_into(obs: Observed, campaign_dir: Path, temps: list | None) -> None:
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
                obs.candidates[(entry.name, cand.name)] = scan_candidate(root, entry.name, cand.name, temps)
