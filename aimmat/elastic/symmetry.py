"""Crystal symmetry of the elastic tensor: which 6x6 tensors a point group allows.

The allowed tensors form the subspace left fixed by every rotation of the
point group. We compute it with the Reynolds operator (the group average)
acting on symmetric 6x6 Voigt matrices, so it works in whatever Cartesian
frame the structure comes in, and the number of independent constants
follows from its dimension (cubic 3, hexagonal 5, ..., triclinic 21).
pymatgen offers tensor rotation but not this invariant basis, and rotating
pymatgen Tensors one by one is ~100x slower than the Bond matrix used here.
"""

from __future__ import annotations

from dataclasses import dataclass
import numpy as np

# Voigt index pairs; (3,4,5) are yz, xz, xy.
VOIGT = ((0, 0), (1, 1), (2, 2), (1, 2), (0, 2), (0, 1))
_TRIU = [(i, j) for i in range(6) for j in range(i, 6)]  # 21 coordinates of a symmetric 6x6


def bond_matrix(r: np.ndarray) -> np.ndarray:
    """6x6 Bond matrix M of rotation ``r``: sigma' = M sigma and C' = M C M^T
    (Voigt order xx, yy, zz, yz, xz, xy; engineering shear strains)."""
    m = np.empty((6, 6))
    for a, (i, j) in enumerate(VOIGT):
        for b, (k, l) in enumerate(VOIGT):
            if b < 3:
                m[a, b] = r[i, k] * r[j, l]
            else:
                m[a, b] = r[i, k] * r[j, l] + r[i, l] * r[j, k]
    return m


def rotate_voigt(c: np.ndarray, r: np.ndarray) -> np.ndarray:
    m = bond_matrix(r)
    return m @ c @ m.T


def _sym_from_coords(x: np.ndarray) -> np.ndarray:
    c = np.zeros((6, 6))
    for v, (i, j) in zip(x, _TRIU):
        c[i, j] = c[j, i] = v
    return c


def _coords(c: np.ndarray) -> np.ndarray:
    return np.array([c[i, j] for i, j in _TRIU])


def invariant_basis(rotations: list[np.ndarray] | np.ndarray) -> np.ndarray:
    """Orthonormal (in the 21 upper-triangle coordinates) basis of the
    symmetric 6x6 tensors invariant under ``rotations``; shape (m, 6, 6)."""
    bonds = [bond_matrix(np.asarray(r)) for r in rotations]
    reynolds = np.zeros((21, 21))
    for k in range(21):
        e = np.zeros(21)
        e[k] = 1.0
        c = _sym_from_coords(e)
        avg = sum(m @ c @ m.T for m in bonds) / len(bonds)
        reynolds[:, k] = _coords(avg)
    u, s, _ = np.linalg.svd(reynolds)
    # The group average is a projector: singular values are ~1 on the allowed
    # subspace and ~0 off it, up to the symprec-level noise of the operations.
    rank = int((s > 0.5).sum())
    return np.array([_sym_from_coords(u[:, k]) for k in range(rank)])


def project(c: np.ndarray, basis: np.ndarray) -> np.ndarray:
    """Least-squares projection of a symmetric 6x6 tensor onto the allowed subspace."""
    a = np.array([_coords(b) for b in basis]).T  # 21 x m
    coef, *_ = np.linalg.lstsq(a, _coords(0.5 * (c + c.T)), rcond=None)
    return _sym_from_coords(a @ coef)


def symmetry_residual(c: np.ndarray, basis: np.ndarray) -> float:
    """||C - P(C)|| / ||C||: how far a tensor is from what its symmetry allows."""
    p = project(c, basis)
    return float(np.linalg.norm(c - p) / max(np.linalg.norm(c), 1e-30))


@dataclass
class CrystalSymmetry:
    crystal_system: str
    laue: str
    spacegroup: str
    rotations: np.ndarray  # (n, 3, 3), Cartesian, frame of the structure
    basis: np.ndarray  # (m, 6, 6)

    @property
    def n_constants(self) -> int:
        return len(self.basis)


_LAUE = {
    "triclinic": "-1", "monoclinic": "2/m", "orthorhombic": "mmm",
}


def crystal_symmetry(structure, symprec: float = 0.01) -> CrystalSymmetry:
    """Point-group rotations (Cartesian) and the allowed-tensor basis of ``structure``."""
    from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

    sga = SpacegroupAnalyzer(structure, symprec=symprec)
    ops = sga.get_point_group_operations(cartesian=True)
    rots = np.array([op.rotation_matrix for op in ops])
    # improper operations act like proper ones on an even-rank tensor
    rots = np.array([_orthonormal(r * np.sign(np.linalg.det(r))) for r in rots])
    system = sga.get_crystal_system()
    pg = sga.get_point_group_symbol()
    return CrystalSymmetry(system, laue_class(system, pg), sga.get_space_group_symbol(), rots, _basis_cached(rots))


def _orthonormal(r: np.ndarray) -> np.ndarray:
    """Nearest rotation (polar decomposition): operations found with a
    tolerance are only orthogonal to about symprec."""
    u, _, vt = np.linalg.svd(r)
    return u @ vt


_BASIS_CACHE: dict[bytes, np.ndarray] = {}


def _basis_cached(rots: np.ndarray) -> np.ndarray:
    """Crystals in the same frame share a point group: compute its basis once."""
    key = np.round(rots, 10).tobytes()
    if key not in _BASIS_CACHE:
        if len(_BASIS_CACHE) > 1024:
            _BASIS_CACHE.clear()
        _BASIS_CACHE[key] = invariant_basis(rots)
    return _BASIS_CACHE[key]


def laue_class(system: str, point_group: str) -> str:
    if system in _LAUE:
        return _LAUE[system]
    high = {"-3m", "3m", "32", "-42m", "-4m2", "4mm", "422", "4/mmm", "622", "6mm", "-6m2", "-62m", "6/mmm", "-43m", "432", "m-3m"}
    if system == "trigonal":
        return "-3m" if point_group in high else "-3"
    if system == "tetragonal":
        return "4/mmm" if point_group in high else "4/m"
    if system == "hexagonal":
        return "6/mmm"  # both hexagonal Laue classes allow the same tensors
    return "m-3m" if point_group in high else "m-3"
