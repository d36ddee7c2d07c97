"""Where things are in a campaign folder, and how a file's identity is read.

```
<campaign>/campaign.json  journal.jsonl  .aimmat.lock  .aimmat-index.sqlite
<campaign>/<set>/<candidate>/candidate.json
<campaign>/<set>/<candidate>/<stage>/record.json  attempt-<n>/
<campaign>/evidence/  manuscript/        (render)
<campaign>/learning/<cycle>/record.json  checkpoint.pt   (`aimmat model update`)
<campaign>/handoff/<set>/<candidate>/  <candidate>.zip   (`aimmat export handoff`)
<campaign>/waves/<wave>.json            (`aimmat waves freeze`: policy hash, selection, time)
<campaign>/shortlists/<set>.json        (apply: each final shortlist, with the triage bins of that moment)
<campaign>/publish/payloads/<set>/<candidate>.json  records/<set>/<candidate>.json   (`aimmat publish`)
```
"""

from __future__ import annotations

import os
import stat

from aimmat.manifest import stage_table

CANDIDATE_FILE = "candidate.json"
RECORD_FILE = "record.json"
CAMPAIGN_FILE = "campaign.json"
JOURNAL_FILE = "journal.jsonl"
LOCK_FILE = ".aimmat.lock"
INDEX_FILE = ".aimmat-index.sqlite"
# top-level entries that are not candidate sets
RESERVED = frozenset({JOURNAL_FILE, LOCK_FILE, CAMPAIGN_FILE, "evidence", "manuscript", "learning", "handoff", "waves", "publish", "shortlists", ".index", INDEX_FILE})

Sig = tuple[int, int, int, int]


def sig(st: os.stat_result) -> Sig:
    """A file's identity for caches: (size, mtime_ns, ctime_ns, inode).

    A rewrite by rename gives a new inode and ctime; an in-place rewrite
    changes mtime and ctime; restoring an old mtime still changes ctime."""
    return (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)


def is_stage_dir(name: str) -> bool:
    return stage_table.is_stage_dir(name)


def record_path(cdir: str, name: str | None) -> str:
    """candidate.json (``name`` None) or a stage's record.json under a candidate folder."""
    return f"{cdir}/{CANDIDATE_FILE}" if name is None else f"{cdir}/{name}/{RECORD_FILE}"


def symlink_in(campaign_dir, path) -> tuple[str, str] | None:
    """(link, its target) of the first symlink on the way from ``campaign_dir``
    (itself not checked: a campaign folder may live behind a link) down to
    ``path`` (checked too); ``("", reason)`` when ``path`` is not inside the
    campaign folder; None when every existing component is a real folder
    or file. Writers call it before writing: apply never follows a link out
    of the campaign folder."""
    root = os.path.abspath(campaign_dir)
    rel = os.path.relpath(os.path.abspath(path), root)
    if rel == os.pardir or rel.startswith(os.pardir + os.sep) or os.path.isabs(rel):
        return "", f"{path} is outside the campaign folder {root}"
    cur = root
    for part in ([] if rel == os.curdir else rel.split(os.sep)):
        cur = os.path.join(cur, part)
        try:
            st = os.lstat(cur)
        except (FileNotFoundError, NotADirectoryError):  # the rest is created by the write (or fails there)
            return None
        if stat.S_ISLNK(st.st_mode):
            try:
                target = os.readlink(cur)
            except OSError:
                target = "?"
            return cur, target
    return None
