"""Base model, id and text types, and bounded numbers shared by every manifest model.

Every number of a manifest is finite (no NaN or infinity) and lies in a
physically sensible range that its field description states, so that
``aimmat schema`` shows it. Every string is free of NUL bytes and of bounded
length; paths also have bounded components.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

_SAFE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")

MAX_TEXT = 10_000  # any string of a manifest (worker_init holds a few shell lines)
MAX_PATH = 1024  # a path or glob
MAX_PATH_PART = 255  # one component of a path, in UTF-8 bytes (NAME_MAX)
DAY_S = 86_400


def _safe_segment(value: str) -> str:
    if not _SAFE.match(value) or value in {".", ".."} or ".." in value:
        raise ValueError(
            f"{value[:120]!r} is not a safe folder name: use letters, digits, '.', '_' or '-', "
            "start with a letter or digit, at most 100 characters, no '..'"
        )
    return value


def _text(value: str) -> str:
    if "\0" in value:
        raise ValueError("contains a NUL byte")
    return value


def _line(value: str) -> str:
    _text(value)
    if "\n" in value or "\r" in value:
        raise ValueError("must be one line (no line break)")
    return value


def _path(value: str) -> str:
    _text(value)  # the length is checked before, by the field's max_length
    for part in value.split("/"):
        if len(part.encode("utf-8", "surrogatepass")) > MAX_PATH_PART:
            raise ValueError(f"path component {part[:40]!r}... is longer than {MAX_PATH_PART} bytes")
    return value


SafeId = Annotated[str, AfterValidator(_safe_segment)]
Text = Annotated[str, AfterValidator(_text)]
"""Free text (commands, shell lines, Slurm values): no NUL byte, at most MAX_TEXT characters."""
Line = Annotated[str, AfterValidator(_line)]
"""One line of text (a command, a Slurm value): no NUL byte, no line break."""
PathStr = Annotated[str, Field(min_length=1, max_length=MAX_PATH), AfterValidator(_path)]
"""A path or glob: no NUL byte, 1 to MAX_PATH characters, components of at most MAX_PATH_PART bytes."""


class FieldError(ValueError):
    """A cross-field error that names the field at fault. ``loc`` is its key path
    relative to the model that raises it; loading reports that field's line."""

    def __init__(self, loc: tuple, message: str):
        self.loc = tuple(loc)
        self.detail = message
        super().__init__(f"{'.'.join(map(str, self.loc))}: {message}")


def bounded(default: Any = ..., *, description: str, gt=None, ge=None, lt=None, le=None, **kw: Any) -> Any:
    """A ``Field`` with bounds whose description ends with the range, e.g. "Range: (0, 5]."."""
    lo = f"({gt}" if gt is not None else f"[{ge}" if ge is not None else "(-inf"
    hi = f"{lt})" if lt is not None else f"{le}]" if le is not None else "inf)"
    desc = f"{description.rstrip()} Range: {lo}, {hi}."
    if "default_factory" in kw:
        return Field(gt=gt, ge=ge, lt=lt, le=le, description=desc, **kw)
    return Field(default, gt=gt, ge=ge, lt=lt, le=le, description=desc, **kw)


class Strict(BaseModel):
    # unknown keys are errors; numbers are finite; strings are bounded (no docstring: it would
    # become the schema description of every model without one of its own)

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False, str_max_length=MAX_TEXT)
