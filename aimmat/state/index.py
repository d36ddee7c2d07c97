"""An embedded SQLite index of records: a cache, never the truth.

``<campaign>/.aimmat-index.sqlite`` holds one row per candidate folder: the
folder's stat signature (size, mtime_ns, ctime_ns, inode), its listing
(whether ``candidate.json`` is there, which stage folders) and, packed with
``marshal``, per record file (``candidate.json``, ``<stage>/record.json``)
its signature and summary (``aimmat.state.summary``: the fields the plan
reads). The record files' bytes are in a second table, read (and validated
as the file would be) only when a command asks for a full record. ``scan`` stats every candidate
folder and record file and uses an entry only when the signature matches
exactly; a changed, new or vanished file is read from the folder as without
the index. So deleting, corrupting or copying the index changes no result,
only the time.

Why one row per candidate: a warm diff of 100k candidates is bounded by
the stat calls (5 per candidate) and by turning rows into Python objects;
one row and one ``marshal.loads`` per candidate costs a third of five rows.

Why a matching signature is enough: apply writes records by rename, which
gives a new inode (and ctime); an in-place rewrite changes mtime and ctime,
and restoring an old mtime (``touch -d``, ``cp -p``) still changes ctime.
The one blind spot, a rewrite of the same size within one timestamp tick of
the read, is closed as git closes it ("racy git"): a file whose ctime is
within ``RACY_NS`` of the scan's start is stored with an impossible mtime,
so the next scan reads it again.

Who writes it: ``scan`` reads the index (opened read-only) and collects
what changed; ``aimmat.state.index_write.save_index`` writes it in one
transaction, and only apply calls it, under the campaign lock. diff,
status, evidence and render read it and leave the folder byte-identical;
when it is stale they read the changed files (and say nothing: it is a cache). Any index trouble (``database is locked``, a
corrupted file, a read-only folder, a full disk) falls back to reading the
files; a corrupted file or another schema is rebuilt on the next save.
"""

from __future__ import annotations

import hashlib
import json
import marshal
import os
import sqlite3
import sys
import time
from pathlib import Path

from pydantic import BaseModel

from aimmat.state.layout import INDEX_FILE
from aimmat.state.records import CandidateRecord, StageRecord
from aimmat.state.summary import CandidateSummary, StageSummary

SCHEMA = 4  # 2: one row per candidate folder with packed record summaries; bodies apart; source hashes; 3: symlinks never indexed;
# 4: a screen's summary carries its pre-relaxed structure's sha256
RACY_NS = 5_000_000_000  # covers 1-2 s timestamp ticks and ordinary clock skew on shared file systems
TIMEOUT_S = 2.0  # waiting for another writer's transaction; then fall back

_DDL = (
    "CREATE TABLE meta (k TEXT PRIMARY KEY, v TEXT NOT NULL)",
    "CREATE TABLE cands (path TEXT PRIMARY KEY, size INTEGER, mtime_ns INTEGER, ctime_ns INTEGER, ino INTEGER, "
    "flags INTEGER, stage_dirs TEXT, recs BLOB)",
    "CREATE TABLE bodies (path TEXT PRIMARY KEY, size INTEGER, mtime_ns INTEGER, ctime_ns INTEGER, ino INTEGER, body BLOB)",
    "CREATE TABLE sources (path TEXT PRIMARY KEY, size INTEGER, mtime_ns INTEGER, ctime_ns INTEGER, ino INTEGER, sha256 TEXT)",
)
_TABLES = ("meta", "cands", "bodies", "sources", "records", "dirs")  # the last two: schema 1
_OK, _REBUILD, _SKIP = "ok", "rebuild", "skip"
_FINGERPRINT: str | None = None


def fingerprint() -> str:
    """Index schema plus the record models: either changing rebuilds the index."""
    global _FINGERPRINT
    if _FINGERPRINT is None:
        # the Python version too: marshal's format may change between versions
        schemas = [SCHEMA, list(sys.version_info[:2]), list(CandidateSummary._fields), list(StageSummary._fields),
                   CandidateRecord.model_json_schema(), StageRecord.model_json_schema()]
        _FINGERPRINT = hashlib.sha256(json.dumps(schemas, sort_keys=True).encode()).hexdigest()
    return _FINGERPRINT


def index_path(campaign_dir) -> Path:
    return Path(campaign_dir) / INDEX_FILE


def _locked(exc: Exception) -> bool:
    msg = str(exc).lower()
    return "locked" in msg or "busy" in msg


def _corrupt(exc: Exception) -> bool:
    """Not an SQLite file, or a damaged one (not: locked, read-only, no permission, disk full)."""
    name = getattr(exc, "sqlite_errorname", "") or ""
    msg = str(exc).lower()
    return name.startswith(("SQLITE_NOTADB", "SQLITE_CORRUPT")) or "not a database" in msg or "malformed" in msg


def decode(model: type[BaseModel], body: bytes):
    """The record of an index body (the file's bytes as read), or None when
    the body is unusable. Validated exactly as the file would be, so a
    record from the index is the record from the file."""
    try:
        return model.model_validate_json(body)
    except ValueError:  # pydantic's ValidationError is a ValueError
        return None


# -- the index of one scan ---------------------------------------------------

