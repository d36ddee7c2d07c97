"""Engine boundary: units and sign of stress checked against finite
differences of the energy, on EMT and on the real CHGNet weights."""

from __future__ import annotations

import numpy as np
import pytest
from ase.build import bulk
from pymatgen.core import Lattice, Structure
from pymatgen.io.ase import AseAtomsAdaptor

from aimmat.engines import get_engine

GPA_PER_EV_A3 = 160.21766208


def _fd_stress_gpa(engine, structure, tmp_path, d=1e-4):
    """sigma_ij = (1/V) dE/d eps_ij for a symmetric strain (tensile positive)."""
    out = np.zeros((3, 3))
    for i, j in [(0, 0), (1, 1), (0, 1)]:
        e = []
        for sgn in (+1, -1):
            eps = np.zeros((3, 3))
            if i == j:
                eps[i, i] = sgn * d
            else:  # symmetric shear: eps_ij = eps_ji = d/2, so dE = V sigma_ij d
                eps[i, j] = eps[j, i] = sgn * d / 2
            s = structure.copy()
            s.lattice = Lattice(s.lattice.matrix @ (np.eye(3) + eps).T)
            e.append(engine.run(s, {}, "static", tmp_path / f"fd{i}{j}{sgn}").energy_ev)
        out[i, j] = (e[0] - e[1]) / (2 * d) / structure.volume * GPA_PER_EV_A3
    return out


def _check(kind, structure, tmp_path, tol):
    engine = get_engine({"kind": kind})
    res = engine.run(structure, {}, "static", tmp_path / "s")
    stress = np.asarray(res.stress_gpa)
    fd = _fd_stress_gpa(engine, structure, tmp_path)
    for i, j in [(0, 0), (1, 1), (0, 1)]:
        assert stress[i, j] == pytest.approx(fd[i, j], abs=tol), (i, j, stress, fd)


def test_emt_stress_matches_energy_derivative(tmp_path):
    # compressed, sheared Cu cell: non-zero normal and shear stress
    s = AseAtomsAdaptor.get_structure(bulk("Cu", "fcc", a=3.5))
    s.lattice = Lattice(s.lattice.matrix @ np.array([[1, 0.02, 0], [0, 1, 0], [0, 0, 1]]).T)
    _check("emt", s, tmp_path, tol=0.02)
    res = get_engine({"kind": "emt"}).run(s, {}, "static", tmp_path / "x")
    assert np.trace(res.stress_gpa) < 0  # compressed below equilibrium: compressive, negative


@pytest.mark.slow
def test_chgnet_stress_matches_energy_derivative(tmp_path):
    s = Structure(Lattice.cubic(5.30), ["Si"] * 2, [[0, 0, 0], [0.25, 0.25, 0.25]])
    s.lattice = Lattice(s.lattice.matrix @ np.array([[1, 0.015, 0], [0, 1, 0], [0, 0, 1]]).T)
    _check("chgnet", s, tmp_path, tol=0.5)


def test_relax_reports_convergence_and_cap(tmp_path):
    s = AseAtomsAdaptor.get_structure(bulk("Cu", "fcc", a=3.5))
    eng = get_engine({"kind": "emt"})
    ok = eng.run(s, {"fmax_ev_per_a": 0.01, "max_steps": 500, "optimizer": "FIRE"}, "relax", tmp_path / "a")
    assert ok.converged and ok.failure_code is None
    assert abs(np.trace(ok.stress_gpa) / 3) < 0.5
    capped = eng.run(s, {"fmax_ev_per_a": 1e-6, "max_steps": 1, "optimizer": "FIRE"}, "relax", tmp_path / "b")
    assert not capped.converged and capped.failure_code == "ionic_not_converged"
    assert capped.output_present
