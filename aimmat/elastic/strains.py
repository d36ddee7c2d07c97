"""Strain sets: the fewest deformation types that determine a crystal's
independent constants, each at several magnitudes.

Deformation types are coupled Lagrangian strains (as in ElaStic and
thermo_pw): one strain that moves several Voigt components at once excites
several stress components, so a cubic crystal's three constants come from
one type. Rank alone is not enough: ElaStic's ULICS vectors (components
1..6 scaled to the largest) reach full rank with one type for cubic, but
their small components make C11 five times noisier than the 24-cell pure
set. So types are chosen as an optimal design: from all strains with
components in {-1, 0, 1}, greedily add the type that most lowers the
worst standard error of any constant (relative to the six pure states at
the same magnitudes), until the set spans the constants and that ratio is
at most ``max_noise_ratio``. Triclinic crystals use the six pure states.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Voigt, engineering shear (eta_4 = 2 eta_yz).
PURE = np.eye(6)
DEFAULT_MAGNITUDES = (-0.01, -0.005, 0.005, 0.01)


@dataclass
class StrainSet:
    types: np.ndarray  # (t, 6) unit deformation types (Voigt, engineering shear)
    magnitudes: tuple[float, ...]
    kind: str  # "coupled", "pure" or "pure_subset" (some of the pure states)
    candidates: list | None = None  # priced alternatives when chosen by cost (aimmat.elastic.cost)

    @property
    def voigt(self) -> np.ndarray:
        """(t * n_magnitudes, 6) Lagrangian strains, type-major."""
        return np.array([m * t for t in self.types for m in self.magnitudes])

    @property
    def n_cells(self) -> int:
        return len(self.types) * len(self.magnitudes)


def voigt_to_matrix(v: np.ndarray) -> np.ndarray:
    """Voigt (engineering shear) to the symmetric 3x3 strain."""
    return np.array([[v[0], v[5] / 2, v[4] / 2], [v[5] / 2, v[1], v[3] / 2], [v[4] / 2, v[3] / 2, v[2]]])


def matrix_to_voigt(e: np.ndarray) -> np.ndarray:
    return np.array([e[0, 0], e[1, 1], e[2, 2], 2 * e[1, 2], 2 * e[0, 2], 2 * e[0, 1]])


def deformation_from_lagrangian(eta: np.ndarray) -> np.ndarray:
    """Symmetric F with 1/2 (F^T F - I) = eta (3x3)."""
    w, v = np.linalg.eigh(np.eye(3) + 2 * eta)
    return v @ np.diag(np.sqrt(w)) @ v.T


def lagrangian_from_deformation(f: np.ndarray) -> np.ndarray:
    return 0.5 * (f.T @ f - np.eye(3))


def design_matrix(strains_voigt: np.ndarray, basis: np.ndarray) -> np.ndarray:
    """Rows: 6 stress components per strain; columns: allowed-tensor basis."""
    return np.vstack([np.stack([b @ e for b in basis], axis=1) for e in strains_voigt])


def _pool() -> np.ndarray:
    vals = np.array(np.meshgrid(*[[-1.0, 0.0, 1.0]] * 6, indexing="ij")).reshape(6, -1).T
    keep = []
    for v in vals:
        nz = np.flatnonzero(v)
        if len(nz) and v[nz[0]] > 0:  # one of each +/- pair: magnitudes carry the sign
            keep.append(v)
    return np.array(keep)


POOL = _pool()  # 364 coupled deformation types


def coefficient_errors(types: np.ndarray, basis: np.ndarray, magnitudes=DEFAULT_MAGNITUDES) -> np.ndarray | None:
    """Standard error of each C_ij (upper triangle, unit stress noise) for a
    set of types, or None when the set does not span the constants."""
    e = np.array([m * t for t in types for m in magnitudes])
    a = design_matrix(e, basis)
    ata = a.T @ a
    if np.linalg.matrix_rank(ata, tol=1e-12 * max(np.abs(ata).max(), 1e-300)) < len(basis):
        return None
    cov = np.linalg.inv(ata)
    var = np.einsum("kij,kl,lij->ij", basis, cov, basis)
    iu = np.triu_indices(6)
    return np.sqrt(np.clip(var[iu], 0, None))


def noise_ratio(types: np.ndarray, basis: np.ndarray, magnitudes=DEFAULT_MAGNITUDES) -> float:
    """Worst ratio of a constant's standard error to that of the six pure states."""
    mine = coefficient_errors(types, basis, magnitudes)
    if mine is None:
        return np.inf
    ref = coefficient_errors(PURE, basis, magnitudes)
    mask = ref > 1e-12 * ref.max()
    return float((mine[mask] / ref[mask]).max())


