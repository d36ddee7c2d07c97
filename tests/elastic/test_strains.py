"""Strain sets: conventions (engineering shear, Lagrangian strain), the
design matrix, the candidate pool, standard errors against closed-form
values, and the chosen sets for every Laue class."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from aimmat.elastic.strains import (
    DEFAULT_MAGNITUDES,
    POOL,
    PURE,
    StrainSet,
    check_spans,
    choose_strain_set,
    coefficient_errors,
    deformation_from_lagrangian,
    design_matrix,
    lagrangian_from_deformation,
    matrix_to_voigt,
    noise_ratio,
    voigt_to_matrix,
)
from aimmat.elastic.symmetry import invariant_basis, rotate_voigt
from tests.elastic.point_groups import GROUPS, closure


def basis_of(name: str) -> np.ndarray:
    return invariant_basis(closure(GROUPS[name][0]))


# ------------------------------------------------------------------ conventions
def test_voigt_matrix_round_trip_and_engineering_shear():
    v = np.array([0.01, -0.02, 0.03, 0.004, -0.006, 0.008])
    e = voigt_to_matrix(v)
    assert np.allclose(e, e.T)
    assert e[1, 2] == pytest.approx(0.002) and e[0, 2] == pytest.approx(-0.003) and e[0, 1] == pytest.approx(0.004)
    assert np.allclose(matrix_to_voigt(e), v)
    # work conjugacy: sigma : eps (matrices) = sigma_voigt . eps_voigt with engineering shear
    rng = np.random.default_rng(0)
    s = rng.normal(size=(3, 3))
    s = s + s.T
    s_voigt = np.array([s[0, 0], s[1, 1], s[2, 2], s[1, 2], s[0, 2], s[0, 1]])
    assert np.sum(s * e) == pytest.approx(s_voigt @ v, rel=1e-12)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_deformation_from_lagrangian_inverts_the_strain(seed):
    rng = np.random.default_rng(seed)
    eta = voigt_to_matrix(rng.uniform(-0.05, 0.05, 6))
    f = deformation_from_lagrangian(eta)
    assert np.allclose(f, f.T, atol=1e-14)  # symmetric: no rigid rotation added
    assert np.all(np.linalg.eigvalsh(f) > 0)
    assert np.allclose(0.5 * (f.T @ f - np.eye(3)), eta, atol=1e-14)
    assert np.allclose(lagrangian_from_deformation(f), eta, atol=1e-14)


def test_lagrangian_strain_ignores_rigid_rotation():
    f = deformation_from_lagrangian(voigt_to_matrix(np.array([0.01, 0, -0.005, 0.002, 0, 0.003])))
    r = Rotation.random(random_state=4).as_matrix()
    assert np.allclose(lagrangian_from_deformation(r @ f), lagrangian_from_deformation(f), atol=1e-14)
    assert np.allclose(lagrangian_from_deformation(r), 0.0, atol=1e-14)


def test_large_lagrangian_strain_differs_from_small_strain():
    # a 10% uniaxial Lagrangian strain is a stretch of sqrt(1.2), not 1.1
    f = deformation_from_lagrangian(np.diag([0.1, 0.0, 0.0]))
    assert f[0, 0] == pytest.approx(np.sqrt(1.2), rel=1e-12) and f[1, 1] == pytest.approx(1.0)


# ------------------------------------------------------------- design matrix
def test_design_matrix_times_coefficients_is_c_times_strain():
    basis = basis_of("hexagonal 6/mmm (622)")
    rng = np.random.default_rng(3)
    coef = rng.normal(size=len(basis))
    c = np.tensordot(coef, basis, axes=1)
    strains = rng.normal(size=(5, 6)) * 0.01
    a = design_matrix(strains, basis)
    assert a.shape == (5 * 6, len(basis))
    assert np.allclose(a @ coef, np.concatenate([c @ e for e in strains]), atol=1e-14)


# ---------------------------------------------------------------------- pool
def test_pool_holds_each_signed_pair_of_unit_strain_types_once():
    assert len(POOL) == (3 ** 6 - 1) // 2 == 364
    assert set(np.unique(POOL)) == {-1.0, 0.0, 1.0}
    assert not np.any(np.all(POOL == 0, axis=1))
    keys = {tuple(v) for v in POOL}
    assert len(keys) == len(POOL)
    assert not any(tuple(-v) in keys for v in POOL)  # +t and -t: the magnitudes carry the sign
    for v in PURE:
        assert tuple(v) in keys


def test_strain_set_cells_are_type_major():
    types = np.array([[1.0, 0, 0, 0, 0, 0], [0, 0, 0, 1.0, 1.0, 0]])
    s = StrainSet(types, (-0.01, 0.02), "coupled")
    assert s.n_cells == 4
    assert np.allclose(s.voigt, [[-0.01, 0, 0, 0, 0, 0], [0.02, 0, 0, 0, 0, 0],
                                 [0, 0, 0, -0.01, -0.01, 0], [0, 0, 0, 0.02, 0.02, 0]])


# ------------------------------------------------------------ standard errors
def test_pure_states_errors_match_closed_form_for_21_constants():
    # unit stress noise, pure strain j at magnitudes m: C_ii is seen once per cell of type i
    # (se = 1/sqrt(sum m^2)), C_ij (i != j) twice, in sigma_i of type j and sigma_j of type i
    basis = basis_of("triclinic (1)")
    w = float(np.sum(np.square(DEFAULT_MAGNITUDES)))
    errs = coefficient_errors(PURE, basis)
    iu = np.triu_indices(6)
    expected = np.where(iu[0] == iu[1], 1 / np.sqrt(w), 1 / np.sqrt(2 * w))
    assert np.allclose(errs, expected, rtol=1e-10)


def test_errors_of_a_set_that_does_not_span_are_none():
    basis = basis_of("cubic m-3m (432)")
    xx_only = np.array([[1.0, 0, 0, 0, 0, 0]])  # sees C11 and C12, never C44
    assert coefficient_errors(xx_only, basis) is None
    assert noise_ratio(xx_only, basis) == np.inf
    ok, why = check_spans(xx_only[0][None] * np.array(DEFAULT_MAGNITUDES)[:, None], basis)
    assert not ok and "determine 2 of the crystal's 3 independent constants" in why


def test_noise_ratio_of_the_pure_set_is_one():
    for name in ("cubic m-3m (432)", "orthorhombic (222)", "triclinic (1)"):
        assert noise_ratio(PURE, basis_of(name)) == pytest.approx(1.0, rel=1e-12)


def test_more_magnitudes_lower_the_errors_by_the_square_root():
    basis = basis_of("cubic m-3m (432)")
    one = coefficient_errors(PURE, basis, magnitudes=(0.01,))
    four = coefficient_errors(PURE, basis, magnitudes=(0.01,) * 4)
    mask = one > 0
    assert np.allclose(four[mask], one[mask] / 2, rtol=1e-10)


# --------------------------------------------------------------- chosen sets
@pytest.mark.parametrize("name", [n for n in GROUPS if GROUPS[n][2] < 21])
def test_chosen_set_spans_every_laue_class_within_the_noise_bound(name):
    basis = basis_of(name)
    s = choose_strain_set(basis)
    assert s.magnitudes == DEFAULT_MAGNITUDES and s.n_cells == len(s.types) * len(DEFAULT_MAGNITUDES)
    ok, why = check_spans(s.voigt, basis)
    assert ok, why
    if s.kind == "coupled":
        assert len(s.types) in range(1, 6)
        assert noise_ratio(s.types, basis) <= 1.5 + 1e-9
        assert all(tuple(t) in {tuple(p) for p in POOL} for t in s.types)
        assert s.n_cells < PURE.shape[0] * len(DEFAULT_MAGNITUDES)  # cheaper than the pure set
    else:
        assert np.array_equal(s.types, PURE)


def test_cubic_needs_one_type_and_a_stricter_noise_bound_needs_more():
    basis = basis_of("cubic m-3m (432)")
    s = choose_strain_set(basis)
    assert s.kind == "coupled" and len(s.types) == 1
    strict = choose_strain_set(basis, max_noise_ratio=1.0)
    assert strict.kind == "pure" or len(strict.types) > 1
    if strict.kind == "coupled":
        assert noise_ratio(strict.types, basis) <= 1.0 + 1e-9


def test_orthorhombic_cannot_be_spanned_by_two_types():
    # with strains a, b the 3x3 normal block M is seen only through M a[:3] and M b[:3];
    # M = (a x b)(a x b)^T is invisible, so nine constants need three types
    basis = basis_of("orthorhombic (222)")
    rng = np.random.default_rng(0)
    for _ in range(200):
        i, j = rng.choice(len(POOL), 2, replace=False)
        assert not check_spans(np.array([POOL[i], POOL[j]]) * 0.01, basis)[0]
    s = choose_strain_set(basis)
    assert len(s.types) >= 3 and check_spans(s.voigt, basis)[0]


def test_triclinic_and_pure_requests_get_the_six_pure_states():
    for s in (choose_strain_set(basis_of("triclinic (1)")), choose_strain_set(basis_of("cubic m-3m (432)"), pure=True)):
        assert s.kind == "pure" and np.array_equal(s.types, np.eye(6)) and s.n_cells == 24


def test_impossible_bound_falls_back_to_pure_states():
    s = choose_strain_set(basis_of("hexagonal 6/mmm (622)"), max_noise_ratio=0.5, max_types=2)
    assert s.kind == "pure" and np.array_equal(s.types, PURE)


def test_choice_is_cached_but_returned_sets_are_independent_copies():
    basis = basis_of("tetragonal 4/mmm (422)")
    a = choose_strain_set(basis)
    a.types[:] = 0  # a caller scribbling on its set must not change the next answer
    b = choose_strain_set(basis)
    assert np.any(b.types != 0) and check_spans(b.voigt, basis)[0]


def test_choice_follows_the_frame_of_the_basis():
    # a rotated cubic crystal: the basis is rotated, the chosen strains still span it
    r = Rotation.from_euler("zyx", [23, 41, -17], degrees=True).as_matrix()
    rotated = invariant_basis([r @ g @ r.T for g in closure(GROUPS["cubic m-3m (432)"][0])])
    assert len(rotated) == 3
    c = rotate_voigt(np.array([[166, 64, 64, 0, 0, 0], [64, 166, 64, 0, 0, 0], [64, 64, 166, 0, 0, 0],
                               [0, 0, 0, 80, 0, 0], [0, 0, 0, 0, 80, 0], [0, 0, 0, 0, 0, 80.0]]), r)
    s = choose_strain_set(rotated)
    ok, _ = check_spans(s.voigt, rotated)
    assert ok
    # and the fitted coefficients reproduce the rotated tensor from its own stresses
    a = design_matrix(s.voigt, rotated)
    coef, *_ = np.linalg.lstsq(a, np.concatenate([c @ e for e in s.voigt]), rcond=None)
    assert np.allclose(np.tensordot(coef, rotated, axes=1), c, atol=1e-8)
