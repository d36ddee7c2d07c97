"""YAML loading that remembers where every key came from.

PyYAML's safe loader silently keeps the last of two equal mapping keys and
forgets line numbers once objects are built. Validation errors must name the
line, and a duplicated profile id must be refused, so we compose the node
tree ourselves and record ``path -> line`` while converting.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from aimmat.errors import ManifestError

Path_ = tuple[Any, ...]


def load_yaml_with_lines(path: Path) -> tuple[Any, dict[Path_, int]]:
    """Parse ``path``; return the data and a map from key path to 1-based line."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ManifestError(f"{path}: cannot read manifest: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise ManifestError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
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
    finally:
        loader.dispose()
    return data, lines


def _convert(loader: yaml.SafeLoader, node: yaml.Node, at: Path_, lines: dict, path: Path) -> Any:
    lines.setdefault(at, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        loader.flatten_mapping(node)
        out: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = loader.construct_object(key_node, deep=True)
            if not isinstance(key, (str, int, float, bool)) and key is not None:
                raise ManifestError(f"{path}:{key_node.start_mark.line + 1}: mapping keys must be scalars")
            if key in out:
                first = lines.get(at + (key,), "?")
                raise ManifestError(
                    f"{path}:{key_node.start_mark.line + 1}: duplicate key "
                    f"'{'.'.join(map(str, at + (key,)))}' (first defined on line {first})",
                    fix="give each entry a unique name",
                )
            lines[at + (key,)] = key_node.start_mark.line + 1
            out[key] = _convert(loader, value_node, at + (key,), lines, path)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_convert(loader, item, at + (i,), lines, path) for i, item in enumerate(node.value)]
    return loader.construct_object(node, deep=True)


def line_of(lines: dict[Path_, int], at: Path_) -> int | None:
    """Line of the deepest known prefix of ``at``."""
    for n in range(len(at), -1, -1):
        if at[:n] in lines:
            return lines[at[:n]]
    return None
