"""An embedded SQLite index of records: a cache, never the truth.

``<campaign>/.aimmat-index.sqlite`` holds, per record file (``candidate.json``
and ``<stage>/record.json``), its path relative to the campaign folder, its
stat signature (size, mtime_ns, ctime_ns, inode) and the record as validated
JSON; per candidate folder, its stat signature and listing (whether
``candidate.json`` is there, which stage folders). ``scan`` stats every
record file and folder and uses a row only when the signature matches
exactly; a changed, new or vanished file is read from the folder as without
the index. So deleting, corrupting or copying the index changes no result,
only the time.

Why a matching signature is enough: apply writes records by rename, which
gives a new inode (and ctime); an in-place rewrite changes mtime and ctime,
and restoring an old mtime (``touch -d``, ``cp -p``) still changes ctime.
The one blind spot, a rewrite of the same size within one timestamp tick of
the read, is closed as git closes it ("racy git"): a file whose ctime is
within ``RACY_NS`` of the scan's start is stored with an impossible mtime,
so the next scan reads it again.

Who writes it: ``scan`` reads the index (opened read-only) and collects
what changed; ``Index.save`` writes it in one transaction. apply saves from
its scans once it holds the campaign lock; diff, status, evidence and render
save only after they have succeeded, so a command that fails (exit 3 on a
bad structure file, a template error) leaves the folder byte-identical, and
a scan alone never writes. Any index trouble (``database is locked``, a
corrupted file, a read-only folder, a full disk) falls back to reading the
files; a corrupted file or another schema is rebuilt on the next save.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import time
from pathlib import Path
from typing import Any, get_args, get_origin

import pydantic_core
from pydantic import BaseModel

from aimmat.state.records import CandidateRecord, StageRecord

INDEX_FILE = ".aimmat-index.sqlite"
SCHEMA = 1
RACY_NS = 5_000_000_000  # covers 1-2 s timestamp ticks and ordinary clock skew on shared file systems
TIMEOUT_S = 2.0  # waiting for another writer's transaction; then fall back

_DDL = (
    "CREATE TABLE meta (k TEXT PRIMARY KEY, v TEXT NOT NULL)",
    "CREATE TABLE records (path TEXT PRIMARY KEY, size INTEGER, mtime_ns INTEGER, ctime_ns INTEGER, ino INTEGER, body BLOB)",
    "CREATE TABLE dirs (path TEXT PRIMARY KEY, size INTEGER, mtime_ns INTEGER, ctime_ns INTEGER, ino INTEGER, has_candidate INTEGER, stage_dirs TEXT)",
)
_OK, _REBUILD, _SKIP = "ok", "rebuild", "skip"
_FINGERPRINT: str | None = None


def fingerprint() -> str:
    """Index schema plus the record models: either changing rebuilds the index."""
    global _FINGERPRINT
    if _FINGERPRINT is None:
        schemas = [SCHEMA, CandidateRecord.model_json_schema(), StageRecord.model_json_schema()]
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


# -- building records from validated JSON without validating again ---------

def _holds_model(ann) -> bool:
    if isinstance(ann, type) and issubclass(ann, BaseModel):
        return True
    return any(_holds_model(a) for a in get_args(ann))


def _builder(model: type[BaseModel]):
    """A function dict -> model instance for bodies this module wrote from a
    validated model (plain fields and ``list[Model]`` only), else None."""
    nested = {}
    for name, f in model.model_fields.items():
        if not _holds_model(f.annotation):
            continue
        args = get_args(f.annotation)
        sub = args[0] if get_origin(f.annotation) is list and len(args) == 1 else None
        if isinstance(sub, type) and issubclass(sub, BaseModel) and _builder(sub) is not None:
            nested[name] = _builder(sub)
        else:
            return None
    names = set(model.model_fields)
    new, setattr_ = object.__new__, object.__setattr__

    def build(d: dict) -> BaseModel:
        if d.keys() != names:
            raise ValueError(f"index body does not match {model.__name__}")
        for name, sub in nested.items():
            d[name] = [sub(x) for x in d[name]]
        obj = new(model)
        setattr_(obj, "__dict__", d)
        setattr_(obj, "__pydantic_fields_set__", set(names))
        setattr_(obj, "__pydantic_extra__", None)
        setattr_(obj, "__pydantic_private__", None)
        return obj

    return build


_BUILDERS = {m: _builder(m) for m in (CandidateRecord, StageRecord)}


def decode(model: type[BaseModel], body: bytes):
    """The record of an index body, or None when the body is unusable."""
    try:
        build = _BUILDERS.get(model)
        if build is None:
            return model.model_validate_json(body)
        return build(pydantic_core.from_json(body))
    except (ValueError, TypeError, KeyError, AttributeError):
        return None


# -- the index of one scan ---------------------------------------------------

class Index:
    """The index rows as one scan found them, and what that scan changed.

    ``read`` and ``listing`` answer from a row whose signature matches the
    file's stat, else report a miss; the scanner then reads the folder and
    hands the result back with ``put`` / ``put_listing``. ``save`` writes
    the changes (rows not visited are deleted: their files vanished).
    """

    def __init__(self, campaign_dir, *, rescan: bool = False):
        self.path = index_path(campaign_dir)
        self.start_ns = time.time_ns()
        self.racy_after = self.start_ns - RACY_NS
        self.rows: dict[str, tuple] = {}
        self.dirs: dict[str, tuple] = {}
        self.put_rows: dict[str, tuple] = {}
        self.put_dirs: dict[str, tuple] = {}
        self.hits = 0
        self.state = _REBUILD
        if not rescan:
            self._load()

    def _load(self) -> None:
        if not self.path.exists():
            return
        try:
            conn = sqlite3.connect(self.path.resolve().as_uri() + "?mode=ro", uri=True, timeout=TIMEOUT_S)
        except sqlite3.Error as exc:
            self.state = _SKIP if _locked(exc) else _REBUILD
            return
        try:
            conn.execute("PRAGMA mmap_size = 4294967296")  # read pages in place: no read(2) per page
            row = conn.execute("SELECT v FROM meta WHERE k = 'fingerprint'").fetchone()
            if not row or row[0] != fingerprint():
                return
            self.rows = {r[0]: r for r in conn.execute("SELECT path, size, mtime_ns, ctime_ns, ino, body FROM records")}
            self.dirs = {r[0]: r for r in conn.execute("SELECT path, size, mtime_ns, ctime_ns, ino, has_candidate, stage_dirs FROM dirs")}
            self.state = _OK
        except sqlite3.Error as exc:  # DatabaseError: not a database, malformed, hot journal; or locked
            self.rows, self.dirs = {}, {}
            self.state = _SKIP if _locked(exc) else _REBUILD
        finally:
            conn.close()

    def _sig(self, st: os.stat_result) -> tuple[int, int, int, int]:
        mtime = st.st_mtime_ns if st.st_ctime_ns < self.racy_after else -1  # -1: read again next time
        return (st.st_size, mtime, st.st_ctime_ns, st.st_ino)

    # records
    def read(self, rel: str, path: str, model):
        """(found, record): found False means "read the file"; a record
        whose file is gone is (True, None)."""
        row = self.rows.pop(rel, None)
        if row is None:  # nothing to compare with (new file, or no index): the caller reads it
            return False, None
        try:
            st = os.stat(path)
        except (FileNotFoundError, NotADirectoryError):
            return True, None
        if row[1] == st.st_size and row[2] == st.st_mtime_ns and row[3] == st.st_ctime_ns and row[4] == st.st_ino:
            rec = decode(model, row[5])
            if rec is not None:
                self.hits += 1
                return True, rec
        return False, None

    def put(self, rel: str, st: os.stat_result, rec: BaseModel) -> None:
        """A record read from its file; ``st`` is the fstat taken before reading."""
        self.put_rows[rel] = (rel, *self._sig(st), rec.__pydantic_serializer__.to_json(rec))

    # candidate folder listings
    def listing(self, rel: str, path: str):
        """(stat, cached listing or None); stat None: the folder is gone."""
        row = self.dirs.pop(rel, None)
        try:
            st = os.stat(path)
        except (FileNotFoundError, NotADirectoryError):
            return None, None
        if row is not None and row[1] == st.st_size and row[2] == st.st_mtime_ns and row[3] == st.st_ctime_ns and row[4] == st.st_ino:
            return st, (bool(row[5]), row[6].split("/") if row[6] else [])
        return st, None

    def put_listing(self, rel: str, st: os.stat_result, has_candidate: bool, stage_dirs: list[str]) -> None:
        self.put_dirs[rel] = (rel, *self._sig(st), int(has_candidate), "/".join(stage_dirs))

    @property
    def changed(self) -> bool:
        return bool(self.put_rows or self.put_dirs or self.rows or self.dirs)

    def save(self) -> bool:
        """Write what this scan changed; False when nothing was written. Never raises."""
        if self.state == _SKIP or not self.path.parent.is_dir():
            return False
        if self.state == _OK and not self.changed:
            return False
        if self.state == _REBUILD and not (self.put_rows or self.put_dirs) and not self.path.exists():
            return False  # nothing to index: create no file
        try:
            self._write()
        except sqlite3.DatabaseError as exc:
            if not _corrupt(exc):
                return False
            try:  # a corrupted file: start a new one
                for p in (self.path, Path(str(self.path) + "-journal")):
                    p.unlink(missing_ok=True)
                self._write()
            except (sqlite3.Error, OSError):
                return False
        except OSError:
            return False
        self.state, self.rows, self.dirs, self.put_rows, self.put_dirs = _OK, {}, {}, {}, {}
        return True

    def _write(self) -> None:
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
                if not row or row[0] != fingerprint():  # rebuild, or another version rebuilt it meanwhile
                    for table in ("meta", "records", "dirs"):
                        conn.execute(f"DROP TABLE IF EXISTS {table}")
                    for ddl in _DDL:
                        conn.execute(ddl)
                    conn.execute("INSERT INTO meta VALUES ('fingerprint', ?)", (fingerprint(),))
                    conn.execute("INSERT INTO meta VALUES ('schema', ?)", (str(SCHEMA),))
                else:
                    conn.executemany("DELETE FROM records WHERE path = ?", ((p,) for p in self.rows))
                    conn.executemany("DELETE FROM dirs WHERE path = ?", ((p,) for p in self.dirs))
                conn.executemany("INSERT OR REPLACE INTO records VALUES (?, ?, ?, ?, ?, ?)", self.put_rows.values())
                conn.executemany("INSERT OR REPLACE INTO dirs VALUES (?, ?, ?, ?, ?, ?, ?)", self.put_dirs.values())
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        finally:
            conn.close()


def stats(campaign_dir) -> dict[str, Any]:
    """Rows in the index (for tests and the benchmark); empty when unreadable."""
    try:
        conn = sqlite3.connect(index_path(campaign_dir).resolve().as_uri() + "?mode=ro", uri=True)
        try:
            return {"records": conn.execute("SELECT count(*) FROM records").fetchone()[0],
                    "dirs": conn.execute("SELECT count(*) FROM dirs").fetchone()[0]}
        finally:
            conn.close()
    except sqlite3.Error:
        return {}
