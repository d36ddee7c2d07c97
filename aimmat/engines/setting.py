"""The standard setting of a crystal: the orientation pw.x's symmetry finder expects.

pw.x finds symmetry by applying a fixed list of Cartesian rotation matrices
(the 48 of the cube, or the 24 of the hexagonal prism, with their axes along
x, y, z) to the cell. A crystal read in any other orientation keeps only the
few operations that happen to line up: fcc Al read from a CIF in pymatgen's
``from_parameters`` orientation keeps 4 of 48 and needs ~10x more k-points.
spglib finds symmetry in lattice coordinates, so it sees the whole group in
any orientation and tells us the rotation to its standardized axes (cubic
along x, y, z; hexagonal a along x, c along z).

``standard_orientation`` applies that rotation rigidly (the lattice is not
idealized: the crystal is the same, only turned) and, where the atom count
allows, re-expresses the cell in spglib's standard primitive (or conventional)
basis, an integer change of basis that moves no atom. The rotation ``R`` maps
input-frame Cartesian vectors to the standard frame, x_std = R x_in; the
helpers below take results computed in the standard frame back to the input
frame.
"""

from __future__ import annotations

import numpy as np


def _cell(structure, species: list):
    return (structure.lattice.matrix, structure.frac_coords, [species.index(s) for s in structure.species])


def _nearest_rotation(r: np.ndarray) -> np.ndarray:
    """Polar decomposition: spglib's matrix is orthogonal only to round-off."""
    u, _, vt = np.linalg.svd(r)
    out = u @ vt
    if np.linalg.det(out) < 0:
        raise ValueError("spglib returned an improper standardizing rotation")
    return out


def standard_orientation(structure, symprec: float = 0.01):
    """Rotate ``structure`` rigidly into spglib's standardized orientation.

    Parameters
    ----------
    structure : pymatgen.core.Structure
        The crystal, in any orientation and lattice basis.
    symprec : float
        spglib tolerance (A) for finding the space group.

    Returns
    -------
    rotated : pymatgen.core.Structure
        The same crystal (same interatomic vectors up to ``R``), with its
        lattice in spglib's standard primitive basis when that cell has as
        many atoms as the input, else the standard conventional basis when
        that does, else the input's own basis (a supercell is kept as is, so
        an explicit k-mesh keeps its meaning).
    R : numpy.ndarray
        (3, 3) proper rotation with x_std = R @ x_in (Cartesian).
    info : dict
        ``spacegroup`` (symbol and number), ``basis`` (primitive,
        conventional or input), ``rotation`` (R as nested lists) and
        ``idealization_strain``: the largest Lagrangian strain between the
        rotated lattice and spglib's idealized one. pw.x tests lattice
        symmetry to ~1e-6, so a cell further than that from ideal still
        loses operations in pw.x whatever its orientation.
    """
    import spglib
    from pymatgen.core import Lattice, Structure

    species = list(dict.fromkeys(structure.species))
    cell = _cell(structure, species)
    data = spglib.get_symmetry_dataset(cell, symprec=symprec)
    if data is None:
        raise ValueError(f"spglib found no space group at symprec={symprec}")
    r = _nearest_rotation(np.asarray(data.std_rotation_matrix, dtype=float))
    n = len(structure)
    basis, lat, frac, nums = "input", structure.lattice.matrix, structure.frac_coords, cell[2]
    for name, prim in (("primitive", True), ("conventional", False)):
        lp, fp, np_ = spglib.standardize_cell(cell, to_primitive=prim, no_idealize=True, symprec=symprec)
        if len(np_) == n:
            basis, lat, frac, nums = name, lp, fp, np_
            break
    frac = np.asarray(frac, dtype=float)
    strain = 0.0
    if basis != "input":
        ideal, ideal_frac, ideal_nums = spglib.standardize_cell(cell, to_primitive=basis == "primitive", no_idealize=False,
                                                                symprec=symprec)
        # spglib keeps the input's origin when it does not idealize; pw.x then sees the
        # operations with fractional translations its FFT grid cannot hold and drops them.
        # Move the origin to the standard one (a translation: nothing physical changes).
        shift = np.asarray(ideal_frac[0]) - frac[0]
        d = (frac + shift) - np.asarray(ideal_frac)
        if np.array_equal(nums, ideal_nums) and np.abs(d - np.round(d)).max() < 0.1:
            frac = frac + shift
    rotated = Structure(Lattice(np.asarray(lat) @ r.T), [species[i] for i in nums], frac % 1.0, coords_are_cartesian=False)
    if basis != "input":
        # rows are lattice vectors: F maps rotated to ideal (L_ideal = L_rot F^T)
        f = np.linalg.solve(rotated.lattice.matrix, np.asarray(ideal)).T
        strain = float(np.abs(0.5 * (f.T @ f - np.eye(3))).max())
    info = {"spacegroup": f"{data.international} ({data.number})", "basis": basis, "rotation": r.tolist(),
            "idealization_strain": strain}
    return rotated, r, info


def stress_to_input_frame(stress: np.ndarray, r: np.ndarray) -> np.ndarray:
    """A 3x3 stress computed in the standard frame, in the input frame (R^T s R)."""
    from pymatgen.analysis.elasticity.stress import Stress

    return np.asarray(Stress(np.asarray(stress, dtype=float)).rotate(np.asarray(r).T))


def forces_to_input_frame(forces: np.ndarray, r: np.ndarray) -> np.ndarray:
    """(n, 3) forces from the standard frame to the input frame.

    Hand-written: pymatgen has no rotation for a list of vectors, and
    f_in = R^T f_std is one product (rows: f @ R). Atoms stay in the order
    of the rotated structure, which may differ from the input's when
    ``standard_orientation`` changed the lattice basis.
    """
    return np.asarray(forces, dtype=float) @ np.asarray(r)


def voigt_to_input_frame(c_voigt: np.ndarray, r: np.ndarray) -> np.ndarray:
    """A 6x6 Voigt stiffness (GPa, engineering shear) from the standard frame to the input frame."""
    from pymatgen.analysis.elasticity import ElasticTensor

    return np.asarray(ElasticTensor.from_voigt(np.asarray(c_voigt, dtype=float)).rotate(np.asarray(r).T).voigt)


def deformation_to_input_frame(f: np.ndarray, r: np.ndarray) -> np.ndarray:
    """A deformation gradient applied in the standard frame, as seen in the input frame (R^T F R).

    Hand-written: a deformation gradient is a two-point tensor, not one of
    pymatgen's Tensor kinds; rotating both legs is R^T F R.
    """
    r = np.asarray(r)
    return r.T @ np.asarray(f) @ r


__all__ = ["standard_orientation", "stress_to_input_frame", "forces_to_input_frame", "voigt_to_input_frame",
           "deformation_to_input_frame"]
