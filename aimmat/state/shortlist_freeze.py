"""Shortlists frozen when they become final, with the triage bins declared at that moment.

A ranked set's shortlist is final once every candidate is imported and screened; apply then records it in
``<campaign>/shortlists/<set>.json`` (members, top_k, weights, the ranking checkpoint, the manifest's
``evidence.triage`` bins and the time) before the first engine stage runs for it. The uncertainty triage
reads its bins from there: bins changed in the manifest afterwards are reported, not used, so they cannot
be chosen after the conversions are known. A shortlist whose membership changes (more candidates, another
top_k) is recorded as a new entry, with the bins of that moment.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from aimmat.manifest.load import CampaignSpec
from aimmat.state import journal
from aimmat.state.atomic import write_bytes_atomic
from aimmat.state.layout import symlink_in

AREA = "shortlists"


def _path(campaign_dir, set_name: str) -> Path:
    return Path(campaign_dir) / AREA / f"{set_name}.json"


def read(campaign_dir, set_name: str) -> list[dict]:
    path = _path(campaign_dir, set_name)
    if os.path.islink(path) or os.path.islink(path.parent) or not path.is_file():
        return []
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return []
    return data if isinstance(data, list) else []


def freeze_final(spec: CampaignSpec, lists: dict) -> list[str]:
    """Record each final shortlist of ``lists`` (set -> aimmat.model.rank.Shortlist) that is not recorded yet;
    the names of the sets written. Called by apply under the campaign lock."""
    written = []
    triage = spec.manifest.evidence.triage
    for set_name, sl in sorted(lists.items()):
        if sl is None or sl.waiting:
            continue
        members = sorted(sl.members)
        entries = read(spec.campaign_dir, set_name)
        if entries and entries[-1].get("members") == members:
            last = entries[-1]
            if last.get("triage_bins_dex") is not None or triage is None:
                continue  # the same shortlist: its bins stay those frozen with it
            # bins declared after the shortlist was frozen: recorded now, with their own time (the triage says so)
            last["triage_bins_dex"], last["triage_bins_frozen_at"] = list(triage.bins_dex), journal.now_iso()
            if _write(spec, set_name, entries):
                written.append(set_name)
            continue
        cset = next(c for c in spec.manifest.candidate_sets if c.name == set_name)
        model = cset.rank_model()
        entries.append({"members": members, "top_k": sl.top_k, "weights": dict(cset.rank.weights), "model": model,
                        "checkpoint_sha256": spec.manifest.models[model].sha256.lower() if model in spec.manifest.models else None,
                        "ranks": {c: [r, round(s, 6)] for c, (r, s) in sorted(sl.ranks.items()) if c in sl.members},
                        "triage_bins_dex": list(triage.bins_dex) if triage is not None else None,
                        "frozen_at": journal.now_iso()})
        if _write(spec, set_name, entries):
            written.append(set_name)
    return written


def _write(spec: CampaignSpec, set_name: str, entries: list) -> bool:
    path = _path(spec.campaign_dir, set_name)
    if symlink_in(spec.campaign_dir, path) is not None:
        return False  # never written through a link; the triage then says the bins are not frozen
    path.parent.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(path, (json.dumps(entries, indent=1, sort_keys=True) + "\n").encode())
    return True
