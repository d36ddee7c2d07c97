"""Symmetry-constrained least-squares fit of the elastic tensor.

Finite strains are used consistently: each strained cell is described by
its Lagrangian strain eta = 1/2 (F^T F - I), its Cauchy stress sigma is
converted to the second Piola-Kirchhoff stress S = J F^-1 sigma F^-T, and
the constants are fitted to S - sigma_0 = C : eta, where sigma_0 is the
stress of the unstrained cell. Only the tensors the crystal's point group
allows are fitted (the invariant basis of ``symmetry.py``), over all six
stress components of every cell.

Units: GPa, tensile positive; Voigt order xx, yy, zz, yz, xz, xy with
engineering shear strains, so sigma_voigt = C @ eta_voigt.
"""

from __future__ import annotations

import numpy as np

from aimmat.elastic.gates import gates
from aimmat.elastic.moduli import derived_moduli
from aimmat.elastic.strains import (
    DEFAULT_MAGNITUDES,
    StrainSet,
    choose_strain_set,
    deformation_from_lagrangian,
    design_matrix,
    lagrangian_from_deformation,
    matrix_to_voigt,
    voigt_to_matrix,
)
from aimmat.elastic.symmetry import CrystalSymmetry, bond_matrix, crystal_symmetry, symmetry_residual


def stress_voigt(s: np.ndarray) -> np.ndarray:
    return np.array([s[0, 0], s[1, 1], s[2, 2], s[1, 2], s[0, 2], s[0, 1]])


def pk2(f: np.ndarray, sigma: np.ndarray) -> np.ndarray:
    """Second Piola-Kirchhoff stress of Cauchy stress ``sigma`` in a cell deformed by ``f``."""
    finv = np.linalg.inv(f)
    return np.linalg.det(f) * finv @ sigma @ finv.T


def cauchy(f: np.ndarray, s: np.ndarray) -> np.ndarray:
    """Inverse of ``pk2`` (used to make oracle stresses)."""
    return f @ s @ f.T / np.linalg.det(f)


def plan_strains(structure, symprec: float = 0.01, magnitudes=DEFAULT_MAGNITUDES, pure: bool = False, kpts=None):
    """Symmetry of ``structure`` and the strain set for it.

    Parameters
    ----------
    structure : pymatgen.core.Structure
        The unstrained cell, in the frame the cells will run in.
    symprec : float
    magnitudes : sequence of float
    pure : bool
        The six pure states, whatever they cost.
    kpts : sequence of int, optional
        The Monkhorst-Pack mesh of the cells (plane-wave engines). With it
        the cheapest candidate set by predicted k-points is chosen (see
        ``aimmat.elastic.cost``); without it, the fewest cells.

    Returns
    -------
    sym : CrystalSymmetry
    sset : StrainSet
    defs : list of numpy.ndarray
        Deformation gradients, type-major.

    With ``kpts``, ``sset.candidates`` holds the priced candidates.
    """
    sym = crystal_symmetry(structure, symprec)
    pure = pure or sym.crystal_system == "triclinic"
    sset = choose_strain_set(sym.basis, magnitudes, pure=pure)
    if kpts is not None and not pure:
        from aimmat.elastic.cost import choose_by_cost

        sset, candidates = choose_by_cost(structure, sym.basis, sset, kpts, magnitudes)
        sset.candidates = candidates
    defs = [deformation_from_lagrangian(voigt_to_matrix(e)) for e in sset.voigt]
    return sym, sset, defs


def fit_tensor(deformations, stresses_gpa, eq_stress_gpa, basis: np.ndarray) -> dict:
    """Least squares for the allowed constants. Returns the 6x6 tensor, the
    residual RMS over all stress components (GPa), the standard error of each
    C_ij (GPa; NaN when the fit has no redundancy) and the rank check."""
    etas = np.array([matrix_to_voigt(lagrangian_from_deformation(np.asarray(f))) for f in deformations])
    s0 = stress_voigt(np.asarray(eq_stress_gpa))
    b = np.concatenate([stress_voigt(pk2(np.asarray(f), np.asarray(s))) - s0 for f, s in zip(deformations, stresses_gpa)])
    a = design_matrix(etas, basis)
    m = len(basis)
    rank = int(np.linalg.matrix_rank(a, tol=1e-9))
    if rank < m:
        raise ValueError(f"the strained cells determine {rank} of {m} independent constants")
    coef, *_ = np.linalg.lstsq(a, b, rcond=None)
    resid = a @ coef - b
    c = np.tensordot(coef, basis, axes=1)
    dof = len(b) - m
    if dof > 0:
        cov = (resid @ resid / dof) * np.linalg.inv(a.T @ a)
        var = np.einsum("kij,kl,lij->ij", basis, cov, basis)
        stderr = np.sqrt(np.clip(var, 0, None))
    else:
        stderr = np.full((6, 6), np.nan)
        cov = np.full((m, m), np.nan)
    return {"tensor": c, "fit_rms_gpa": float(np.sqrt(np.mean(resid**2))), "stderr_gpa": stderr, "n_constants": m, "dof": dof,
            "coef": coef, "cov": cov}


