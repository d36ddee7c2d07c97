"""Claim guardrails: a template sees exactly one evidence scope.

A template declares its scope on its first line, as a Jinja comment:

    {#- scope: validated -#}

Its environment then holds that scope's block (under the scope's name) and
``meta`` (campaign, as_of, hashes) and nothing else, with StrictUndefined:
a number from another scope cannot be rendered, and the error names the
template, the line and the variable.

Templates are data a manifest points at, not code we trust: they render in
Jinja's immutable sandbox (no ``__globals__``, ``__class__``, ``_private``
attributes, no mutating methods) and can load only files inside their own
folder, so neither an include nor a symlink reaches the rest of the disk.
"""

from __future__ import annotations

import hashlib
import traceback
from pathlib import Path

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError

from aimmat.errors import RenderError

from aimmat.manifest.templates import COMPOSITE, SCOPES, declared_scope, inside

__all__ = ["COMPOSITE", "SCOPES", "declared_scope", "render_template"]

# How each output format carries the provenance header (CSV: a sidecar file).
COMMENT = {".md": "<!-- {} -->", ".html": "<!-- {} -->", ".tex": "% {}", ".txt": "# {}"}


class _Escape(Exception):
    """An include/extends/import name that leaves the template's folder."""

    def __init__(self, name: str, folder: Path):
        super().__init__(name)
        self.name, self.folder = name, folder


class _FolderLoader(jinja2.BaseLoader):
    """Loads templates from one folder; a name resolving outside it is refused
    (raised as _Escape, not TemplateNotFound, so it reads as a security error)."""

    def __init__(self, folder: Path):
        self.folder = folder.resolve()

    def get_source(self, environment, name):
        path = self.folder / name  # an absolute name replaces the folder: caught below
        if not inside(path, self.folder):
            raise _Escape(name, self.folder)
        if not path.is_file():
            raise jinja2.TemplateNotFound(name)
        return path.read_text(encoding="utf-8"), str(path), None


def _defined(value):
    """``value``, or the undefined-variable error StrictUndefined would raise (a filter that formats an
    undefined value would otherwise fail with a bare TypeError)."""
    if isinstance(value, jinja2.Undefined):
        value._fail_with_undefined_error()
    return value


def _fmt(value, spec: str = ".1f") -> str:
    value = _defined(value)
    return "-" if value is None else format(value, spec)


def _pct(value, d: int = 1) -> str:
    value = _defined(value)
    return "-" if value is None else f"{100 * value:.{d}f}"


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


def _environment(folder: Path) -> jinja2.Environment:
    env = ImmutableSandboxedEnvironment(
        loader=_FolderLoader(folder),
        undefined=jinja2.StrictUndefined,
        autoescape=False,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["f"] = _fmt
    env.filters["pct"] = _pct
    env.filters["md_html"] = md_table_to_html
    return env


def _template_line(exc: BaseException, path: Path):
    """Line in ``path`` where rendering failed (Jinja rewrites tracebacks to template lines)."""
    frames = traceback.extract_tb(exc.__traceback__)
    return next((fs.lineno for fs in reversed(frames) if fs.filename.endswith(path.name)), "?")


def render_template(path: Path, snapshot: dict, meta: dict, blocks: dict | None = None, figures: list | None = None) -> str:
    scope = declared_scope(path)
    env = _environment(path.parent)
    if scope == COMPOSITE:
        context = {"blocks": blocks or {}, "figures": figures or [], "meta": meta}
    else:
        context = {scope: snapshot["scopes"][scope], "meta": meta}
    try:
        return env.get_template(path.name).render(context)
    except _Escape as exc:
        raise RenderError(
            f"{path}:{_template_line(exc, path)}: '{exc.name}' resolves outside the template folder {exc.folder}; refused",
            fix="include or extend only templates in the same folder (no '..', absolute paths or links leading out)",
        ) from None
    except SecurityError as exc:
        raise RenderError(
            f"{path}:{_template_line(exc, path)}: blocked by the template sandbox: {exc.message}",
            fix="templates may read their scope's values and meta, not Python internals ('_' attributes) or mutating methods",
        ) from None
    except jinja2.UndefinedError as exc:
        other = [s for s in SCOPES if s != scope and f"'{s}'" in str(exc)]
        hint = f" ('{other[0]}' is another scope: this template reads only '{scope}')" if other else ""
        raise RenderError(f"{path}:{_template_line(exc, path)}: {exc.message}{hint}", fix="use only the declared scope's numbers, or split the template") from None
    except jinja2.TemplateError as exc:
        raise RenderError(f"{path}:{getattr(exc, 'lineno', None) or _template_line(exc, path)}: {exc}") from None
    except (TypeError, ValueError, ArithmeticError) as exc:  # a filter or expression given the wrong kind of value
        raise RenderError(f"{path}:{_template_line(exc, path)}: {type(exc).__name__}: {exc}",
                          fix="check the filters' arguments and the values they receive (numbers for f and pct)") from None


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()
