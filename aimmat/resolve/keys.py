"""Stage keys: sha256 of canonical JSON, and templates that make them fast.

A stage's canonical inputs are the same JSON text for every candidate
except the structure hash, so the text around the hash is hashed once per
recipe and each key costs one sha256 state copy (4 keys per candidate at
100k candidates).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from aimmat.identity import sha256_canonical

HOLE = "aimmat-hash-placeholder"

Template = tuple  # (sha256 state after the text up to the hole, bytes after it)


def stage_key(inputs: dict[str, Any]) -> str:
    """Key of canonical inputs (stage or import)."""
    return sha256_canonical(inputs)


def template(inputs: dict[str, Any]) -> Template | None:
    """The key template of canonical ``inputs`` holding ``HOLE`` once as a
    string value, or None when it does not occur exactly once."""
    parts = json.dumps(inputs, sort_keys=True, separators=(",", ":"), ensure_ascii=True).split(f'"{HOLE}"')
    return (hashlib.sha256((parts[0] + '"').encode()), ('"' + parts[1]).encode()) if len(parts) == 2 else None


def fill(tmpl: Template, value: str) -> str:
    """sha256 of the template's text with ``value`` in the hole."""
    h = tmpl[0].copy()
    h.update(value.encode() + tmpl[1])
    return h.hexdigest()


def fillable(value) -> bool:
    """Whether ``value`` can go into a template as it is (JSON needs no escaping)."""
    return value.__class__ is str and value.isascii() and value.isalnum()
