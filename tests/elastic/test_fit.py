"""Oracle tests of the elastic fit: a known tensor in, its constants and
moduli out; a rotated crystal in, the rotated tensor out."""

from __future__ import annotations

import numpy as np
import pytest
from pymatgen.analysis.elasticity import ElasticTensor
from pymatgen.analysis.elasticity.strain import Deformation, Strain
from pymatgen.core import Lattice, Structure
from scipy.spatial.transform import Rotation

from aimmat.elastic import fit_elastic, strain_set

C11, C12, C44 = 165.7, 63.9, 79.6  # silicon, experiment (GPa)


def cubic(c11, c12, c44) -> np.ndarray:
    c = np.zeros((6, 6))
    c[:3, :3] = c12
    np.fill_diagonal(c[:3, :3], c11)
    c[3, 3] = c[4, 4] = c[5, 5] = c44
    return c


def _stresses(c_voigt, deformations, eq=np.zeros((3, 3))):
    """Linear-elastic stresses for the Green-Lagrange strain of each deformation."""
    ct = ElasticTensor.from_voigt(c_voigt)
    return [np.asarray(ct.calculate_stress(Strain.from_deformation(Deformation(d)))) + eq for d in deformations]


@pytest.fixture
def si():
    return Structure(Lattice.cubic(5.43), ["Si"] * 2, [[0, 0, 0], [0.25, 0.25, 0.25]])


def test_recovers_known_cubic_tensor(si):
    defs = strain_set(si, [-0.01, -0.005, 0.005, 0.01], [-0.01, -0.005, 0.005, 0.01])
    assert len(defs) == 24
    fit = fit_elastic(defs, _stresses(cubic(C11, C12, C44), defs), np.zeros((3, 3)))
    assert np.allclose(fit["tensor_voigt_gpa"], cubic(C11, C12, C44), atol=1e-6)
    assert fit["fit_rms_gpa"] < 1e-8
    assert fit["pass_pd"]


def test_known_moduli(si):
    defs = strain_set(si, [-0.01, 0.01], [-0.01, 0.01])
    fit = fit_elastic(defs, _stresses(cubic(C11, C12, C44), defs), np.zeros((3, 3)))
    kv = (C11 + 2 * C12) / 3
    gv = (C11 - C12 + 3 * C44) / 5
    gr = 5 * (C11 - C12) * C44 / (4 * C44 + 3 * (C11 - C12))
    g = (gv + gr) / 2
    assert fit["b_h_gpa"] == pytest.approx(kv, abs=1e-6)  # cubic: K_V = K_R
    assert fit["g_h_gpa"] == pytest.approx(g, abs=1e-6)
    assert fit["e_h_gpa"] == pytest.approx(9 * kv * g / (3 * kv + g), abs=1e-6)
    assert fit["poisson_h"] == pytest.approx((3 * kv - 2 * g) / (2 * (3 * kv + g)), abs=1e-9)


def test_equilibrium_stress_is_removed(si):
    defs = strain_set(si, [-0.01, 0.01], [-0.01, 0.01])
    eq = np.diag([0.3, 0.3, 0.3])
    fit = fit_elastic(defs, _stresses(cubic(C11, C12, C44), defs, eq), eq)
    assert np.allclose(fit["tensor_voigt_gpa"], cubic(C11, C12, C44), atol=1e-6)


def test_rotated_crystal_gives_rotated_tensor(si):
    rot = Rotation.from_euler("zyx", [23, 41, -17], degrees=True).as_matrix()
    c_rot = ElasticTensor.from_voigt(cubic(C11, C12, C44)).rotate(rot).voigt
    rotated = Structure(Lattice(si.lattice.matrix @ rot.T), si.species, si.frac_coords)
    defs = strain_set(rotated, [-0.01, -0.005, 0.005, 0.01], [-0.01, -0.005, 0.005, 0.01])
    fit = fit_elastic(defs, _stresses(c_rot, defs), np.zeros((3, 3)))
    assert np.allclose(fit["tensor_voigt_gpa"], c_rot, atol=1e-5)
    assert fit["b_h_gpa"] == pytest.approx((C11 + 2 * C12) / 3, abs=1e-5)


def test_unstable_tensor_fails_pd(si):
    bad = cubic(100.0, 120.0, 50.0)  # C11 < C12: Born-unstable
    defs = strain_set(si, [-0.01, 0.01], [-0.01, 0.01])
    fit = fit_elastic(defs, _stresses(bad, defs), np.zeros((3, 3)))
    assert not fit["pass_pd"]
    assert fit["min_eigenvalue_gpa"] == pytest.approx(100.0 - 120.0, abs=1e-6)


def test_noise_shows_in_rms(si):
    defs = strain_set(si, [-0.01, 0.01], [-0.01, 0.01])
    rng = np.random.default_rng(0)
    noisy = [s + rng.normal(0, 0.05, (3, 3)) for s in _stresses(cubic(C11, C12, C44), defs)]
    noisy = [(s + s.T) / 2 for s in noisy]
    fit = fit_elastic(defs, noisy, np.zeros((3, 3)))
    assert 0.005 < fit["fit_rms_gpa"] < 0.2
