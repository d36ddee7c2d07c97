"""Reading one record file: without following links, without blocking, in one read.

A record that cannot be read (a folder where the file should be, no
permission, invalid JSON, another schema, a symlink) is handed to
``aimmat.state.damage.problem``: collected on the scan's ``Observed``, or
raised at once when there is none (a single record read by apply).
"""

from __future__ import annotations

import errno
import os
import stat

from pydantic import ValidationError

from aimmat.state.damage import problem as _problem
from aimmat.state.records import CandidateRecord, StageRecord


def read_stage_record(path) -> StageRecord | None:
    return read_record(str(path), StageRecord)


def read_candidate_record(path) -> CandidateRecord | None:
    return read_record(str(path), CandidateRecord)


def read_record(path: str, model):
    """The record in ``path``, or None when there is none."""
    got = read_with_stat(path, model)
    return got[0] if got else None


_OPEN_FLAGS = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)


def read_with_stat(path: str, model, observed=None):
    """(record, stat taken before reading, the bytes read) of ``path``, or None
    when absent. A record that cannot be read is collected on ``observed``
    (None returned), or raised as a CampaignError without one. A symlink is
    not followed (O_NOFOLLOW); a FIFO does not block (O_NONBLOCK)."""
    try:
        fd = os.open(path, _OPEN_FLAGS)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            try:
                target = os.readlink(path)
            except OSError:
                target = "?"
            return _problem(observed, path, "symlink", target)
        if exc.errno == errno.ENOTDIR:  # the stage "folder" is a file
            return _problem(observed, os.path.dirname(path), "is a file where a stage folder should be")
        return _problem(observed, path, f"cannot be read: {exc.strerror or exc}")
    try:
        st = os.fstat(fd)  # before reading: a later rewrite changes what the index compares
        if not stat.S_ISREG(st.st_mode):
            return _problem(observed, path, "is a folder, not a file" if stat.S_ISDIR(st.st_mode) else "is not a regular file")
        data = os.read(fd, st.st_size + 1)  # one read: a short one is the end of a regular file
        if len(data) > st.st_size:  # it grew meanwhile: the rest
            chunks = [data]
            while chunk := os.read(fd, 1 << 20):
                chunks.append(chunk)
            data = b"".join(chunks)
    except OSError as exc:
        return _problem(observed, path, f"cannot be read: {exc.strerror or exc}")
    finally:
        os.close(fd)
    try:
        rec = model.model_validate_json(data)
    except ValidationError as exc:
        return _problem(observed, path, f"not a valid {model.__name__}: {_first_error(exc)}")
    except ValueError as exc:
        return _problem(observed, path, f"not a valid {model.__name__}: {str(exc).splitlines()[0]}")
    return rec, st, data


def _first_error(exc: ValidationError) -> str:
    errs = exc.errors(include_url=False)
    if not errs:
        return str(exc).splitlines()[0]
    e = errs[0]
    where = ".".join(str(x) for x in e.get("loc", ()))
    msg = (f"{where}: " if where else "") + e.get("msg", "")
    return msg + (f" (and {len(errs) - 1} more error(s))" if len(errs) > 1 else "")
