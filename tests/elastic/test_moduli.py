"""Oracle tests of the derived moduli: known tensors in, textbook moduli out.

The references are closed-form formulas written out here (Lame constants,
Voigt/Reuss averages from stiffness and compliance), never values printed
by the code under test.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from aimmat.elastic.moduli import derived_moduli, hill_young_poisson
from tests.elastic.tensors import cubic, isotropic, rotate_full


def voigt_reuss_reference(c: np.ndarray) -> tuple[float, float, float, float]:
    """Hill (1952): K_V, G_V from stiffness, K_R, G_R from compliance (engineering shear)."""
    s = np.linalg.inv(c)
    kv = (c[0, 0] + c[1, 1] + c[2, 2] + 2 * (c[0, 1] + c[0, 2] + c[1, 2])) / 9
    gv = (c[0, 0] + c[1, 1] + c[2, 2] - (c[0, 1] + c[0, 2] + c[1, 2]) + 3 * (c[3, 3] + c[4, 4] + c[5, 5])) / 15
    kr = 1 / (s[0, 0] + s[1, 1] + s[2, 2] + 2 * (s[0, 1] + s[0, 2] + s[1, 2]))
    gr = 15 / (4 * (s[0, 0] + s[1, 1] + s[2, 2]) - 4 * (s[0, 1] + s[0, 2] + s[1, 2]) + 3 * (s[3, 3] + s[4, 4] + s[5, 5]))
    return kv, gv, kr, gr


@pytest.mark.parametrize("lam, mu", [(60.0, 30.0), (121.0, 80.0), (10.0, 95.0), (-20.0, 50.0)])
def test_isotropic_tensor_gives_lame_moduli_exactly(lam, mu):
    m = derived_moduli(isotropic(lam, mu))
    k = lam + 2 * mu / 3
    for key in ("k_voigt_gpa", "k_reuss_gpa", "b_h_gpa"):
        assert m[key] == pytest.approx(k, rel=1e-12), key
    for key in ("g_voigt_gpa", "g_reuss_gpa", "g_h_gpa"):
        assert m[key] == pytest.approx(mu, rel=1e-12), key
    assert m["e_h_gpa"] == pytest.approx(mu * (3 * lam + 2 * mu) / (lam + mu), rel=1e-12)
    assert m["poisson_h"] == pytest.approx(lam / (2 * (lam + mu)), rel=1e-12, abs=1e-14)
    assert m["universal_anisotropy"] == pytest.approx(0.0, abs=1e-12)


def test_cubic_voigt_equals_reuss_for_bulk_and_hill_averages_for_shear():
    c11, c12, c44 = 165.7, 63.9, 79.6
    m = derived_moduli(cubic(c11, c12, c44))
    k = (c11 + 2 * c12) / 3
    gv = (c11 - c12 + 3 * c44) / 5
    gr = 5 * (c11 - c12) * c44 / (4 * c44 + 3 * (c11 - c12))
    assert m["k_voigt_gpa"] == pytest.approx(k, rel=1e-12)
    assert m["k_reuss_gpa"] == pytest.approx(k, rel=1e-12)
    assert m["g_voigt_gpa"] == pytest.approx(gv, rel=1e-12)
    assert m["g_reuss_gpa"] == pytest.approx(gr, rel=1e-12)
    assert m["g_h_gpa"] == pytest.approx((gv + gr) / 2, rel=1e-12)
    # Ranganathan & Ostoja-Starzewski (2008): A^U = 5 G_V/G_R + K_V/K_R - 6
    assert m["universal_anisotropy"] == pytest.approx(5 * gv / gr - 5, rel=1e-10)
    assert m["universal_anisotropy"] > 0.1  # silicon is anisotropic: the check is not vacuous


def test_cubic_with_zener_ratio_one_is_isotropic():
    c11, c12 = 200.0, 80.0
    m = derived_moduli(cubic(c11, c12, (c11 - c12) / 2))
    assert m["g_voigt_gpa"] == pytest.approx(m["g_reuss_gpa"], rel=1e-12)
    assert m["universal_anisotropy"] == pytest.approx(0.0, abs=1e-12)


def test_general_tensor_matches_stiffness_and_compliance_formulas():
    rng = np.random.default_rng(7)
    a = rng.normal(size=(6, 6))
    c = a @ a.T * 15 + np.eye(6) * 40  # positive definite, triclinic
    m = derived_moduli(c)
    kv, gv, kr, gr = voigt_reuss_reference(c)
    assert m["k_voigt_gpa"] == pytest.approx(kv, rel=1e-10)
    assert m["g_voigt_gpa"] == pytest.approx(gv, rel=1e-10)
    assert m["k_reuss_gpa"] == pytest.approx(kr, rel=1e-10)
    assert m["g_reuss_gpa"] == pytest.approx(gr, rel=1e-10)
    assert m["b_h_gpa"] == pytest.approx((kv + kr) / 2, rel=1e-10)
    assert m["g_h_gpa"] == pytest.approx((gv + gr) / 2, rel=1e-10)
    b, g = (kv + kr) / 2, (gv + gr) / 2
    assert m["e_h_gpa"] == pytest.approx(9 * b * g / (3 * b + g), rel=1e-10)
    assert m["poisson_h"] == pytest.approx((3 * b - 2 * g) / (2 * (3 * b + g)), rel=1e-10)
    assert m["universal_anisotropy"] == pytest.approx(5 * gv / gr + kv / kr - 6, rel=1e-8)
    # Hill's bounds for a PD tensor
    assert kv >= kr and gv >= gr


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_moduli_are_invariant_under_rotation_of_the_tensor(seed):
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(6, 6))
    c = a @ a.T * 10 + np.eye(6) * 30
    r = Rotation.random(random_state=seed).as_matrix()
    c_rot = rotate_full(c, r)
    assert np.abs(c_rot - c).max() > 1.0  # the rotation really changes the tensor
    m1, m2 = derived_moduli(c), derived_moduli(c_rot)
    for key in m1:
        assert m2[key] == pytest.approx(m1[key], rel=1e-9, abs=1e-9), key


def test_derived_moduli_returns_plain_floats_for_json():
    m = derived_moduli(cubic(166.0, 64.0, 80.0).tolist())  # a nested list is accepted too
    assert set(m) == {"k_voigt_gpa", "k_reuss_gpa", "g_voigt_gpa", "g_reuss_gpa", "b_h_gpa", "g_h_gpa", "e_h_gpa",
                      "poisson_h", "universal_anisotropy"}
    assert all(type(v) is float for v in m.values())


@pytest.mark.parametrize("lam, mu", [(60.0, 30.0), (1.0, 100.0), (300.0, 5.0)])
def test_hill_young_poisson_from_lame_constants(lam, mu):
    e, nu = hill_young_poisson(lam + 2 * mu / 3, mu)
    assert e == pytest.approx(mu * (3 * lam + 2 * mu) / (lam + mu), rel=1e-12)
    assert nu == pytest.approx(lam / (2 * (lam + mu)), rel=1e-12)
    # the isotropic identity E = 2 G (1 + nu)
    assert e == pytest.approx(2 * mu * (1 + nu), rel=1e-12)


def test_hill_young_poisson_limits():
    e, nu = hill_young_poisson(100.0, 0.0)  # a fluid: no shear stiffness
    assert e == 0.0 and nu == pytest.approx(0.5)
    e, nu = hill_young_poisson(0.0, 50.0)  # no bulk stiffness
    assert e == 0.0 and nu == pytest.approx(-1.0)
    e, nu = hill_young_poisson(100.0, 150.0)  # nu = 0 exactly when 3B = 2G
    assert nu == pytest.approx(0.0, abs=1e-15) and e == pytest.approx(2 * 150.0)
