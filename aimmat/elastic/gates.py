"""Gates on a fitted tensor: each recorded as pass/fail with its number.

Born criteria follow Mouhat & Coudert, Phys. Rev. B 90, 224104 (2014), for
the tensor in the IEEE standard frame of its crystal system; for every
system they are equivalent to positive definiteness, which is also gated
on its own (smallest eigenvalue of the symmetrized 6x6).
"""

from __future__ import annotations

import numpy as np


def born_criteria(c: np.ndarray, system: str, laue: str = "") -> dict[str, bool]:
    """Named stability conditions; ``c`` in the IEEE frame (GPa)."""
    c = 0.5 * (c + c.T)
    C = lambda i, j: c[i - 1, j - 1]  # noqa: E731 - 1-based like the paper
    if system == "cubic":
        return {"C11-C12>0": C(1, 1) - C(1, 2) > 0, "C11+2C12>0": C(1, 1) + 2 * C(1, 2) > 0, "C44>0": C(4, 4) > 0}
    if system in ("hexagonal", "tetragonal"):
        out = {
            "C11>|C12|": C(1, 1) > abs(C(1, 2)),
            "2C13^2<C33(C11+C12)": 2 * C(1, 3) ** 2 < C(3, 3) * (C(1, 1) + C(1, 2)),
            "C44>0": C(4, 4) > 0,
            "C66>0": C(6, 6) > 0,
        }
        if system == "tetragonal" and laue == "4/m":
            out["2C16^2<C66(C11-C12)"] = 2 * C(1, 6) ** 2 < C(6, 6) * (C(1, 1) - C(1, 2))
        return out
    if system == "trigonal":
        out = {
            "C11>|C12|": C(1, 1) > abs(C(1, 2)),
            "C44>0": C(4, 4) > 0,
            "C13^2<C33(C11+C12)/2": C(1, 3) ** 2 < 0.5 * C(3, 3) * (C(1, 1) + C(1, 2)),
        }
        c15 = C(1, 5) if laue == "-3" else 0.0
        out["C14^2+C15^2<C44(C11-C12)/2"] = C(1, 4) ** 2 + c15**2 < 0.5 * C(4, 4) * (C(1, 1) - C(1, 2))
        return out
    # orthorhombic, monoclinic, triclinic: leading principal minors (Sylvester)
    return {f"minor{k}>0": float(np.linalg.det(c[:k, :k])) > 0 for k in range(1, 7)}


def gates(c: np.ndarray, fit_rms_gpa: float, moduli: dict, c_ieee: np.ndarray | None, system: str, laue: str,
          symmetry_residual: float, fit_rms_max_gpa: float = 2.0, pd_min_gpa: float = 0.0, sym_tol: float = 1e-6) -> dict:
    sym = 0.5 * (c + c.T)
    eig = float(np.linalg.eigvalsh(sym).min())
    born = born_criteria(c_ieee if c_ieee is not None else c, system, laue)
    tol = 1e-9 * max(abs(moduli["k_voigt_gpa"]), abs(moduli["g_voigt_gpa"]), 1.0)
    out = {
        "pass_fit_rms": {"pass": fit_rms_gpa < fit_rms_max_gpa, "value": fit_rms_gpa, "threshold": fit_rms_max_gpa},
        "pass_pd": {"pass": eig > pd_min_gpa, "value": eig, "threshold": pd_min_gpa},
        "born": {"pass": all(born.values()), "criteria": {k: bool(v) for k, v in born.items()}, "system": system},
        "voigt_ge_reuss": {
            "pass": moduli["k_voigt_gpa"] >= moduli["k_reuss_gpa"] - tol and moduli["g_voigt_gpa"] >= moduli["g_reuss_gpa"] - tol,
            "value": [moduli["k_voigt_gpa"] - moduli["k_reuss_gpa"], moduli["g_voigt_gpa"] - moduli["g_reuss_gpa"]],
        },
        "symmetry": {"pass": symmetry_residual <= sym_tol, "value": symmetry_residual, "threshold": sym_tol},
    }
    out["pass_both"] = {"pass": out["pass_fit_rms"]["pass"] and out["pass_pd"]["pass"]}
    return out
