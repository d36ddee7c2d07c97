"""Pre-registered rerun waves: a wave's policy is frozen, with the candidates it selects, before it runs.

``aimmat waves freeze MANIFEST W`` evaluates wave W's selection policy on the records as they are and writes
``<campaign>/waves/<W>.json``: the policy, its sha256, the time, and per selected candidate the stage the wave
reruns (the failed stage, or for a candidate below its shortlist the first engine stage) and why it was taken.
Planning (``diff``, ``apply``) refuses a manifest that declares a wave that is not frozen, or whose policy
differs from the frozen one (exit 3): the wave cannot be tuned after its outcome is known. A frozen wave's
candidates run the wave's stage under a key that carries the wave (name, policy hash, overrides), so every
attempt it triggers is recorded as the wave's, with the intervention named.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from aimmat.errors import CampaignError, ManifestError
from aimmat.identity import sha256_json
from aimmat.manifest import stage_table
from aimmat.manifest.load import CampaignSpec
from aimmat.state import journal
from aimmat.state.atomic import write_bytes_atomic
from aimmat.state.layout import symlink_in
from aimmat.state.scan import Observed
from aimmat.state.shortlisted import not_shortlisted, recorded_shortlists
from aimmat.state.status import candidate_status

WAVES_DIR = "waves"


@dataclass(frozen=True)
class Assignment:
    """One selected candidate of a frozen wave: what its wave stage runs with."""

    wave: str
    stage: str
    policy_sha256: str
    overrides: dict
    max_attempts: int
    intervention: str

    def settings(self) -> dict:
        """What goes into the stage key (and so into every attempt's record)."""
        return {"name": self.wave, "policy_sha256": self.policy_sha256, "overrides": dict(sorted(self.overrides.items()))}


def policy_sha256(wave) -> str:
    return sha256_json(wave.model_dump(mode="json"))


def intervention_label(wave) -> str:
    return wave.intervention or (", ".join(f"{k}={v}" for k, v in sorted(wave.overrides.items())) or "rerun unchanged")


def _path(spec: CampaignSpec, name: str) -> Path:
    return spec.campaign_dir / WAVES_DIR / f"{name}.json"


def read_frozen(spec: CampaignSpec, name: str) -> dict | None:
    path = _path(spec, name)
    if os.path.islink(path) or os.path.islink(path.parent):
        raise CampaignError(f"{path} is a symlink; a frozen wave must be a file of the campaign", fix=f"remove {path}")
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise CampaignError(f"{path}: unreadable frozen wave ({exc})", fix="restore it from a backup") from None


def _first_engine_stage(spec: CampaignSpec) -> str | None:
    return next((d.name for d in spec.chain() if d.kind == "engine"), None)


def select(spec: CampaignSpec, observed: Observed, wave) -> list[dict]:
    """The candidates ``wave`` takes from the records now, best score first (unranked: by name)."""
    sel = wave.select
    lists = recorded_shortlists(spec, observed)
    below = not_shortlisted(lists)
    scores = {(s, cid): rs for s, (sl, _) in lists.items() for cid, rs in sl.ranks.items()}
    preds = {}
    for s, (_, per) in lists.items():
        for (cid, _), rec in per:
            if rec is not None and rec.prediction:
                preds[(s, cid)] = rec.prediction
    first_engine = _first_engine_stage(spec)
    out = []
    for src in spec.candidates:
        ck = (src.set_name, src.cand_id)
        if sel.sets is not None and src.set_name not in sel.sets:
            continue
        cobs = observed.candidates.get(ck)
        status, detail = candidate_status(cobs, spec.stages, None, below.get(ck))
        if status not in sel.statuses:
            continue
        if status == "not_shortlisted":
            stage, code, tries = first_engine, None, 0
        else:
            stage = next((st for st in spec.stages if st in cobs.summaries and cobs.summaries[st].status == "failed"), None)
            if stage is None:
                continue
            rec = cobs.stages[stage]
            code, tries = rec.failure_code, sum(1 for a in rec.attempts if a.key == rec.key)
            if sel.failure_classes is not None and code not in sel.failure_classes:
                continue
            if sel.max_previous_attempts is not None and tries > sel.max_previous_attempts:
                continue
        rank_score = scores.get(ck)
        unc = (preds.get(ck) or {}).get("terms", {}).get("uncertainty")
        if sel.score_min is not None and (rank_score is None or rank_score[1] < sel.score_min):
            continue
        if sel.uncertainty_max_dex is not None and (unc is None or unc > sel.uncertainty_max_dex):
            continue
        out.append({"candidate": f"{src.set_name}/{src.cand_id}", "stage": stage, "status": status,
                    "failure_code": code, "previous_attempts": tries,
                    "score": None if rank_score is None else round(rank_score[1], 6),
                    "uncertainty_dex": None if unc is None else round(unc, 6)})
    out.sort(key=lambda r: (r["score"] is None, -(r["score"] or 0.0), r["candidate"]))
    return out[: sel.max_candidates]


def freeze(spec: CampaignSpec, observed: Observed, name: str) -> tuple[dict, bool]:
    """Freeze wave ``name``: (its record, whether it was written now). Frozen already with the same policy:
    unchanged (False). Frozen with another policy: refused; a wave is never re-frozen."""
    wave = next((w for w in spec.manifest.waves if w.name == name), None)
    if wave is None:
        raise ManifestError(f"{spec.path}: no wave '{name}' (waves: {', '.join(w.name for w in spec.manifest.waves) or 'none'})",
                            fix="declare it under `waves:` first")
    sha = policy_sha256(wave)
    old = read_frozen(spec, name)
    if old is not None:
        if old.get("policy_sha256") == sha:
            return old, False
        raise ManifestError(f"wave '{name}' was frozen at {old.get('frozen_at')} with policy {str(old.get('policy_sha256'))[:12]}; "
                            f"the manifest's policy is now {sha[:12]}: a frozen wave's policy cannot change",
                            fix=f"restore the frozen policy (it is in {_path(spec, name)}), or declare a new wave with another name")
    stage_names = set(spec.stages)
    bad = [k for k in wave.overrides if not _reaches(spec, k, stage_names)]
    if bad:
        raise ManifestError(f"wave '{name}': override(s) {', '.join(bad)} are not fields of the profiles its stages run with")
    selected = select(spec, observed, wave)
    rec = {"name": name, "policy": wave.model_dump(mode="json"), "policy_sha256": sha, "manifest_sha256": spec.sha256,
           "frozen_at": journal.now_iso(), "intervention": intervention_label(wave), "selected": selected}
    path = _path(spec, name)
    link = symlink_in(spec.campaign_dir, path)
    if link is not None:
        raise CampaignError(f"{path}: {link[0]} leads out of the campaign folder ({link[1]}); refused", fix=f"remove {link[0]}")
    path.parent.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(path, (json.dumps(rec, indent=1, sort_keys=True) + "\n").encode())
    journal.append(spec.campaign_dir, "wave_frozen", wave=name, policy_sha256=sha, selected=len(selected))
    return rec, True


def _reaches(spec: CampaignSpec, field: str, stages: set) -> bool:
    for st in stages:
        name = spec.profile_name(st) if stage_table.get(st).kind == "engine" else None
        if name and field in type(spec.manifest.profiles[name]).model_fields:
            return True
    return False


def assignments(spec: CampaignSpec) -> dict[tuple[str, str, str], Assignment]:
    """(set, candidate, stage) -> Assignment of every declared wave; a later wave replaces an earlier one only for
    the same stage (an earlier wave's run of another stage keeps its key). A declared wave that is not frozen,
    or whose policy changed after freezing, is refused (ManifestError, exit 3)."""
    out: dict[tuple[str, str, str], Assignment] = {}
    for w in spec.manifest.waves:
        rec = read_frozen(spec, w.name)
        sha = policy_sha256(w)
        if rec is None:
            raise ManifestError(f"{spec.path}: wave '{w.name}' is declared but not frozen: its selection must be recorded "
                                "before it runs", fix=f"aimmat waves freeze {spec.path} {w.name}")
        if rec.get("policy_sha256") != sha:
            raise ManifestError(f"{spec.path}: wave '{w.name}' changed after it was frozen at {rec.get('frozen_at')} "
                                f"(frozen policy {str(rec.get('policy_sha256'))[:12]}, manifest {sha[:12]}); refused",
                                fix=f"restore the frozen policy (in {_path(spec, w.name)}), or declare a new wave")
        label = rec.get("intervention") or intervention_label(w)
        for r in rec.get("selected", []):
            s, c = r["candidate"].split("/", 1)
            out[(s, c, r["stage"])] = Assignment(w.name, r["stage"], sha, dict(w.overrides), w.max_attempts, label)
    return out
