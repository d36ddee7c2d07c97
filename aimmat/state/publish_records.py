"""Publish records (``aimmat publish``) as the snapshot reads them: one JSON file per uploaded contribution
under ``<campaign>/publish/records/<set>/<candidate>.json``; dry-run payloads under ``publish/payloads/``."""

from __future__ import annotations

import json
import os
from pathlib import Path

AREA = "publish"


def _json_files(root: Path):
    """The parsed JSON dicts of ``root/*/*.json``; links and unreadable files are skipped."""
    if os.path.islink(root) or not root.is_dir():
        return
    for path in sorted(root.glob("*/*.json")):
        if path.is_symlink() or path.parent.is_symlink():
            continue
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(data, dict):
            yield data


def read_records(campaign_dir, project: str | None = None) -> list[dict]:
    """Every publish record of the campaign (of ``project`` when given)."""
    return [r for r in _json_files(Path(campaign_dir) / AREA / "records") if project is None or r.get("project") == project]


def count_payloads(campaign_dir, project: str | None = None) -> int:
    """Payloads the last `aimmat publish` prepared (for ``project`` when given)."""
    return sum(1 for b in _json_files(Path(campaign_dir) / AREA / "payloads") if project is None or b.get("project") == project)
