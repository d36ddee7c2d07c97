"""Oracle tests of the elastic fit: a known tensor in, its constants and
moduli out; a rotated crystal in, the rotated tensor out."""

from __future__ import annotations

import numpy as np
import pytest
from pymatgen.analysis.elasticity import ElasticTensor
from pymatgen.core import Lattice, Structure
from scipy.spatial.transform import Rotation

from aimmat.elastic import fit_elastic, strain_set
from aimmat.elastic.fit import cauchy
from aimmat.elastic.strains import lagrangian_from_deformation, matrix_to_voigt
from aimmat.elastic.symmetry import rotate_voigt
from tests.elastic.tensors import cubic

C11, C12, C44 = 165.7, 63.9, 79.6  # silicon, experiment (GPa)
A = 5.43


def oracle_stresses(c_voigt, deformations, eq=np.zeros((3, 3))):
    """Cauchy stresses of linear elasticity in Lagrangian strain / PK2 stress."""
    out = []
    for f in deformations:
        s = c_voigt @ matrix_to_voigt(lagrangian_from_deformation(np.asarray(f)))
        pk2 = np.array([[s[0], s[5], s[4]], [s[5], s[1], s[3]], [s[4], s[3], s[2]]]) + eq
        out.append(cauchy(np.asarray(f), pk2))
    return out


@pytest.fixture
def si():
    return Structure(Lattice([[0, A / 2, A / 2], [A / 2, 0, A / 2], [A / 2, A / 2, 0]]), ["Si"] * 2, [[0, 0, 0], [0.25, 0.25, 0.25]])


def test_cubic_needs_four_cells_and_recovers_the_tensor(si):
    defs, info = strain_set(si)
    assert info["crystal_system"] == "cubic" and info["n_constants"] == 3 and len(defs) == 4
    fit = fit_elastic(defs, oracle_stresses(cubic(C11, C12, C44), defs), np.zeros((3, 3)), structure=si)
    assert np.allclose(fit["tensor_voigt_gpa"], cubic(C11, C12, C44), atol=1e-6)
    assert fit["fit_rms_gpa"] < 1e-8 and fit["pass_pd"] and fit["gates"]["born"]["pass"]


def test_pure_states_give_the_same_tensor(si):
    defs, info = strain_set(si, pure=True)
    assert info["kind"] == "pure" and len(defs) == 24
    fit = fit_elastic(defs, oracle_stresses(cubic(C11, C12, C44), defs), np.zeros((3, 3)), structure=si)
    assert np.allclose(fit["tensor_voigt_gpa"], cubic(C11, C12, C44), atol=1e-6)


def test_known_moduli(si):
    defs, _ = strain_set(si)
    fit = fit_elastic(defs, oracle_stresses(cubic(C11, C12, C44), defs), np.zeros((3, 3)), structure=si)
    kv = (C11 + 2 * C12) / 3
    gv = (C11 - C12 + 3 * C44) / 5
    gr = 5 * (C11 - C12) * C44 / (4 * C44 + 3 * (C11 - C12))
    g = (gv + gr) / 2
    assert fit["b_h_gpa"] == pytest.approx(kv, abs=1e-6)  # cubic: K_V = K_R
    assert fit["g_h_gpa"] == pytest.approx(g, abs=1e-6)
    assert fit["e_h_gpa"] == pytest.approx(9 * kv * g / (3 * kv + g), abs=1e-6)
    assert fit["poisson_h"] == pytest.approx((3 * kv - 2 * g) / (2 * (3 * kv + g)), abs=1e-9)


def test_equilibrium_stress_is_taken_into_account(si):
    defs, _ = strain_set(si)
    eq = np.diag([0.3, 0.3, 0.3])
    fit = fit_elastic(defs, oracle_stresses(cubic(C11, C12, C44), defs, eq), eq, structure=si)
    assert np.allclose(fit["tensor_voigt_gpa"], cubic(C11, C12, C44), atol=1e-6)


def test_rotated_crystal_gives_rotated_tensor(si):
    rot = Rotation.from_euler("zyx", [23, 41, -17], degrees=True).as_matrix()
    c_rot = rotate_voigt(cubic(C11, C12, C44), rot)
    assert np.allclose(c_rot, ElasticTensor.from_voigt(cubic(C11, C12, C44)).rotate(rot).voigt, atol=1e-9)
    rotated = Structure(Lattice(si.lattice.matrix @ rot.T), si.species, si.frac_coords)
    defs, info = strain_set(rotated)
    assert info["n_constants"] == 3 and len(defs) == 4  # symmetry found in any frame
    fit = fit_elastic(defs, oracle_stresses(c_rot, defs), np.zeros((3, 3)), structure=rotated)
    assert np.allclose(fit["tensor_voigt_gpa"], c_rot, atol=1e-6)
    assert fit["b_h_gpa"] == pytest.approx((C11 + 2 * C12) / 3, abs=1e-6)


def test_noise_shows_in_rms_and_standard_errors(si):
    defs, _ = strain_set(si)
    rng = np.random.default_rng(0)
    noisy = []
    for s in oracle_stresses(cubic(C11, C12, C44), defs):
        n = rng.normal(0, 0.05, (3, 3))
        noisy.append(s + (n + n.T) / 2)
    fit = fit_elastic(defs, noisy, np.zeros((3, 3)), structure=si)
    assert 0.005 < fit["fit_rms_gpa"] < 0.2
    assert 0 < fit["stderr_gpa"][0][0] < 5
