"""What changed between two key inputs, one line per field."""

from __future__ import annotations

from typing import Any

LABELS = {
    "source_sha256": "source file sha256",
    "checkpoint_sha256": "generator checkpoint sha256",
    "predictor_sha256": "ranking model checkpoint sha256",
    "structure_sha256": "input structure sha256",
}
_ABSENT = object()


def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(d, dict):
        out: dict[str, Any] = {}
        for k, v in d.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix: d}


def _show(v: Any) -> str:
    if isinstance(v, str) and len(v) == 64 and all(c in "0123456789abcdef" for c in v):
        return v[:12]
    if v is _ABSENT:
        return "(absent)"
    return "null" if v is None else str(v)


def describe_changes(old: dict, new: dict, labels: dict[str, str] | None = None) -> list[str]:
    """One line per changed field: 'profile.fmax_ev_per_a 0.05 -> 0.02'."""
    a, b = _flatten(old), _flatten(new)
    labels = LABELS if labels is None else labels
    lines = []
    for field in sorted(set(a) | set(b)):
        if a.get(field, _ABSENT) != b.get(field, _ABSENT):
            name = labels.get(field, field)
            if field.startswith("pseudos."):
                name = f"pseudopotential {field[len('pseudos.'):]} md5"
            lines.append(f"{name} {_show(a.get(field, _ABSENT))} -> {_show(b.get(field, _ABSENT))}")
    return lines
