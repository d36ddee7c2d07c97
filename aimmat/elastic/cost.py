"""What a strain set costs in a plane-wave code: irreducible k-points of its cells.

A set with fewer cells is not cheaper when its cells are less symmetric:
the coupled deformation types of ``strains.py`` make every strained cell
of a cubic crystal triclinic (~11,000 irreducible k-points each on a dense
mesh), while the six pure states leave tetragonal or orthorhombic cells
(1,600-5,700). So a strain set is priced as

    cost = sum over strained cells of n_irreducible_k * n_atoms**2,

in k-point x atom^2 units. The number of k-points is what pw.x will use:
the Monkhorst-Pack mesh of the run reduced by the cell's operations that
pw.x can find, with time reversal. The n_atoms**2 factor (plane waves and
bands both grow with the cell) only matters between crystals, never between
the sets of one crystal. One SCF per cell is assumed: ionic steps of
strained cells with free internal coordinates are not predicted.

pw.x finds symmetry by trying fixed Cartesian matrices (the 48 operations
of the cube with axes along x, y, z, and the 24 of the hexagonal prism with
c along z and a along x). ``pw_rotations`` keeps the spglib operations
whose Cartesian form is in those lists, so the prediction also holds for a
crystal left in a non-standard orientation.
"""

from __future__ import annotations

import itertools

import numpy as np

from aimmat.elastic.strains import (
    POOL, PURE, StrainSet, check_spans, deformation_from_lagrangian, noise_ratio, pool_ratios, voigt_to_matrix,
)

KPOINT_SYMPREC = 1e-5  # A; pw.x tests operations to ~1e-5 in crystal coordinates
COST_MODEL = "sum over strained cells of irreducible k-points (pw.x-visible operations, time reversal) x n_atoms^2"


def _bravais_lists() -> list[np.ndarray]:
    """pw.x's candidate Cartesian operations: cube axes, and the hexagonal prism (c along z, a along x)."""
    cubic = []
    for perm in itertools.permutations(range(3)):
        for signs in itertools.product((1, -1), repeat=3):
            m = np.zeros((3, 3))
            for i, (j, s) in enumerate(zip(perm, signs)):
                m[i, j] = s
            cubic.append(m)
    hexa = []
    for k in range(6):
        c, s = np.cos(k * np.pi / 3), np.sin(k * np.pi / 3)
        rot = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])
        mirror = np.diag([1.0, -1.0, -1.0])  # 2-fold about x
        for m in (rot, rot @ mirror):
            hexa.extend([m, -m])
    return [np.array(cubic), np.array(hexa)]


_LISTS = _bravais_lists()


def pw_rotations(structure, symprec: float = KPOINT_SYMPREC) -> np.ndarray:
    """Integer rotations (fractional coordinates) of ``structure`` that pw.x finds.

    Parameters
    ----------
    structure : pymatgen.core.Structure
    symprec : float
        spglib tolerance (A); pw.x's own is ~1e-5 in crystal coordinates.

    Returns
    -------
    numpy.ndarray
        (n, 3, 3) spglib rotations whose Cartesian form is in pw.x's cubic
        list or in its hexagonal list, whichever keeps more.
    """
    import spglib

    species = list(dict.fromkeys(structure.species))
    cell = (structure.lattice.matrix, structure.frac_coords, [species.index(s) for s in structure.species])
    sym = spglib.get_symmetry(cell, symprec=symprec)
    rots = np.asarray(sym["rotations"])
    a = structure.lattice.matrix.T  # columns: lattice vectors
    cart = np.einsum("ij,njk,kl->nil", a, rots, np.linalg.inv(a))
    best = rots[:1]
    for ops in _LISTS:
        keep = np.array([np.abs(ops - c).max(axis=(1, 2)).min() < 1e-4 for c in cart])
        if keep.sum() > len(best):
            best = rots[keep]
    return best


def irreducible_kpoints(structure, mesh, symprec: float = KPOINT_SYMPREC) -> int:
    """Irreducible points of the unshifted ``mesh`` under the operations pw.x finds, with time reversal."""
    import spglib

    mapping, _ = spglib.get_stabilized_reciprocal_mesh([int(m) for m in mesh], pw_rotations(structure, symprec),
                                                       is_shift=[0, 0, 0], is_time_reversal=True)
    return int(len(np.unique(mapping)))


def cell_kpoints(structure, sset: StrainSet, mesh) -> list[int]:
    """Irreducible k-points of each strained cell of ``sset`` (type-major, like ``sset.voigt``)."""
    from pymatgen.analysis.elasticity.strain import Deformation

    return [irreducible_kpoints(Deformation(deformation_from_lagrangian(voigt_to_matrix(e))).apply_to_structure(structure), mesh)
            for e in sset.voigt]


