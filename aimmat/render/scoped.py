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
COMPOSITE = "composite"  # sees rendered scoped blocks (text) and figures, never raw numbers
_SCOPE_LINE = re.compile(r"^\{#-?\s*scope:\s*(\w+)\s*-?#\}")

# How each output format carries the provenance header (CSV: a sidecar file).
COMMENT = {".md": "<!-- {} -->", ".html": "<!-- {} -->", ".tex": "% {}", ".txt": "# {}"}


def declared_scope(path: Path) -> str:
    first = path.read_text().splitlines()[0] if path.read_text() else ""
    m = _SCOPE_LINE.match(first)
    if not m or m.group(1) not in SCOPES + (COMPOSITE,):
        raise RenderError(
            f"{path}:1: template must declare its scope on its first line",
            fix="start it with {#- scope: public -#}, screening, validated, or composite (assembles rendered blocks)",
        )
    return m.group(1)


def _fmt(value, spec: str = ".1f") -> str:
    return "-" if value is None else format(value, spec)


def md_table_to_html(text: str) -> str:
    """Markdown pipe tables to HTML tables; other lines become paragraphs.
    (Only the table subset our own templates emit: no Markdown library needed.)"""
    import html

    out, rows = [], []

    def flush():
        if rows:
            head, body = rows[0], [r for r in rows[2:]]
            out.append("<table><thead><tr>" + "".join(f"<th>{html.escape(c)}</th>" for c in head) + "</tr></thead><tbody>"
                       + "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in body)
                       + "</tbody></table>")
            rows.clear()

    for line in text.splitlines():
        if line.startswith("|"):
            rows.append([c.strip() for c in line.strip().strip("|").split("|")])
        else:
            flush()
            if line.strip() and not line.startswith("<!--"):
                out.append(f"<p>{html.escape(line)}</p>")
    flush()
    return "\n".join(out)


def render_template(path: Path, snapshot: dict, meta: dict, blocks: dict | None = None, figures: list | None = None) -> str:
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
    env.filters["md_html"] = md_table_to_html
    if scope == COMPOSITE:
        context = {"blocks": blocks or {}, "figures": figures or [], "meta": meta}
    else:
        context = {scope: snapshot["scopes"][scope], "meta": meta}
    try:
        return env.get_template(path.name).render(context)
    except jinja2.UndefinedError as exc:
        line = next((fs.lineno for fs in reversed(traceback.extract_tb(exc.__traceback__)) if fs.filename.endswith(path.name)), "?")
        other = [s for s in SCOPES if s != scope and f"'{s}'" in str(exc)]
        hint = f" ('{other[0]}' is another scope: this template reads only '{scope}')" if other else ""
        raise RenderError(f"{path}:{line}: {exc.message}{hint}", fix="use only the declared scope's numbers, or split the template") from None
    except jinja2.TemplateError as exc:
        raise RenderError(f"{path}:{getattr(exc, 'lineno', '?')}: {exc}") from None


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()