def choose_strain_set(basis: np.ndarray, magnitudes=DEFAULT_MAGNITUDES, pure: bool = False,
                      max_noise_ratio: float = 1.5, max_types: int = 5) -> StrainSet:
    """Fewest coupled types that span ``basis`` with a noise ratio of at most
    ``max_noise_ratio`` (exhaustive over one and two types, then greedy);
    the six pure states when ``pure``, for 21 constants, or when no smaller
    set qualifies."""
    if pure or len(basis) == 21:
        return StrainSet(PURE.copy(), tuple(magnitudes), "pure")
    key = (np.round(basis, 10).tobytes(), tuple(magnitudes), max_noise_ratio, max_types)
    if key not in _CHOICE_CACHE:
        _CHOICE_CACHE[key] = _search(basis, magnitudes, max_noise_ratio, max_types)
    types = _CHOICE_CACHE[key]
    if types is None:
        return StrainSet(PURE.copy(), tuple(magnitudes), "pure")
    return StrainSet(types.copy(), tuple(magnitudes), "coupled")


_CHOICE_CACHE: dict = {}


def _information(basis: np.ndarray, magnitudes):
    """Per-type information matrices of the pool and a function giving noise ratios of summed ones."""
    w = float(np.sum(np.square(magnitudes)))
    # information matrix of one type: sum over magnitudes of D^T D, D = [B_k t]_k (6 x m)
    d = np.einsum("kij,pj->pik", basis, POOL)  # (n_pool, 6, m)
    g = w * np.einsum("pik,pil->pkl", d, d)  # (n_pool, m, m)
    iu = np.triu_indices(6)
    bc = basis[:, iu[0], iu[1]]  # (m, 21)
    dp = np.einsum("kij,pj->pik", basis, PURE)
    ref = _errors(w * np.einsum("pik,pil->kl", dp, dp)[None], bc)[0]
    mask = ref > 1e-12 * ref.max()

    def ratios(infos: np.ndarray) -> np.ndarray:
        errs = _errors(infos, bc)
        return np.where(np.isfinite(errs).all(axis=1), (errs[:, mask] / ref[mask]).max(axis=1), np.inf)

    return g, ratios


def pool_ratios(basis: np.ndarray, magnitudes=DEFAULT_MAGNITUDES, pairs: bool = True):
    """Noise ratios of every one-type set of the pool and, with ``pairs``, every two-type set.

    Returns
    -------
    r1 : numpy.ndarray
        (n_pool,) ratio of each type alone (inf where it does not span).
    i, j, r2 : numpy.ndarray
        Pool indices of each pair (i < j) and its ratio (empty without ``pairs``).
    """
    g, ratios = _information(basis, magnitudes)
    r1 = ratios(g)
    if not pairs:
        return r1, np.array([], int), np.array([], int), np.array([])
    i, j = np.triu_indices(len(POOL), k=1)
    r2 = np.concatenate([ratios(g[i[s:s + 8192]] + g[j[s:s + 8192]]) for s in range(0, len(i), 8192)])  # batches keep memory small
    return r1, i, j, r2


def _search(basis: np.ndarray, magnitudes, max_ratio: float, max_types: int) -> np.ndarray | None:
    g, ratios = _information(basis, magnitudes)
    r1 = ratios(g)
    if r1.min() <= max_ratio:
        return POOL[[int(r1.argmin())]]
    _, i, j, r2 = pool_ratios(basis, magnitudes)
    k = int(r2.argmin())
    best_pair, best_r = [int(i[k]), int(j[k])], r2[k]
    if best_r <= max_ratio:
        return POOL[best_pair]
    # Some classes cannot be spanned by two types (orthorhombic: C = (a x b)(a x b)^T
    # is invisible to any two strains a, b). Grow greedily: most rank first,
    # then the lowest noise ratio, then the most information.
    chosen = list(best_pair) if np.isfinite(best_r) else []
    while len(chosen) < max_types:
        infos = g[chosen].sum(axis=0)[None] + g if chosen else g
        rank = np.linalg.matrix_rank(infos, tol=1e-10 * max(np.abs(infos).max(), 1e-300))
        r = ratios(infos)
        trace = np.trace(infos, axis1=1, axis2=2)
        order = np.lexsort((-trace, r, -rank))
        chosen.append(int(order[0]))
        if r[order[0]] <= max_ratio:
            return POOL[chosen]
    return None


def _errors(infos: np.ndarray, bc: np.ndarray) -> np.ndarray:
    """Standard errors of the 21 coordinates of C for stacked information
    matrices (inf where singular)."""
    m = infos.shape[-1]
    det_ok = np.linalg.matrix_rank(infos, tol=1e-10 * max(np.abs(infos).max(), 1e-300)) == m
    out = np.full((len(infos), bc.shape[1]), np.inf)
    if det_ok.any():
        inv = np.linalg.inv(infos[det_ok])
        var = np.einsum("kc,nkl,lc->nc", bc, inv, bc)
        out[det_ok] = np.sqrt(np.clip(var, 0, None))
    return out


def check_spans(strains_voigt: np.ndarray, basis: np.ndarray) -> tuple[bool, str]:
    """Whether these strains determine every allowed constant, and what to change when not."""
    a = design_matrix(strains_voigt, basis)
    rank = np.linalg.matrix_rank(a, tol=1e-9)
    if rank == len(basis):
        return True, ""
    return False, (f"the strained cells determine {rank} of the crystal's {len(basis)} independent constants; "
                   "recompute the lost cells or add a deformation type")
