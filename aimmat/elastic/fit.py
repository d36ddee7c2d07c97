"""First version of the elastic analysis (the elastic-tensor issue replaces
the strain sets and the fit; callers use only ``strain_set`` and
``fit_elastic``).

Conventions: stress in GPa, tensile positive; strain is the Green-Lagrange
strain of the applied deformation (pymatgen ``Strain.from_deformation``);
Voigt vectors use engineering shear strain (2 * eps_yz ...), so that
``sigma_voigt = C @ eps_voigt``.
"""

from __future__ import annotations

import numpy as np
from pymatgen.analysis.elasticity import ElasticTensor
from pymatgen.analysis.elasticity.strain import Deformation, DeformedStructureSet, Strain
from pymatgen.analysis.elasticity.stress import Stress


def strain_set(structure, norm_strains, shear_strains) -> list[np.ndarray]:
    """Deformation gradients (3x3): the six independent strain states, each at
    every magnitude (6 x len(magnitudes) cells)."""
    dss = DeformedStructureSet(structure, norm_strains=list(norm_strains), shear_strains=list(shear_strains), symmetry=False)
    return [np.asarray(d) for d in dss.deformations]


def derived_moduli(tensor: ElasticTensor) -> dict:
    """Voigt-Reuss-Hill moduli (GPa) and the Hill Young's modulus and Poisson ratio.

    .. math:: E_H = 9 B_H G_H / (3 B_H + G_H), \\quad \\nu = (3 B_H - 2 G_H) / (2 (3 B_H + G_H))
    """
    b, g = float(tensor.k_vrh), float(tensor.g_vrh)
    return {
        "k_voigt_gpa": float(tensor.k_voigt),
        "k_reuss_gpa": float(tensor.k_reuss),
        "g_voigt_gpa": float(tensor.g_voigt),
        "g_reuss_gpa": float(tensor.g_reuss),
        "b_h_gpa": b,
        "g_h_gpa": g,
        "e_h_gpa": float(tensor.y_mod) / 1e9,  # pymatgen returns Pa for a GPa tensor
        "poisson_h": float(tensor.homogeneous_poisson),
        "universal_anisotropy": float(tensor.universal_anisotropy),
    }


def fit_elastic(deformations, stresses_gpa, eq_stress_gpa) -> dict:
    """Fit the 6x6 tensor (GPa) from strained-cell stresses.

    Parameters
    ----------
    deformations : (N, 3, 3) deformation gradients
    stresses_gpa : (N, 3, 3) stresses of the strained cells, GPa, tensile positive
    eq_stress_gpa : (3, 3) stress of the unstrained cell

    Returns the tensor, its fit residual RMS (GPa, over all six stress
    components of all cells), the eigenvalues of its symmetric part, the
    positive-definiteness flag and the derived moduli.
    """
    strains = [Strain.from_deformation(Deformation(d)) for d in deformations]
    stresses = [Stress(np.asarray(s)) for s in stresses_gpa]
    tensor = ElasticTensor.from_independent_strains(strains, stresses, eq_stress=Stress(np.asarray(eq_stress_gpa)))
    c = np.asarray(tensor.voigt)
    eps = np.array([s.voigt for s in strains])
    sig = np.array([s.voigt for s in stresses]) - Stress(np.asarray(eq_stress_gpa)).voigt
    rms = float(np.sqrt(np.mean((eps @ c.T - sig) ** 2)))
    sym = 0.5 * (c + c.T)
    eig = np.linalg.eigvalsh(sym)
    return {
        "tensor_voigt_gpa": c.tolist(),
        "fit_rms_gpa": rms,
        "eigenvalues_gpa": eig.tolist(),
        "min_eigenvalue_gpa": float(eig.min()),
        "pass_pd": bool(eig.min() > 0),
        **derived_moduli(tensor),
    }
