"""Relax and SCF send cells to pw.x in the standard orientation (when the
mesh comes from the spacing) and bring results back to the input frame:
fcc Al read in pymatgen's from_parameters orientation keeps pw.x's 48
operations, its k-point count equals the standard setting's, and its
stress comes back isotropic."""

from __future__ import annotations

import re

import numpy as np
import pytest
from pymatgen.core import Lattice, Structure

from aimmat.engines.qe.engine import QeEngine
from tests.engines.qe.conftest import needs_pw, profile

pytestmark = [needs_pw, pytest.mark.needs_qe]


def _run(structure, tmp, **kw):
    res = QeEngine().run(structure, profile(kpoints=None, kspacing_per_a=0.3, ecutwfc_ry=15, **kw), "static", tmp)
    text = (tmp / "pw.out").read_text()
    ops = int(re.search(r"(\d+) Sym\. Ops", text).group(1))
    nk = int(re.search(r"number of k points=\s+(\d+)", text).group(1))
    return res, ops, nk


def test_fcc_al_in_any_orientation_runs_with_full_symmetry(tmp_path):
    a = 4.05
    tilted = Structure(Lattice.from_parameters(*[a / np.sqrt(2)] * 3, 60, 60, 60), ["Al"], [[0, 0, 0]])
    standard = Structure(Lattice([[0, a / 2, a / 2], [a / 2, 0, a / 2], [a / 2, a / 2, 0]]), ["Al"], [[0, 0, 0]])
    res, ops, nk = _run(tilted, tmp_path / "t")
    ref, ops_ref, nk_ref = _run(standard, tmp_path / "s")
    assert ops == ops_ref == 48 and nk <= 1.2 * nk_ref
    assert res.extra["setting"]["spacegroup"] == "Fm-3m (225)"
    s = np.asarray(res.stress_gpa)
    assert np.allclose(s, s[0, 0] * np.eye(3), atol=1e-3)  # back in the input frame, still hydrostatic
    assert s[0, 0] == pytest.approx(np.asarray(ref.stress_gpa)[0, 0], abs=2e-3)
    assert res.extra["metallic"] is True
    # the returned cell is the input crystal in the input orientation
    out = Structure.from_dict(res.structure)
    assert out.lattice.volume == pytest.approx(tilted.lattice.volume, rel=1e-9)
    assert np.allclose(sorted(out.lattice.abc), sorted(tilted.lattice.abc))


def test_an_explicit_mesh_is_left_in_the_callers_basis(tmp_path):
    a = 4.05
    tilted = Structure(Lattice.from_parameters(*[a / np.sqrt(2)] * 3, 60, 60, 60), ["Al"], [[0, 0, 0]])
    res = QeEngine().run(tilted, profile(ecutwfc_ry=15), "static", tmp_path, kpts=(4, 4, 4))
    assert "setting" not in res.extra and res.failure_code is None
