"""Oracle tensors for the elastic tests (Voigt 6x6, GPa), built from their
textbook definitions, independent of the package's symmetry code."""

from __future__ import annotations

import numpy as np

VOIGT = ((0, 0), (1, 1), (2, 2), (1, 2), (0, 2), (0, 1))


def isotropic(lam: float, mu: float) -> np.ndarray:
    """From the Lame constants: C11 = lam + 2 mu, C12 = lam, C44 = mu."""
    c = np.zeros((6, 6))
    c[:3, :3] = lam
    np.fill_diagonal(c[:3, :3], lam + 2 * mu)
    c[3, 3] = c[4, 4] = c[5, 5] = mu
    return c


def cubic(c11, c12, c44) -> np.ndarray:
    c = np.zeros((6, 6))
    c[:3, :3] = c12
    np.fill_diagonal(c[:3, :3], c11)
    c[3, 3] = c[4, 4] = c[5, 5] = c44
    return c


def hexagonal(c11, c12, c13, c33, c44) -> np.ndarray:
    """Transversely isotropic about z: C66 = (C11 - C12) / 2."""
    c = np.zeros((6, 6))
    c[0, 0] = c[1, 1] = c11
    c[0, 1] = c[1, 0] = c12
    c[0, 2] = c[2, 0] = c[1, 2] = c[2, 1] = c13
    c[2, 2] = c33
    c[3, 3] = c[4, 4] = c44
    c[5, 5] = (c11 - c12) / 2
    return c


def rotate_full(c_voigt: np.ndarray, r: np.ndarray) -> np.ndarray:
    """Rotate through the rank-4 Cartesian tensor, C'_ijkl = R_ia R_jb R_kc R_ld C_abcd
    (independent of the package's Bond matrix)."""
    full = np.zeros((3, 3, 3, 3))
    for a, (i, j) in enumerate(VOIGT):
        for b, (k, l) in enumerate(VOIGT):
            for p, q in {(i, j), (j, i)}:
                for s, t in {(k, l), (l, k)}:
                    full[p, q, s, t] = c_voigt[a, b]
    rot = np.einsum("ia,jb,kc,ld,abcd->ijkl", r, r, r, r, full)
    return np.array([[rot[i, j, k, l] for (k, l) in VOIGT] for (i, j) in VOIGT])