def _pure_subset(types_cost: list[float], basis: np.ndarray, magnitudes, max_noise_ratio: float) -> np.ndarray | None:
    """The cheapest proper subset of the six pure states that spans ``basis`` within the noise bound."""
    best, best_key = None, None
    for k in range(1, 6):
        for idx in itertools.combinations(range(6), k):
            types = PURE[list(idx)]
            if not check_spans(np.array([m * t for t in types for m in magnitudes]), basis)[0]:
                continue
            r = noise_ratio(types, basis, magnitudes)
            key = (sum(types_cost[i] for i in idx), k, r)
            if r <= max_noise_ratio + 1e-9 and (best_key is None or key < best_key):
                best, best_key = types, key
    return best


def _cheapest_coupled(structure, basis: np.ndarray, mesh, magnitudes, max_noise_ratio: float):
    """Of all one- and two-type sets of the pool within the noise bound, the one with the
    fewest predicted k-points (two high-symmetry types can beat one low-symmetry type: for
    cubic, a tetragonal and a trigonal strain against one monoclinic). A type's cells share
    one symmetry group (scaling or negating a strain keeps its stabilizer), so each type is
    priced once, at the largest magnitude."""
    r1, i, j, r2 = pool_ratios(basis, magnitudes)
    m = max(magnitudes, key=abs)
    price: dict[int, int] = {}

    def k(p: int) -> int:
        if p not in price:
            price[p] = cell_kpoints(structure, StrainSet(POOL[[p]], (m,), "coupled"), mesh)[0]
        return price[p]

    bound = max_noise_ratio + 1e-9
    options = [((k(p), r1[p]), [p]) for p in np.flatnonzero(r1 <= bound)]
    options += [((k(i[q]) + k(j[q]), r2[q]), [i[q], j[q]]) for q in np.flatnonzero(r2 <= bound)]
    if not options:
        return None
    return POOL[min(options, key=lambda o: o[0])[1]]


def choose_by_cost(structure, basis: np.ndarray, coupled: StrainSet, mesh, magnitudes,
                   max_noise_ratio: float = 1.5) -> tuple[StrainSet, list[dict]]:
    """The cheapest candidate strain set within the noise bound.

    Candidates: the six pure states; the cheapest subset of them within the
    bound; ``coupled`` (the fewest-cells set of ``choose_strain_set``); and,
    when that set has one or two types, the cheapest one- or two-type set
    within the bound (coupled types differ widely in what symmetry they
    leave, and the fewest-cells search ignores it).

    Parameters
    ----------
    structure : pymatgen.core.Structure
        The unstrained cell, in the frame the cells will run in.
    basis : numpy.ndarray
        (m, 6, 6) allowed-tensor basis in that frame.
    coupled : StrainSet
        The fewest-cells set of ``choose_strain_set``.
    mesh : sequence of int
        The Monkhorst-Pack mesh every cell shares.
    magnitudes : sequence of float
    max_noise_ratio : float
        Bound on the noise ratio against the six pure states.

    Returns
    -------
    chosen : StrainSet
    candidates : list of dict
        Per candidate: name, kind, types, n_cells, noise_ratio,
        kpoints_per_cell, predicted_kpoints and predicted_cost (see
        ``COST_MODEL``), chosen.
    """
    n2 = len(structure) ** 2
    mags = tuple(magnitudes)
    pure = StrainSet(PURE.copy(), mags, "pure")
    pure_k = cell_kpoints(structure, pure, mesh)
    per_type = [sum(pure_k[i * len(mags):(i + 1) * len(mags)]) for i in range(6)]
    cands = [("pure", pure, pure_k)]
    sub = _pure_subset(per_type, basis, mags, max_noise_ratio)
    if sub is not None and len(sub) < 6:
        idx = [int(np.flatnonzero(t)[0]) for t in sub]
        cands.append(("pure_subset", StrainSet(sub, mags, "pure_subset"),
                      [k for i in idx for k in pure_k[i * len(mags):(i + 1) * len(mags)]]))
    if coupled.kind == "coupled":
        cands.append(("coupled_fewest_cells", coupled, cell_kpoints(structure, coupled, mesh)))
        if len(coupled.types) <= 2:
            cheap = _cheapest_coupled(structure, basis, mesh, mags, max_noise_ratio)
            if cheap is not None and not np.array_equal(cheap, coupled.types):
                s = StrainSet(cheap, mags, "coupled")
                cands.append(("coupled_cheapest", s, cell_kpoints(structure, s, mesh)))
    rows = []
    for name, s, ks in cands:
        rows.append({"name": name, "kind": s.kind, "types": s.types.tolist(), "n_cells": s.n_cells,
                     "noise_ratio": float(noise_ratio(s.types, basis, mags)), "kpoints_per_cell": ks,
                     "predicted_kpoints": int(sum(ks)), "predicted_cost": float(sum(ks) * n2), "chosen": False})
    ok = [i for i, r in enumerate(rows) if r["noise_ratio"] <= max_noise_ratio + 1e-9 or r["name"] == "pure"]
    best = min(ok, key=lambda i: (rows[i]["predicted_cost"], rows[i]["n_cells"], rows[i]["noise_ratio"]))
    rows[best]["chosen"] = True
    return cands[best][1], rows


__all__ = ["COST_MODEL", "KPOINT_SYMPREC", "cell_kpoints", "choose_by_cost", "irreducible_kpoints", "pw_rotations"]
