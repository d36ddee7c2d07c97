"""Scan the campaign folder into records. Scanning never writes."""

from __future__ import annotations

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


def _load(path: Path, model):
    try:
        return model.model_validate_json(path.read_bytes())
    except (ValidationError, ValueError) as exc:
        raise CampaignError(
            f"{path}: unreadable {model.__name__}: {str(exc).splitlines()[0]}",
            fix=f"restore the file from a backup, or delete its folder ({path.parent}) to recompute it",
        ) from None


def read_stage_record(path: Path) -> StageRecord:
    return _load(path, StageRecord)


def read_candidate_record(path: Path) -> CandidateRecord:
    return _load(path, CandidateRecord)


def _entries(path: Path):
    try:
        with os.scandir(path) as it:
            return list(it)
    except FileNotFoundError:
        return []


def scan_candidate(campaign_dir: Path, set_name: str, cand_id: str, temp_files: list | None = None) -> CandidateObs:
    obs = CandidateObs(set_name, cand_id)
    cdir = campaign_dir / set_name / cand_id
    for entry in _entries(cdir):
        if entry.name.startswith(TMP_PREFIX):
            if temp_files is not None:
                temp_files.append(Path(entry.path))
        elif entry.name == CANDIDATE_FILE:
            obs.record = read_candidate_record(Path(entry.path))
        elif entry.is_dir():
            obs.stage_dirs.append(entry.name)
            if entry.name in STAGES:
                rec_path = Path(entry.path) / RECORD_FILE
                for sub in _entries(Path(entry.path)):
                    if sub.name.startswith(TMP_PREFIX) and temp_files is not None:
                        temp_files.append(Path(sub.path))
                if rec_path.exists():
                    obs.stages[entry.name] = read_stage_record(rec_path)
    return obs


def scan(campaign_dir: Path) -> Observed:
    campaign_dir = Path(campaign_dir)
    obs = Observed(campaign_dir)
    if not campaign_dir.is_dir():
        return obs
    obs.exists = True
    obs.lock_held = lock_held(campaign_dir)
    for entry in _entries(campaign_dir):
        if entry.name.startswith(TMP_PREFIX):
            obs.temp_files.append(Path(entry.path))
            continue
        if entry.name in _RESERVED or not entry.is_dir() or entry.name.startswith("."):
            continue
        obs.set_dirs.append(entry.name)
        for cand in _entries(Path(entry.path)):
            if cand.name.startswith(TMP_PREFIX):
                obs.temp_files.append(Path(cand.path))
            elif cand.is_dir():
                obs.candidates[(entry.name, cand.name)] = scan_candidate(
                    campaign_dir, entry.name, cand.name, obs.temp_files
                )
    obs.set_dirs.sort()
    return obs
