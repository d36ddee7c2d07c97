"""Template scope declarations and confinement, checked when a manifest is loaded.

A render template names the one evidence scope it reads on its first line
(``{#- scope: validated -#}``); rendering (``aimmat.render``) enforces it. A
template is data a manifest points at: a path that resolves outside its own
folder (a symlink out) is refused before it is opened.
"""

from __future__ import annotations

import re
from pathlib import Path

from aimmat.errors import RenderError

SCOPES = ("public", "screening", "validated")
COMPOSITE = "composite"  # sees rendered scoped blocks (text) and figures, never raw numbers
_SCOPE_LINE = re.compile(r"^\{#-?\s*scope:\s*(\w+)\s*-?#\}")


def inside(path: Path, folder: Path) -> bool:
    # resolve() follows symlinks and "..": what counts is where the bytes live
    return path.resolve().is_relative_to(folder.resolve())


def check_confined(path: Path) -> None:
    if not inside(path, path.parent):
        raise RenderError(
            f"{path}: template resolves to {path.resolve()}, outside its folder {path.parent.resolve()}; refused",
            fix="copy the template into that folder instead of linking to it",
        )


def declared_scope(path: Path) -> str:
    check_confined(path)  # before reading: a link out of the folder is never opened
    text = path.read_text()
    first = text.splitlines()[0] if text else ""
    m = _SCOPE_LINE.match(first)
    if not m or m.group(1) not in SCOPES + (COMPOSITE,):
        raise RenderError(
            f"{path}:1: template must declare its scope on its first line",
            fix="start it with {#- scope: public -#}, screening, validated, or composite (assembles rendered blocks)",
        )
    return m.group(1)
