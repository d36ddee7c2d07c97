"""Publish records (``aimmat publish``) as the snapshot reads them: one JSON file per uploaded contribution
under ``<campaign>/publish/records/<set>/<candidate>.json``; dry-run payloads under ``publish/payloads/``."""

from __future__ import annotations

import json
import os
from pathlib import Path

AREA = "publish"


def read_records(campaign_dir, project: str | None = None) -> list[dict]:
    """Every publish record of the campaign (of ``project`` when given); links and unreadable files are skipped."""
    root = Path(campaign_dir) / AREA / "records"
    out = []
    if os.path.islink(root) or not root.is_dir():
        return out
    for path in sorted(root.glob("*/*.json")):
        if path.is_symlink() or path.parent.is_symlink():
            continue
        try:
            rec = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(rec, dict) and (project is None or rec.get("project") == project):
            out.append(rec)
    return out


def count_payloads(campaign_dir, project: str | None = None) -> int:
    """Payloads the last `aimmat publish` prepared (for ``project`` when given)."""
    root = Path(campaign_dir) / AREA / "payloads"
    if os.path.islink(root) or not root.is_dir():
        return 0
    n = 0
    for p in root.glob("*/*.json"):
        if p.is_symlink() or p.parent.is_symlink():
            continue
        try:
            body = json.loads(p.read_text())
        except (OSError, ValueError):
            continue
        n += isinstance(body, dict) and (project is None or body.get("project") == project)
    return n
