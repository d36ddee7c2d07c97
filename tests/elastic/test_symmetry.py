"""The allowed elastic tensors of a point group: Bond matrices, the invariant
basis (counted against the textbook number of independent constants per
Laue class), projection, and the symmetry found for real crystals."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from pymatgen.core import Lattice, Structure
from scipy.spatial.transform import Rotation

from aimmat.elastic.symmetry import (
    CrystalSymmetry,
    bond_matrix,
    crystal_symmetry,
    invariant_basis,
    laue_class,
    project,
    rotate_voigt,
    symmetry_residual,
)
from tests.elastic.point_groups import GROUPS, X, Z, axis_rotation, closure
from tests.elastic.tensors import cubic, hexagonal, isotropic, rotate_full

TRIU = [(i, j) for i in range(6) for j in range(i, 6)]


def random_spd(seed: int) -> np.ndarray:
    a = np.random.default_rng(seed).normal(size=(6, 6))
    return a @ a.T * 10 + 30 * np.eye(6)


# ------------------------------------------------------------------ Bond matrix
def test_bond_matrix_of_identity_is_identity():
    assert np.allclose(bond_matrix(np.eye(3)), np.eye(6), atol=0)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_rotate_voigt_matches_the_rank_four_tensor_rotation(seed):
    c = random_spd(seed)
    r = Rotation.random(random_state=seed).as_matrix()
    assert np.allclose(rotate_voigt(c, r), rotate_full(c, r), atol=1e-9)


def test_bond_matrix_is_a_group_homomorphism_with_orthogonal_mandel_form():
    r1 = Rotation.random(random_state=10).as_matrix()
    r2 = Rotation.random(random_state=11).as_matrix()
    assert np.allclose(bond_matrix(r1 @ r2), bond_matrix(r1) @ bond_matrix(r2), atol=1e-12)
    assert np.allclose(bond_matrix(r1.T), np.linalg.inv(bond_matrix(r1)), atol=1e-12)
    w = np.diag([1, 1, 1, 2 ** 0.5, 2 ** 0.5, 2 ** 0.5])
    q = w @ bond_matrix(r1) @ np.linalg.inv(w)  # Mandel notation: an orthogonal 6x6 matrix
    assert np.allclose(q @ q.T, np.eye(6), atol=1e-12)


def test_quarter_turn_about_z_swaps_x_and_y_constants():
    c = random_spd(4)
    rc = rotate_voigt(c, axis_rotation(Z, 90))
    # x -> y, y -> -x: C11 <-> C22, C13 <-> C23, C44 <-> C55, C33 and C66 stay
    assert rc[0, 0] == pytest.approx(c[1, 1]) and rc[1, 1] == pytest.approx(c[0, 0])
    assert rc[0, 2] == pytest.approx(c[1, 2]) and rc[1, 2] == pytest.approx(c[0, 2])
    assert rc[3, 3] == pytest.approx(c[4, 4]) and rc[4, 4] == pytest.approx(c[3, 3])
    assert rc[2, 2] == pytest.approx(c[2, 2]) and rc[5, 5] == pytest.approx(c[5, 5])
    # odd in the shear xy: C16 changes sign under x -> y, y -> -x
    assert rc[0, 5] == pytest.approx(-c[1, 5])


def test_isotropic_tensor_is_unchanged_by_any_rotation():
    c = isotropic(70.0, 40.0)
    for seed in range(5):
        r = Rotation.random(random_state=seed).as_matrix()
        assert np.allclose(rotate_voigt(c, r), c, atol=1e-10)


# ------------------------------------------------------------- invariant basis
@pytest.mark.parametrize("name", list(GROUPS))
def test_invariant_basis_has_the_textbook_number_of_constants(name):
    gens, order, n_constants = GROUPS[name]
    group = closure(gens)
    assert len(group) == order  # the group really is the one named
    basis = invariant_basis(group)
    assert basis.shape == (n_constants, 6, 6)
    # symmetric, invariant under every operation, orthonormal in the 21 upper-triangle coordinates
    coords = np.array([[b[i, j] for i, j in TRIU] for b in basis])
    assert np.allclose(coords @ coords.T, np.eye(n_constants), atol=1e-10)
    for b in basis:
        assert np.allclose(b, b.T)
        for r in group:
            assert np.allclose(rotate_voigt(b, r), b, atol=1e-10)


def test_cubic_basis_spans_exactly_the_cubic_tensors():
    basis = invariant_basis(closure(GROUPS["cubic m-3m (432)"][0]))
    c = cubic(166.0, 64.0, 80.0)
    assert np.allclose(project(c, basis), c, atol=1e-10)
    assert symmetry_residual(c, basis) < 1e-12
    # a hexagonal tensor is not cubic
    assert symmetry_residual(hexagonal(160, 60, 50, 180, 45), basis) > 0.01


def test_hexagonal_basis_is_transversely_isotropic():
    basis = invariant_basis(closure(GROUPS["hexagonal 6/mmm (622)"][0]))
    c = hexagonal(160, 60, 50, 180, 45)
    assert symmetry_residual(c, basis) < 1e-12
    # every rotation about the c axis leaves every allowed tensor unchanged, not only the 60 degree ones
    for b in basis:
        assert np.allclose(rotate_voigt(b, axis_rotation(Z, 17.0)), b, atol=1e-10)


# ----------------------------------------------------------------- projection
def test_projection_onto_cubic_averages_the_equivalent_constants():
    basis = invariant_basis(closure(GROUPS["cubic m-3m (432)"][0]))
    c = cubic(166.0, 64.0, 80.0)
    broken = c.copy()
    broken[0, 0] += 9.0  # C11 != C22 = C33
    broken[3, 3] -= 3.0  # C44 != C55 = C66
    broken[0, 1] = broken[1, 0] = broken[0, 1] + 6.0  # C12 != C13 = C23
    expected = cubic(166.0 + 3.0, 64.0 + 2.0, 80.0 - 1.0)
    p = project(broken, basis)
    assert np.allclose(p, expected, atol=1e-10)
    assert np.allclose(project(p, basis), p, atol=1e-10)  # a projector
    assert symmetry_residual(broken, basis) == pytest.approx(np.linalg.norm(broken - expected) / np.linalg.norm(broken),
                                                             rel=1e-10)


def test_projection_uses_the_symmetric_part():
    basis = invariant_basis([np.eye(3)])
    c = random_spd(5)
    skew = np.triu(np.ones((6, 6)), 1)
    assert np.allclose(project(c + skew - skew.T, basis), c, atol=1e-10)


def test_residual_of_zero_tensor_is_zero_not_nan():
    basis = invariant_basis(closure(GROUPS["cubic m-3m (432)"][0]))
    assert symmetry_residual(np.zeros((6, 6)), basis) == 0.0


# ------------------------------------------------------ symmetry of structures
def _generic(sg: str, lattice: Lattice) -> Structure:
    return Structure.from_spacegroup(sg, lattice, ["Si"], [[0.1234, 0.2718, 0.3951]])


STRUCTURES = {
    # space group of a generic position: crystal system, Laue class, number of constants
    "P-1": (Lattice.from_parameters(4.1, 5.3, 6.2, 81, 97, 103), "triclinic", "-1", 21),
    "P2/m": (Lattice.monoclinic(4.1, 5.3, 6.2, 100), "monoclinic", "2/m", 13),
    "Pmmm": (Lattice.orthorhombic(4.1, 5.3, 6.2), "orthorhombic", "mmm", 9),
    "P4/m": (Lattice.tetragonal(4.1, 6.2), "tetragonal", "4/m", 7),
    "P4/mmm": (Lattice.tetragonal(4.1, 6.2), "tetragonal", "4/mmm", 6),
    "P-3": (Lattice.hexagonal(4.1, 6.2), "trigonal", "-3", 7),
    "P-3m1": (Lattice.hexagonal(4.1, 6.2), "trigonal", "-3m", 6),
    "P6/m": (Lattice.hexagonal(4.1, 6.2), "hexagonal", "6/mmm", 5),
    "Pm-3": (Lattice.cubic(6.1), "cubic", "m-3", 3),
    "Pm-3m": (Lattice.cubic(6.1), "cubic", "m-3m", 3),
}


@pytest.mark.parametrize("sg", list(STRUCTURES))
def test_crystal_symmetry_of_each_laue_class(sg):
    lattice, system, laue, n = STRUCTURES[sg]
    sym = crystal_symmetry(_generic(sg, lattice))
    assert isinstance(sym, CrystalSymmetry)
    assert sym.spacegroup == sg and sym.crystal_system == system and sym.laue == laue
    assert sym.n_constants == n == len(sym.basis)
    for r in sym.rotations:  # proper rotations (improper ones folded by -1)
        assert np.allclose(r @ r.T, np.eye(3), atol=1e-10) and np.linalg.det(r) == pytest.approx(1.0)


def test_crystal_symmetry_works_in_the_frame_of_the_structure():
    mg = Structure(Lattice.hexagonal(3.21, 5.21), ["Mg", "Mg"], [[1 / 3, 2 / 3, 0.25], [2 / 3, 1 / 3, 0.75]])
    c = hexagonal(59.4, 25.6, 21.4, 61.6, 16.4)  # Mg, c along z
    sym = crystal_symmetry(mg)
    assert sym.n_constants == 5 and symmetry_residual(c, sym.basis) < 1e-10
    r = Rotation.from_euler("zyx", [31, 47, -12], degrees=True).as_matrix()
    rotated = Structure(Lattice(mg.lattice.matrix @ r.T), mg.species, mg.frac_coords)
    rsym = crystal_symmetry(rotated)
    assert rsym.n_constants == 5
    assert symmetry_residual(rotate_voigt(c, r), rsym.basis) < 1e-10
    assert symmetry_residual(c, rsym.basis) > 0.01  # the unrotated tensor is wrong in the rotated frame


def test_operations_found_within_tolerance_are_made_orthonormal():
    # a cubic cell sheared by 2e-3: cubic within symprec 0.01, its Cartesian operations only nearly orthogonal
    a = 5.43
    m = np.array([[a, 0.002 * a, 0], [0, a, 0], [0, 0, a]])
    si = Structure(Lattice(m), ["Si"] * 8, [[0, 0, 0], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5],
                                           [0.25, 0.25, 0.25], [0.75, 0.75, 0.25], [0.75, 0.25, 0.75],
                                           [0.25, 0.75, 0.75]])
    sym = crystal_symmetry(si, symprec=0.01)
    assert sym.crystal_system == "cubic" and sym.n_constants == 3
    for r in sym.rotations:
        assert np.allclose(r @ r.T, np.eye(3), atol=1e-12)
    # with a tight tolerance the shear is seen and the symmetry drops
    assert crystal_symmetry(si, symprec=1e-5).n_constants > 3


@pytest.mark.parametrize("system, pg, laue", [
    ("triclinic", "1", "-1"), ("triclinic", "-1", "-1"),
    ("monoclinic", "2", "2/m"), ("monoclinic", "m", "2/m"),
    ("orthorhombic", "222", "mmm"), ("orthorhombic", "mm2", "mmm"),
    ("tetragonal", "4", "4/m"), ("tetragonal", "-4", "4/m"), ("tetragonal", "4/m", "4/m"),
    ("tetragonal", "422", "4/mmm"), ("tetragonal", "4mm", "4/mmm"), ("tetragonal", "-42m", "4/mmm"),
    ("tetragonal", "4/mmm", "4/mmm"),
    ("trigonal", "3", "-3"), ("trigonal", "-3", "-3"),
    ("trigonal", "32", "-3m"), ("trigonal", "3m", "-3m"), ("trigonal", "-3m", "-3m"),
    ("cubic", "23", "m-3"), ("cubic", "m-3", "m-3"),
    ("cubic", "432", "m-3m"), ("cubic", "-43m", "m-3m"), ("cubic", "m-3m", "m-3m"),
    ("hexagonal", "622", "6/mmm"), ("hexagonal", "6/mmm", "6/mmm"),
])
def test_laue_class_of_point_groups(system, pg, laue):
    assert laue_class(system, pg) == laue


def test_all_point_groups_of_one_laue_class_allow_the_same_tensors():
    # 4 and 4/m differ by the inversion only: the invariant bases agree
    four = closure([axis_rotation(Z, 90)])
    b1 = invariant_basis(four)
    b2 = invariant_basis([r for g in four for r in (g, g)])  # duplicated operations change nothing
    c = np.tensordot(np.arange(1.0, len(b1) + 1), b1, axes=1)
    assert len(b1) == len(b2) and symmetry_residual(c, b2) < 1e-12
    # every pair of generators of 422 gives the same 6-dimensional space
    gens = [axis_rotation(Z, 90), axis_rotation(X, 180), axis_rotation((1, 1, 0), 180)]
    dims = {len(invariant_basis(closure(list(p)))) for p in itertools.combinations(gens, 2)}
    assert dims == {6}
