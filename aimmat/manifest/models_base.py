"""Base model and id type shared by every manifest model."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict

_SAFE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


def _safe_segment(value: str) -> str:
    if not _SAFE.match(value) or value in {".", ".."} or ".." in value:
        raise ValueError(
            f"'{value}' is not a safe folder name: use letters, digits, '.', '_' or '-', "
            "start with a letter or digit, at most 100 characters, no '..'"
        )
    return value


SafeId = Annotated[str, AfterValidator(_safe_segment)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

