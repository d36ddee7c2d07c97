"""Writing the record index: apply's job, under the campaign lock.

A scan collects what it found changed on its ``Index`` (``put_candidate``,
``put_body``) and, with the manifest's source-file hashes, ``save_index``
writes it in one transaction. Any trouble (locked, read-only, disk full)
leaves the old index: it is a cache. A corrupted file is replaced.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

from aimmat.state.index import _DDL, _OK, _REBUILD, _SKIP, _TABLES, SCHEMA, TIMEOUT_S, Index, _corrupt, fingerprint


def save_index(index: Index | None, sources=None) -> bool:
    """Write what the scan behind ``index`` changed, with ``sources``
    (``SourceHashes`` the manifest was loaded with). False when nothing was
    written; never raises."""
    if index is None:
        return False
    if sources is not None and sources.path == index.path:
        sources.finish()
        index.sources = sources
    return _save(index)


def _changed(index: Index) -> bool:
    return bool(index.put_rows or index.rows or index.gone_bodies or (index.sources and index.sources.changed))

def _save(self: Index) -> bool:
    """Write what this scan changed; False when nothing was written. Never raises."""
    if self.state == _SKIP or not self.path.parent.is_dir():
        return False
    if self.state == _OK and not _changed(self):
        return False
    if self.state == _REBUILD and not self.put_rows and not self.path.exists():
        return False  # nothing to index: create no file
    if self._conn is not None:
        self._conn[1].close()
        self._conn = None
    try:
        _write(self)
    except sqlite3.DatabaseError as exc:
        if not _corrupt(exc):
            return False
        try:  # a corrupted file: start a new one
            for p in (self.path, Path(str(self.path) + "-journal")):
                p.unlink(missing_ok=True)
            _write(self)
        except (sqlite3.Error, OSError):
            return False
    except OSError:
        return False
    self.state, self.rows, self.put_rows, self.put_bodies, self.gone_bodies = _OK, {}, {}, {}, []
    if self.sources is not None:
        self.sources.changed = False
    return True

def _write(self: Index) -> None:
    # The index holds the records' contents: created as they are (0666 & ~umask, as any
    # file aimmat writes), so it is no more readable than they are.
    os.close(os.open(self.path, os.O_CREAT | os.O_WRONLY | os.O_CLOEXEC, 0o666))
    conn = sqlite3.connect(str(self.path), timeout=TIMEOUT_S, isolation_level=None)
    try:
        conn.execute("BEGIN IMMEDIATE")
        try:
            row = None
            if self.state == _OK:
                try:
                    row = conn.execute("SELECT v FROM meta WHERE k = 'fingerprint'").fetchone()
                except sqlite3.OperationalError:
                    row = None
            rebuilt = not row or row[0] != fingerprint()
            if rebuilt:  # rebuild, or another version rebuilt it meanwhile
                for table in _TABLES:
                    conn.execute(f"DROP TABLE IF EXISTS {table}")
                for ddl in _DDL:
                    conn.execute(ddl)
                conn.execute("INSERT INTO meta VALUES ('fingerprint', ?)", (fingerprint(),))
                conn.execute("INSERT INTO meta VALUES ('schema', ?)", (str(SCHEMA),))
            else:
                conn.executemany("DELETE FROM cands WHERE path = ?", ((p,) for p in self.rows))
                # bodies of vanished folders: the key range of "<folder>/..."
                conn.executemany("DELETE FROM bodies WHERE path >= ? AND path < ?",
                                 ((p + "/", p + "0") for p in self.rows))
                conn.executemany("DELETE FROM bodies WHERE path = ?", ((p,) for p in self.gone_bodies))
            conn.executemany("INSERT OR REPLACE INTO cands VALUES (?, ?, ?, ?, ?, ?, ?, ?)", self.put_rows.values())
            conn.executemany("INSERT OR REPLACE INTO bodies VALUES (?, ?, ?, ?, ?, ?)", self.put_bodies.values())
            if self.sources is not None and (rebuilt or self.sources.changed):
                conn.execute("DELETE FROM sources")
                conn.executemany("INSERT OR REPLACE INTO sources VALUES (?, ?, ?, ?, ?, ?)", self.sources.seen.values())
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
    finally:
        conn.close()


