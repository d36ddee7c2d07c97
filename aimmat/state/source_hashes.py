"""Source-file hashes cached by stat signature (as git's index caches blobs).

At 100k candidates, hashing every source file was a third of a warm diff.
The manifest loader asks ``sha256(path, stat)``; a row is trusted while the
file's signature matches, with the racy-file rule of ``aimmat.state.index``.
The rows are written back with the records by apply (``save_index``).
"""

from __future__ import annotations

import os
import sqlite3
import time
from typing import Any

from aimmat.identity import sha256_file
from aimmat.state import index as _index
from aimmat.state.index import _connect_ro, _valid, index_path
from aimmat.state.layout import sig


class SourceHashes:
    """sha256 of candidate source files, trusted from the index while the
    file's stat signature matches (as records are; see the module doc).

    At 100k candidates, hashing every source file was a third of a warm
    diff. ``load_manifest`` asks ``sha256``; the rows go back into the index
    with the records (``aimmat.state.scan.save_index``), so only a command
    that succeeded writes them.
    """

    def __init__(self, campaign_dir, *, rescan: bool = False):
        self.path = index_path(campaign_dir)
        self.racy_after = time.time_ns() - _index.RACY_NS  # read at call time: tests shrink the window
        self.rows: dict[str, tuple] = {}
        self.seen: dict[str, tuple] = {}
        self.changed = False
        if not rescan and self.path.exists():
            try:
                conn = _connect_ro(self.path)
                try:
                    if _valid(conn):
                        self.rows = {r[0]: r for r in conn.execute("SELECT path, size, mtime_ns, ctime_ns, ino, sha256 FROM sources")}
                finally:
                    conn.close()
            except sqlite3.Error:
                self.rows = {}
        self._known = len(self.rows)

    def sha256(self, path: str, st: os.stat_result) -> str:
        row = self.rows.get(path)
        if row is not None and tuple(row[1:5]) == sig(st):
            self.seen[path] = row
            return row[5]
        digest = sha256_file(path)
        mtime = st.st_mtime_ns if st.st_ctime_ns < self.racy_after else -1
        self.seen[path] = (path, st.st_size, mtime, st.st_ctime_ns, st.st_ino, digest)
        self.changed = True
        return digest

    def finish(self) -> None:
        """After every source was asked: rows of files no longer in the manifest make a change."""
        if len(self.seen) != self._known:
            self.changed = True


def stats(campaign_dir) -> dict[str, Any]:
    """Rows in the index (for tests and the benchmark); empty when unreadable."""
    try:
        conn = sqlite3.connect(index_path(campaign_dir).resolve().as_uri() + "?mode=ro", uri=True)
        try:
            return {"records": conn.execute("SELECT count(*) FROM bodies").fetchone()[0],
                    "dirs": conn.execute("SELECT count(*) FROM cands").fetchone()[0]}
        finally:
            conn.close()
    except sqlite3.Error:
        return {}
