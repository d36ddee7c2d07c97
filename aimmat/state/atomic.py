"""Crash-safe file writes: temp file in the same folder, fsync, rename.

Every file aimmat creates gets the mode of a plain write: ``0666 & ~umask``
(and a folder's default ACL, if it has one), so a campaign shared by a group
is readable by the group when the umask says so. The temp file is created
with ``O_CREAT | O_EXCL`` and mode 0666 (the kernel applies the umask), not
with ``tempfile.mkstemp`` (always 0600); the rename keeps that mode, so a
rewrite follows the same rule as a first write.
"""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path

TMP_PREFIX = ".tmp-"


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _create_temp(folder: Path) -> tuple[int, str]:
    """A new, empty file named ``TMP_PREFIX...`` in ``folder``, open for writing, mode 0666 & ~umask."""
    for _ in range(100):
        tmp = os.path.join(folder, TMP_PREFIX + secrets.token_hex(6))
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666), tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temporary file name in {folder}")


def write_bytes_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _create_temp(path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    fsync_dir(path.parent)


def json_bytes(obj) -> bytes:
    """The bytes of a JSON file as aimmat writes it (sorted keys, one-space indent)."""
    return (json.dumps(obj, indent=1, sort_keys=True) + "\n").encode()


def write_json_atomic(path: Path, obj) -> None:
    write_bytes_atomic(path, json_bytes(obj))
