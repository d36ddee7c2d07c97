from __future__ import annotations

import numpy as np
from pymatgen.core import Lattice, Structure

from aimmat.identity import canonical_json, sha256_json, structure_sha256


def _s():
    return Structure(Lattice.cubic(4.2), ["Mg", "O"], [[0, 0, 0], [0.5, 0.5, 0.5]])


def test_structure_hash_ignores_site_order_wrapping_and_noise():
    a = _s()
    b = Structure(Lattice.cubic(4.2 + 1e-9), ["O", "Mg"], [[1.5, -0.5, 0.5 + 1e-12], [1.0, 0, 0]])
    assert structure_sha256(a) == structure_sha256(b)


def test_structure_hash_sees_real_changes():
    a = _s()
    b = Structure(Lattice.cubic(4.2001), ["Mg", "O"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    c = Structure(Lattice.cubic(4.2), ["Mg", "O"], [[0, 0, 0], [0.5, 0.5, 0.501]])
    d = Structure(Lattice.cubic(4.2), ["Ca", "O"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    assert len({structure_sha256(x) for x in (a, b, c, d)}) == 4


def test_canonical_json_is_order_and_negative_zero_free():
    assert canonical_json({"b": 1, "a": [0.1 + 0.2, -0.0]}) == '{"a":[0.3,0.0],"b":1}'
    assert sha256_json({"x": np.float64(1.0)}) == sha256_json({"x": 1.0})