def _connect_ro(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path.resolve().as_uri() + "?mode=ro", uri=True, timeout=TIMEOUT_S)
    conn.execute("PRAGMA mmap_size = 4294967296")  # read pages in place: no read(2) per page
    return conn


def _valid(conn: sqlite3.Connection) -> bool:
    row = conn.execute("SELECT v FROM meta WHERE k = 'fingerprint'").fetchone()
    return bool(row) and row[0] == fingerprint()


class Index:
    """The index rows as one scan found them, and what that scan changed.

    Per candidate folder, the scanner pops its row from ``rows`` and stats
    the folder; when the signature matches, the row's listing holds.
    ``entries`` gives the packed record entries ``(name, signature,
    summary)`` (name None: candidate.json), which the scanner validates
    against each file's stat (counting ``hits``). It reads what missed and
    hands the folder back with ``put_candidate`` (and each record read with
    ``put_body``). ``fetch`` decodes a full record on demand. ``save``
    writes the changes; rows not visited are deleted (their folders vanished).
    """

    def __init__(self, campaign_dir, *, rescan: bool = False):
        self.path = index_path(campaign_dir)
        self.start_ns = time.time_ns()
        self.racy_after = self.start_ns - RACY_NS
        self.rows: dict[str, tuple] = {}
        self.put_rows: dict[str, tuple] = {}
        self.put_bodies: dict[str, tuple] = {}
        self.gone_bodies: list[str] = []
        self.sources = None  # SourceHashes of the manifest, written with the records (see save_index)
        self.hits = 0
        self.state = _REBUILD
        self._conn: tuple[int, sqlite3.Connection] | None = None
        self._fetched = 0
        self._bodies: dict[str, tuple] | None = None
        if not rescan:
            self._load()

    def _load(self) -> None:
        if not self.path.exists():
            return
        try:
            conn = _connect_ro(self.path)
        except sqlite3.Error as exc:
            self.state = _SKIP if _locked(exc) else _REBUILD
            return
        try:
            if not _valid(conn):
                return
            self.rows = {r[0]: r for r in conn.execute(
                "SELECT path, size, mtime_ns, ctime_ns, ino, flags, stage_dirs, recs FROM cands")}
            self.state = _OK
        except sqlite3.Error as exc:  # DatabaseError: not a database, malformed, hot journal; or locked
            self.rows = {}
            self.state = _SKIP if _locked(exc) else _REBUILD
        finally:
            conn.close()

    def sig(self, st: os.stat_result) -> tuple[int, int, int, int]:
        mtime = st.st_mtime_ns if st.st_ctime_ns < self.racy_after else -1  # -1: read again next time
        return (st.st_size, mtime, st.st_ctime_ns, st.st_ino)

    # candidate folders: flags bit 0 = candidate.json is there, bit 1 = every
    # record of the listing has an entry, in listing order (the scan's fast path)
    HAS_CANDIDATE, COMPLETE = 1, 2

    @staticmethod
    def entries(row) -> list:
        """The row's record entries ``(name, signature, summary)``, in listing order."""
        if row is None:
            return []
        try:
            return marshal.loads(row[7])
        except (ValueError, EOFError, TypeError):  # a damaged blob: read the files
            return []

    def put_candidate(self, rel: str, st: os.stat_result, has_candidate: bool, stage_dirs: list[str],
                      entries: list[tuple], removed: list[str], complete: bool) -> None:
        """A candidate folder whose listing or records changed; ``removed``:
        record paths (relative) whose bodies go; ``complete``: ``entries``
        are exactly the listing's records, in its order."""
        flags = (self.HAS_CANDIDATE if has_candidate else 0) | (self.COMPLETE if complete else 0)
        self.put_rows[rel] = (rel, *self.sig(st), flags, "/".join(stage_dirs), marshal.dumps(tuple(entries)))
        self.gone_bodies.extend(removed)

    def put_body(self, rel: str, sig: tuple, data: bytes) -> None:
        """The bytes of a record file as read (and validated): no second serialization."""
        self.put_bodies[rel] = (rel, *sig, data)

    BULK_AFTER = 256  # single-row fetches before the rest of the bodies are read in one pass

    def fetch(self, rel: str, sig: tuple, model):
        """The full record at ``rel`` when the index holds the body of that
        signature, else None (the caller reads the file).

        A few records (apply, one candidate's evidence) are looked up one by
        one; a command that reads them all (evidence, render) switches to one
        sequential pass over the table after ``BULK_AFTER`` lookups: one
        B-tree lookup per record from a large file cost more than reading
        the record file itself.
        """
        if self._bodies is not None:
            got = self._bodies.pop(rel, None)
        else:
            pid = os.getpid()
            try:
                if self._conn is None or self._conn[0] != pid:  # a connection is not shared with forked children
                    self._conn = (pid, _connect_ro(self.path))
                self._fetched += 1
                if self._fetched > self.BULK_AFTER:
                    self._bodies = {r[0]: r[1:] for r in self._conn[1].execute(
                        "SELECT path, size, mtime_ns, ctime_ns, ino, body FROM bodies")}
                    got = self._bodies.pop(rel, None)
                else:
                    got = self._conn[1].execute("SELECT size, mtime_ns, ctime_ns, ino, body FROM bodies WHERE path = ?",
                                                (rel,)).fetchone()
            except sqlite3.Error:
                return None
        if got is None or tuple(got[:4]) != tuple(sig):
            return None
        return decode(model, got[4])
