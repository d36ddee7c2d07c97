"""YAML loading that remembers where every key came from.

PyYAML's safe loader silently keeps the last of two equal mapping keys and
forgets line numbers once objects are built. Validation errors must name the
line, and a duplicated profile id must be refused, so we compose the node
tree ourselves and record ``path -> line`` while converting.

Walking that tree expands aliases: a 1.5 KB "billion laughs" file of nested
aliases would expand to billions of nodes, and ``&a [*a]`` to an infinite
tree. So the file size is capped before parsing and the expanded size of the
composed node graph is measured (linear in the file) before converting.

Scalars that no manifest needs and that break later code are refused where
they are written, with their line and key path: strings with a NUL byte,
`!!binary` values, integers beyond 64 bits (and the 4,300-digit ones Python
refuses to convert), impossible dates.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from aimmat.errors import ManifestError

Path_ = tuple[Any, ...]

MAX_MANIFEST_BYTES = 10 * 1024 * 1024
# Nodes aliases may add beyond those written in the file: profiles reused a
# few times add dozens; a billion-laughs file adds billions.
MAX_ALIAS_EXPANSION = 100_000
MAX_INT_BITS = 64


def load_yaml_with_lines(path: Path) -> tuple[Any, dict[Path_, int]]:
    """Parse ``path``; return the data and a map from key path to 1-based line."""
    loader = yaml.SafeLoader(_read_text(path))
    try:
        node = loader.get_single_node()
        if node is not None:
            _check_expansion(node, path)
        lines: dict[Path_, int] = {}
        data = _convert(loader, node, (), lines, path) if node is not None else None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        raise ManifestError(
            f"{where}: YAML syntax error: {exc.problem or exc.context}",
            fix="check indentation, colons and quotes on that line",
        ) from None
    except yaml.YAMLError as exc:
        raise ManifestError(f"{path}: YAML error: {exc}") from None
    except RecursionError:  # thousands of nested [[[ or {{{: the composer recurses per level
        raise ManifestError(f"{path}: YAML nested too deeply", fix="a manifest needs a few levels of nesting, not thousands") from None
    finally:
        loader.dispose()
    return data, lines


def _read_text(path: Path) -> str:
    try:
        with open(path, "rb") as fh:
            raw = fh.read(MAX_MANIFEST_BYTES + 1)  # never more than the cap, whatever the file is
    except OSError as exc:
        raise ManifestError(f"{path}: cannot read manifest: {exc.strerror}") from None
    if len(raw) > MAX_MANIFEST_BYTES:
        raise ManifestError(f"{path}: manifest is larger than {MAX_MANIFEST_BYTES // 2**20} MB; refused before parsing",
                            fix="list large inputs through a source glob, not inline")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ManifestError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None


def _check_expansion(root: yaml.Node, path: Path) -> None:
    """Refuse alias cycles and aliases that expand beyond MAX_ALIAS_EXPANSION nodes."""
    sizes: dict[int, int] = {}
    expanded = _expanded_size(root, sizes, set(), path)
    added = expanded - len(sizes)  # len(sizes): distinct nodes, i.e. as written in the file
    if added > MAX_ALIAS_EXPANSION:
        raise ManifestError(
            f"{path}: YAML aliases expand the manifest by {added:,} nodes; aliases are limited to "
            f"{MAX_ALIAS_EXPANSION:,} expanded nodes (nested aliases, a 'billion laughs' file?)",
            fix="write repeated blocks out, or reuse anchors without nesting aliases of aliases",
        )


def _expanded_size(node: yaml.Node, sizes: dict[int, int], open_: set[int], path: Path) -> int:
    """Nodes in the tree under ``node`` once aliases are expanded; memoized per node,
    so the cost is the number of distinct nodes however large the expansion."""
    key = id(node)
    if key in sizes:
        return sizes[key]
    if key in open_:
        raise ManifestError(
            f"{path}:{node.start_mark.line + 1}: recursive YAML alias: the anchored node here contains an alias to itself",
            fix="an alias may only refer to an anchor outside itself",
        )
    open_.add(key)
    if isinstance(node, yaml.MappingNode):
        children = [n for pair in node.value for n in pair]
    elif isinstance(node, yaml.SequenceNode):
        children = node.value
    else:
        children = []
    total = 1 + sum(_expanded_size(c, sizes, open_, path) for c in children)
    open_.discard(key)
    sizes[key] = total
    return total


def _convert(loader: yaml.SafeLoader, node: yaml.Node, at: Path_, lines: dict, path: Path) -> Any:
    lines.setdefault(at, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        loader.flatten_mapping(node)
        out: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = _scalar(loader, key_node, at, path, what="key")
            if not isinstance(key, (str, int, float, bool)) and key is not None:
                raise ManifestError(f"{path}:{key_node.start_mark.line + 1}: {dotted(at) or '(top level)'}: "
                                    "mapping keys must be scalars")
            if key in out:
                first = lines.get(at + (key,), "?")
                raise ManifestError(
                    f"{path}:{key_node.start_mark.line + 1}: duplicate key "
                    f"'{dotted(at + (key,))}' (first defined on line {first})",
                    fix="give each entry a unique name",
                )
            lines[at + (key,)] = key_node.start_mark.line + 1
            out[key] = _convert(loader, value_node, at + (key,), lines, path)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_convert(loader, item, at + (i,), lines, path) for i, item in enumerate(node.value)]
    return _scalar(loader, node, at, path)


def _scalar(loader: yaml.SafeLoader, node: yaml.Node, at: Path_, path: Path, what: str = "value") -> Any:
    """Construct a scalar (or a key); refuse what no manifest needs, naming line and key."""
    where = f"{path}:{node.start_mark.line + 1}: {dotted(at) or '(top level)'}"
    try:
        value = loader.construct_object(node, deep=True)
    except yaml.YAMLError:
        raise
    except Exception as exc:  # int('9' * 5000) past Python's int-string limit; 2024-13-45; !!timestamp 'x'
        text = str(getattr(node, "value", ""))
        raise ManifestError(f"{where}: cannot read the {what} {_short(text)}: {exc}") from None
    if isinstance(value, str) and "\0" in value:
        raise ManifestError(f"{where}: a NUL byte in the {what} {_short(value)}", fix="remove the \\0 from the string")
    if isinstance(value, (bytes, bytearray)):
        raise ManifestError(f"{where}: binary (!!binary) {what}s are not allowed in a manifest")
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > MAX_INT_BITS:
        raise ManifestError(f"{where}: integer {what} of {value.bit_length():,} bits is out of range "
                            f"(at most {MAX_INT_BITS} bits)")
    return value


def _short(text: str, n: int = 60) -> str:
    """``text`` for a message: control characters escaped, at most ``n`` characters."""
    out = repr(text[:n])
    return out if len(text) <= n else out + f" ({len(text):,} characters)"


def dotted(at: Path_) -> str:
    """A key path for a message: ``candidate_sets.0.source``; control characters escaped, long keys cut."""
    parts = []
    for p in at:
        s = str(p) if not isinstance(p, str) else p
        if not s.isprintable():
            s = repr(s)[1:-1]
        parts.append(s if len(s) <= 80 else s[:80] + "...")
    return ".".join(parts)


def line_of(lines: dict[Path_, int], at: Path_) -> int | None:
    """Line of the deepest known prefix of ``at``."""
    for n in range(len(at), -1, -1):
        if at[:n] in lines:
            return lines[at[:n]]
    return None
