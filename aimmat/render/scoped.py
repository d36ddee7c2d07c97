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

A composite template (main.md, report.html) assembles rendered blocks, and
only places them: each block is an opaque ``Block`` that can be output or
passed to ``md_html``, never read as text (no string methods, slicing,
concatenation, filters that turn it into a string), and the statements that
capture rendered output as a string (``{% set %}...{% endset %}``, filter
blocks, macros, call blocks, template blocks and imports) are refused when
the template is parsed. A number from one block can therefore not be parsed
out and set beside another block's numbers.
"""

from __future__ import annotations

import hashlib
import traceback
from pathlib import Path

import jinja2
from jinja2 import nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError

from aimmat.errors import RenderError

from aimmat.manifest.templates import COMPOSITE, SCOPES, declared_scope, inside

__all__ = ["COMPOSITE", "SCOPES", "Block", "declared_scope", "md_html", "render_template"]

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


class Block:
    """One rendered scoped block as a composite template sees it: it can be placed
    (``{{ blocks["validated.md"] }}``) or passed to ``md_html``, nothing else."""

    __slots__ = ("_text",)

    def __init__(self, text: str):
        self._text = text

    def _opaque(self, *_args, **_kwargs):
        raise SecurityError("a rendered block is opaque: place it ({{ blocks[name] }}) or pass it to md_html; "
                            "its text cannot be read, sliced, joined or formatted")

    __str__ = __format__ = __iter__ = __len__ = __contains__ = __getitem__ = _opaque
    __add__ = __radd__ = __mod__ = __rmod__ = __mul__ = __rmul__ = __html__ = _opaque

    def __repr__(self) -> str:
        return "<rendered block>"


# Statements that turn rendered output into a string a template could take apart.
_CAPTURING = {nodes.AssignBlock: "{% set %}...{% endset %}", nodes.FilterBlock: "{% filter %}", nodes.Macro: "{% macro %}",
              nodes.CallBlock: "{% call %}", nodes.Block: "{% block %}", nodes.Extends: "{% extends %}",
              nodes.Import: "{% import %}", nodes.FromImport: "{% from ... import %}"}
# Filters a composite template may apply (to a block: md_html; to missing blocks: default).
_COMPOSITE_FILTERS = ("md_html", "default", "d")


class _Refused(SecurityError):
    def __init__(self, message: str, lineno: int | None):
        super().__init__(message)
        self.lineno = lineno


class _CompositeEnvironment(ImmutableSandboxedEnvironment):
    """The sandbox, plus: blocks expose no attribute, and capturing statements are refused at parse time."""

    def is_safe_attribute(self, obj, attr, value):
        return not isinstance(obj, Block) and super().is_safe_attribute(obj, attr, value)

    def _parse(self, source, name, filename):
        tree = super()._parse(source, name, filename)
        for node in tree.find_all(tuple(_CAPTURING) + (nodes.Name, nodes.For)):
            if isinstance(node, nodes.Name):
                if node.name in ("self", "caller", "varargs", "kwargs"):
                    raise _Refused(f"'{node.name}' is not available in a composite template", node.lineno)
                continue
            if isinstance(node, nodes.For):
                if node.recursive:  # loop(...) returns the rendered body as a string
                    raise _Refused("a recursive for loop is not allowed in a composite template: loop() would capture "
                                   "rendered blocks as text", node.lineno)
                continue
            raise _Refused(f"{_CAPTURING[type(node)]} is not allowed in a composite template: it would capture rendered "
                           "blocks as text", node.lineno)
        return tree


def _place(value):
    """Output hook of composite templates: a block prints its text (the only way its text leaves it)."""
    return value._text if isinstance(value, Block) else value


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


def _milestones_md(rows) -> str:
    """A scope's evaluated milestones as a Markdown table (empty when none are declared); a filter, so a
    template copied out of our folder needs no partial beside it."""
    rows = _defined(rows)
    if not rows:
        return ""
    lines = ["", "| milestone | claim | figure | met |", "|---|---|---|---|"]
    lines += [f"| {m['name']} | `{m['expression']}` | {m['why']} | {'**met**' if m['met'] else 'not met'} |" for m in rows]
    return "\n".join(lines) + "\n"


def md_html(text: str) -> str:
    """Markdown (Python-Markdown, with its tables extension) to HTML; the provenance comment lines are dropped."""
    import markdown

    body = "\n".join(line for line in text.splitlines() if not line.startswith("<!--"))
    return markdown.markdown(body, extensions=["tables"], output_format="html")


def _md_html_filter(value):
    """md_html on a block gives a block (still opaque); on a string (a missing block's default), a string."""
    value = _defined(value)
    return Block(md_html(value._text)) if isinstance(value, Block) else md_html(value)


def _environment(folder: Path, composite: bool = False) -> jinja2.Environment:
    cls = _CompositeEnvironment if composite else ImmutableSandboxedEnvironment
    env = cls(
        loader=_FolderLoader(folder),
        undefined=jinja2.StrictUndefined,
        autoescape=False,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        finalize=_place if composite else None,
    )
    env.filters["f"] = _fmt
    env.filters["pct"] = _pct
    env.filters["md_html"] = _md_html_filter
    env.filters["milestones_md"] = _milestones_md
    if composite:  # no filter that reads a block as text (string, replace, truncate, list, length, ...)
        env.filters = {k: v for k, v in env.filters.items() if k in _COMPOSITE_FILTERS}
    return env


def _template_line(exc: BaseException, path: Path):
    """Line in ``path`` where rendering failed (Jinja rewrites tracebacks to template lines)."""
    frames = traceback.extract_tb(exc.__traceback__)
    return next((fs.lineno for fs in reversed(frames) if fs.filename.endswith(path.name)), "?")


def render_template(path: Path, snapshot: dict, meta: dict, blocks: dict | None = None, figures: list | None = None) -> str:
    scope = declared_scope(path)
    env = _environment(path.parent, composite=scope == COMPOSITE)
    if scope == COMPOSITE:
        context = {"blocks": {k: Block(v) for k, v in (blocks or {}).items()}, "figures": list(figures or []), "meta": meta}
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
        line = getattr(exc, "lineno", None) or _template_line(exc, path)
        raise RenderError(
            f"{path}:{line}: blocked by the template sandbox: {exc.message}",
            fix="templates may read their scope's values and meta, not Python internals ('_' attributes) or mutating methods; "
                "composite templates place blocks, they do not read them",
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
