"""Claim guardrails: a template sees exactly one evidence scope.

A template declares its scope on its first line, as a Jinja comment:

    {#- scope: validated -#}

Its environment then holds that scope's block (under the scope's name) and
``meta`` (campaign, as_of, hashes) and nothing else, with StrictUndefined:
a number from another scope cannot be rendered, and the error names the
template, the line and the variable.
"""

from __future__ import annotations

import hashlib
import re
import traceback
from pathlib import Path

import jinja2

from aimmat.errors import RenderError

SCOPES = ("public", "screening", "validated")
_SCOPE_LINE = re.compile(r"^\{#-?\s*scope:\s*(\w+)\s*-?#\}")

# How each output format carries the provenance header (CSV: a sidecar file).
COMMENT = {".md": "<!-- {} -->", ".html": "<!-- {} -->", ".tex": "% {}", ".txt": "# {}"}


def declared_scope(path: Path) -> str:
    first = path.read_text().splitlines()[0] if path.read_text() else ""
    m = _SCOPE_LINE.match(first)
    if not m or m.group(1) not in SCOPES:
        raise RenderError(
            f"{path}:1: template must declare its scope on its first line",
            fix="start it with {#- scope: public -#}, {#- scope: screening -#} or {#- scope: validated -#}",
        )
    return m.group(1)


def _fmt(value, spec: str = ".1f") -> str:
    return "-" if value is None else format(value, spec)


def render_template(path: Path, snapshot: dict, meta: dict) -> str:
    scope = declared_scope(path)
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(path.parent)),
        undefined=jinja2.StrictUndefined,
        autoescape=False,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["f"] = _fmt
    env.filters["pct"] = lambda v, d=1: "-" if v is None else f"{100 * v:.{d}f}"
    try:
        return env.get_template(path.name).render({scope: snapshot["scopes"][scope], "meta": meta})
    except jinja2.UndefinedError as exc:
        line = next((fs.lineno for fs in reversed(traceback.extract_tb(exc.__traceback__)) if fs.filename.endswith(path.name)), "?")
        other = [s for s in SCOPES if s != scope and f"'{s}'" in str(exc)]
        hint = f" ('{other[0]}' is another scope: this template reads only '{scope}')" if other else ""
        raise RenderError(f"{path}:{line}: {exc.message}{hint}", fix="use only the declared scope's numbers, or split the template") from None
    except jinja2.TemplateError as exc:
        raise RenderError(f"{path}:{getattr(exc, 'lineno', '?')}: {exc}") from None


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()
