"""Derived moduli: Voigt, Reuss and Hill bulk and shear moduli from pymatgen,
and the Hill Young's modulus and Poisson ratio."""

from __future__ import annotations

import numpy as np
from pymatgen.analysis.elasticity import ElasticTensor


def hill_young_poisson(b_h: float, g_h: float) -> tuple[float, float]:
    """Isotropic Young's modulus and Poisson ratio from bulk and shear moduli.

    .. math:: E = \\frac{9BG}{3B + G}, \\qquad \\nu = \\frac{3B - 2G}{2(3B + G)}
    """
    return 9 * b_h * g_h / (3 * b_h + g_h), (3 * b_h - 2 * g_h) / (2 * (3 * b_h + g_h))


def derived_moduli(c_voigt: np.ndarray) -> dict:
    """VRH moduli (GPa) of a 6x6 Voigt tensor in GPa, through pymatgen."""
    t = ElasticTensor.from_voigt(np.asarray(c_voigt))
    b, g = float(t.k_vrh), float(t.g_vrh)
    e, nu = hill_young_poisson(b, g)
    return {
        "k_voigt_gpa": float(t.k_voigt),
        "k_reuss_gpa": float(t.k_reuss),
        "g_voigt_gpa": float(t.g_voigt),
        "g_reuss_gpa": float(t.g_reuss),
        "b_h_gpa": b,
        "g_h_gpa": g,
        "e_h_gpa": e,
        "poisson_h": nu,
        "universal_anisotropy": float(t.universal_anisotropy),
    }