def analyse(c: np.ndarray, fit_rms_gpa: float, sym: CrystalSymmetry, structure=None,
            fit_rms_max_gpa: float = 2.0, pd_min_gpa: float = 0.0) -> dict:
    """Derived moduli and gates of a tensor (values of a failing tensor are kept, flagged)."""
    moduli = derived_moduli(c)
    c_ieee = None
    if structure is not None and sym.crystal_system in ("hexagonal", "tetragonal", "trigonal", "cubic"):
        from pymatgen.analysis.elasticity import ElasticTensor

        try:
            c_ieee = np.asarray(ElasticTensor.from_voigt(c).convert_to_ieee(structure, refine_rotation=False).voigt)
        except Exception:  # pymatgen's IEEE conversion fails on some settings: fall back to PD alone
            c_ieee = None
    res = symmetry_residual(c, sym.basis)
    g = gates(c, fit_rms_gpa, moduli, c_ieee, sym.crystal_system if c_ieee is not None else "triclinic", sym.laue, res,
              fit_rms_max_gpa, pd_min_gpa)
    eig = np.linalg.eigvalsh(0.5 * (c + c.T))
    return {**moduli, "gates": g, "eigenvalues_gpa": eig.tolist(), "min_eigenvalue_gpa": float(eig.min()),
            "pass_pd": g["pass_pd"]["pass"], "pass_fit_rms": g["pass_fit_rms"]["pass"], "pass_both": g["pass_both"]["pass"],
            "symmetry_residual": res, "tensor_ieee_gpa": c_ieee.tolist() if c_ieee is not None else None}


# --- the API the elastic stage calls --------------------------------------------------------
def strain_set(structure, magnitudes=DEFAULT_MAGNITUDES, symprec: float = 0.01, pure: bool = False, kpts=None):
    """Deformation gradients (3x3) for ``structure`` and what chose them.

    With ``kpts`` (a plane-wave engine's mesh) the set is the cheapest by
    predicted k-points among the candidates, which are recorded; without
    it, the fewest cells. See ``plan_strains``.
    """
    sym, sset, defs = plan_strains(structure, symprec, magnitudes, pure, kpts)
    candidates = sset.candidates
    info = {"crystal_system": sym.crystal_system, "laue": sym.laue, "spacegroup": sym.spacegroup,
            "n_constants": sym.n_constants, "kind": sset.kind, "types": sset.types.tolist(),
            "magnitudes": list(sset.magnitudes), "n_cells": sset.n_cells,
            "chosen_by": "predicted_cost" if candidates else ("request" if sset.kind == "pure" else "n_cells")}
    if candidates:
        from aimmat.elastic.cost import COST_MODEL

        chosen = next(c for c in candidates if c["chosen"])
        info.update(kpoints=list(kpts), cost_model=COST_MODEL, candidates=candidates,
                    predicted_kpoints=chosen["predicted_kpoints"], predicted_cost=chosen["predicted_cost"])
    return defs, info


def fit_elastic(deformations, stresses_gpa, eq_stress_gpa, structure=None, symprec: float = 0.01,
                fit_rms_max_gpa: float = 2.0, pd_min_gpa: float = 0.0, sym: CrystalSymmetry | None = None,
                rotation: np.ndarray | None = None) -> dict:
    """Fit, gates and derived moduli from strained-cell stresses (GPa, tensile positive).

    Parameters
    ----------
    deformations, stresses_gpa, eq_stress_gpa
        Cells and their Cauchy stresses, in the frame x' = R x of ``structure``
        (R = ``rotation``, identity when None).
    structure : pymatgen.core.Structure, optional
        The crystal in the frame the results are recorded in.
    sym : CrystalSymmetry, optional
        Symmetry of ``structure`` (found when None).
    rotation : numpy.ndarray, optional
        When the cells ran in a rotated frame (the standard setting): the
        fit uses the allowed basis rotated into that frame, and the tensor
        and its standard errors come back in ``structure``'s frame exactly
        (same coefficients, unrotated basis).
    """
    if sym is None:
        if structure is None:
            raise ValueError("fit_elastic needs the structure or its symmetry")
        sym = crystal_symmetry(structure, symprec)
    basis = sym.basis
    if rotation is not None:
        m = bond_matrix(np.asarray(rotation))
        basis = np.einsum("ij,kjl,ml->kim", m, sym.basis, m)
    fit = fit_tensor(deformations, stresses_gpa, eq_stress_gpa, basis)
    if rotation is not None:
        fit["tensor"] = np.tensordot(fit["coef"], sym.basis, axes=1)
        if fit["dof"] > 0:
            var = np.einsum("kij,kl,lij->ij", sym.basis, fit["cov"], sym.basis)
            fit["stderr_gpa"] = np.sqrt(np.clip(var, 0, None))
    out = analyse(fit["tensor"], fit["fit_rms_gpa"], sym, structure, fit_rms_max_gpa, pd_min_gpa)
    return {"tensor_voigt_gpa": fit["tensor"].tolist(), "fit_rms_gpa": fit["fit_rms_gpa"],
            "stderr_gpa": np.where(np.isnan(fit["stderr_gpa"]), None, fit["stderr_gpa"]).tolist(),
            "n_constants": fit["n_constants"], "crystal_system": sym.crystal_system, "laue": sym.laue, **out}


__all__ = ["StrainSet", "fit_elastic", "fit_tensor", "plan_strains", "strain_set", "pk2", "cauchy", "analyse"]
