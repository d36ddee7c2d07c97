"""fcc Al is a metal at every mesh size: pw.x prints bands only with
verbosity='high' above 100 k-points, and the engine always asks for them."""

from __future__ import annotations

import pytest
from pymatgen.core import Lattice, Structure

from aimmat.engines.qe.engine import QeEngine
from tests.engines.qe.conftest import needs_pw, profile, si

pytestmark = [needs_pw, pytest.mark.needs_qe]


def _al(a=4.05):
    return Structure(Lattice([[0, a / 2, a / 2], [a / 2, 0, a / 2], [a / 2, a / 2, 0]]), ["Al"], [[0, 0, 0]])


@pytest.mark.parametrize("n", [2, 6, 12, 20])
def test_al_is_metallic_at_every_mesh(tmp_path, n):
    res = QeEngine().run(_al(), profile(ecutwfc_ry=12), "static", tmp_path, kpts=(n, n, n))
    assert res.failure_code is None and res.extra["metallic"] is True


def test_si_is_an_insulator_with_a_dense_mesh(tmp_path):
    res = QeEngine().run(si(), profile(ecutwfc_ry=12), "static", tmp_path, kpts=(12, 12, 12))
    assert res.failure_code is None and res.extra["metallic"] is False
