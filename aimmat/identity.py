"""Canonical hashing: the identity of inputs and structures.

A stage key is the sha256 of canonical JSON of everything that determines the
stage's result. Canonical means: sorted keys, no whitespace, floats rounded
to fixed precision (so 1e-12 noise from a file round-trip does not trigger a
rerun) and -0.0 folded to 0.0.
"""

from __future__ import annotations

import hashlib
import json
import math
from typing import Any

import numpy as np

FLOAT_DIGITS = 10
LATTICE_DIGITS = 6  # 1e-6 A
FRAC_DIGITS = 8


def _canon(obj: Any, digits: int = FLOAT_DIGITS) -> Any:
    if isinstance(obj, bool) or obj is None or isinstance(obj, str):
        return obj
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        x = float(obj)
        if not math.isfinite(x):
            return repr(x)
        x = round(x, digits)
        return 0.0 if x == 0 else x
    if isinstance(obj, dict):
        return {str(k): _canon(v, digits) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, np.ndarray)):
        return [_canon(v, digits) for v in obj]
    raise TypeError(f"cannot hash value of type {type(obj).__name__}")


def canonical_json(obj: Any) -> str:
    return json.dumps(_canon(obj), sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def sha256_json(obj: Any) -> str:
    return hashlib.sha256(canonical_json(obj).encode()).hexdigest()


def canonical(obj: Any) -> Any:
    """``obj`` in canonical form (rounded floats, plain types)."""
    return _canon(obj)


def sha256_canonical(obj: Any) -> str:
    """sha256_json for data already in canonical form (skips the rounding
    walk; equal to ``sha256_json(obj)`` because canonicalizing is idempotent)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()).hexdigest()


def sha256_file(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def structure_identity(structure) -> dict[str, Any]:
    """Canonical form of a pymatgen Structure: lattice rounded to 1e-6 A,
    fractional coordinates wrapped into [0, 1) and rounded to 1e-8, sites
    sorted by (species, coordinates) so a permuted file hashes the same."""
    lattice = np.round(structure.lattice.matrix, LATTICE_DIGITS)
    sites = []
    for site in structure:
        frac = np.round(np.mod(site.frac_coords, 1.0), FRAC_DIGITS)
        frac[frac >= 1.0] = 0.0
        frac = frac + 0.0  # fold -0.0
        sites.append((site.species_string, tuple(float(f) for f in frac)))
    sites.sort()
    return {
        "lattice": [[float(x) + 0.0 for x in row] for row in lattice],
        "sites": [[sp, list(fc)] for sp, fc in sites],
    }


def structure_sha256(structure) -> str:
    return sha256_json(structure_identity(structure))
