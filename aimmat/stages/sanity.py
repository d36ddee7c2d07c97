"""Physical sanity gate on an engine result before it is accepted.

A result that every engine parser read as finite can still be nonsense: atoms
collapsed onto each other, a positive DFT energy of thousands of Ry, a
pressure in the TPa. ``check_result`` returns the first failed check as a
``Violation`` (failure code ``unphysical_result``); such a result is not to be
retried unchanged and never enters a fit.

Default limits and why (``SanityLimits``):

- ``distance_factor`` 0.5: a pair closer than 0.5 x (r_cov a + r_cov b)
  (Cordero covalent radii, ``ase.data``) fails. Ambient bonds sit at ~0.9-1.2x;
  the most compressed real cases (alkali metals at 100-200 GPa, whose covalent
  radii are large) reach ~0.6-0.7x; collapsed atoms from a broken relaxation
  sit well below 0.5x.
- QE (pseudopotential DFT) energy per atom in (E_TF, 0): valence total energies
  of bound systems are negative, and no valence-only energy can lie below the
  all-electron energy of its atoms, bounded here by Thomas-Fermi
  E_TF(Z) = -0.7687 Z^(7/3) Ha per atom, which overbinds real atoms (Si: -363
  vs -289 Ha; U: -29.4k vs -28.0k Ha), averaged over the composition. Real
  pw.x energies are -0.1 to -5 keV/atom, far inside.
- CHGNet (-20, +5) eV/atom: it predicts Materials Project compatible energies,
  whose elements and compounds span about -15 (W, f elements) to ~0 eV/atom.
- EMT (-5, +5) eV/atom: ASE EMT energies are relative to each element's
  equilibrium fcc crystal; defects and strains cost at most ~1-2 eV/atom.
- |P| and max |sigma_ij| 500 GPa: beyond the Earth's core (364 GPa) and the
  static diamond-anvil record; a Ry/bohr^3-for-GPa slip (x14710) or collapsed
  cell overshoots it.
- max |F| 50 eV/A (~2 Ry/bohr): relaxed results have < 0.1, strained or
  unrelaxed static cells a few eV/A; 50 means atoms deep in the repulsive wall.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from ase.data import covalent_radii
from pymatgen.core import Structure

from aimmat.engines.base import EngineResult

FAILURE_CODE = "unphysical_result"
HARTREE_EV = 27.211386245988
TF_HA = 0.7687  # Thomas-Fermi atomic energy -0.7687 Z^(7/3) Ha


def _default_energy_bounds() -> dict[str, tuple[float | None, float | None]]:
    return {"qe": (None, 0.0), "chgnet": (-20.0, 5.0), "emt": (-5.0, 5.0)}  # None: Thomas-Fermi floor


@dataclass(frozen=True)
class SanityLimits:
    """Thresholds of the sanity gate (see the module docstring for the defaults).

    Attributes
    ----------
    distance_factor : float
        A pair fails below this fraction of the sum of covalent radii.
    energy_per_atom_ev : dict
        Engine kind -> (lower, upper) bound in eV/atom; None is no bound, or for
        kinds in ``thomas_fermi_floor`` the composition's Thomas-Fermi energy.
        Kinds absent here get no energy check.
    thomas_fermi_floor : tuple of str
        Engine kinds (all-electron-referenced DFT) whose missing lower bound is
        the composition-averaged Thomas-Fermi atomic energy.
    max_pressure_gpa, max_stress_gpa : float
        Bounds on |P| = |tr(sigma)|/3 and on every |sigma_ij|.
    max_force_ev_per_a : float
        Bound on the largest per-atom force norm.
    min_volume_a3_per_atom : float
        Below this the cell is degenerate (dense H at 500 GPa has ~1 A^3/atom).
    """

    distance_factor: float = 0.5
    energy_per_atom_ev: dict[str, tuple[float | None, float | None]] = field(default_factory=_default_energy_bounds)
    thomas_fermi_floor: tuple[str, ...] = ("qe",)
    max_pressure_gpa: float = 500.0
    max_stress_gpa: float = 500.0
    max_force_ev_per_a: float = 50.0
    min_volume_a3_per_atom: float = 0.1


@dataclass
class Violation:
    """The first failed check: its name, the figure, the threshold and a one-line message."""

    check: str
    value: float | None
    threshold: float | None
    unit: str
    message: str
    failure_code: str = FAILURE_CODE

    def to_json(self) -> dict:
        return asdict(self)


def thomas_fermi_energy_ev(structure: Structure) -> float:
    """Thomas-Fermi all-electron energy per atom (eV) averaged over the sites: a floor for valence energies."""
    return -TF_HA * HARTREE_EV * float(np.mean([site.specie.Z ** (7 / 3) for site in structure]))


def _closest_pair(structure: Structure, factor: float) -> tuple[float, int, int, float] | None:
    """(ratio d/(r_i + r_j), i, j, d) of the pair with the smallest ratio within reach, or None."""
    radii = np.array([covalent_radii[site.specie.Z] for site in structure])
    cutoff = max(factor * 2.0 * radii.max() * 1.01, 0.1)
    ci, pi, _, dist = structure.get_neighbor_list(r=cutoff)
    if not len(dist):
        return None
    ratio = dist / (radii[ci] + radii[pi])
    k = int(np.argmin(ratio))
    return float(ratio[k]), int(ci[k]), int(pi[k]), float(dist[k])


def check_values(structure: Structure | dict, energy_ev: float | None, forces_ev_per_a: Any, stress_gpa: Any,
                 engine_kind: str, limits: SanityLimits | None = None) -> Violation | None:
    """Check one result given as its parts; see ``check_result``.

    Forces or stress given as None are not checked (the engine did not print them)."""
    lim = limits or SanityLimits()
    if structure is None or energy_ev is None:
        what = "structure" if structure is None else "energy"
        return Violation("missing", None, None, "", f"no {what} in an accepted result")
    sdict = structure.as_dict() if isinstance(structure, Structure) else structure
    arrays = {"energy": np.asarray([energy_ev], float),
              "lattice": np.asarray(sdict["lattice"]["matrix"], float),
              "positions": np.asarray([site["abc"] for site in sdict["sites"]], float)}
    if forces_ev_per_a is not None:
        arrays["forces"] = np.asarray(forces_ev_per_a, float)
    if stress_gpa is not None:
        arrays["stress"] = np.asarray(stress_gpa, float)
    for name, arr in arrays.items():
        bad = ~np.isfinite(arr)
        if bad.any():
            return Violation("finite", float(arr[bad].flat[0]), None, "",
                             f"{name} has {int(bad.sum())} non-finite value(s) ({arr[bad].flat[0]})")
    s = structure if isinstance(structure, Structure) else Structure.from_dict(sdict)
    n = len(s)
    vol = abs(float(np.linalg.det(arrays["lattice"]))) / n
    if vol < lim.min_volume_a3_per_atom:
        return Violation("cell_volume", vol, lim.min_volume_a3_per_atom, "A^3/atom",
                         f"volume {vol:.4g} A^3/atom < {lim.min_volume_a3_per_atom} A^3/atom: degenerate cell")
    pair = _closest_pair(s, lim.distance_factor)
    if pair is not None and pair[0] < lim.distance_factor:
        _, i, j, d = pair
        a, b = s[i].specie.symbol, s[j].specie.symbol
        thr = lim.distance_factor * (covalent_radii[s[i].specie.Z] + covalent_radii[s[j].specie.Z])
        return Violation("min_distance", d, thr, "A",
                         f"min distance {d:.3g} A between {a}{i} and {b}{j} < {lim.distance_factor} x "
                         f"(r_cov {a} + r_cov {b}) = {thr:.3g} A")
    if engine_kind in lim.energy_per_atom_ev:
        lo, hi = lim.energy_per_atom_ev[engine_kind]
        if lo is None and engine_kind in lim.thomas_fermi_floor:
            lo = thomas_fermi_energy_ev(s)
        e, total = float(energy_ev) / n, f"(total {float(energy_ev):.6g} eV over {n} atoms)"
        if hi is not None and e > hi:
            return Violation("energy_per_atom", e, hi, "eV/atom",
                             f"energy {e:.6g} eV/atom {total} > {hi:.6g} eV/atom bound for {engine_kind}")
        if lo is not None and e < lo:
            return Violation("energy_per_atom", e, lo, "eV/atom",
                             f"energy {e:.6g} eV/atom {total} < {lo:.6g} eV/atom bound for {engine_kind}")
    if "stress" in arrays:
        sig = arrays["stress"].reshape(3, 3)
        p = float(-np.trace(sig) / 3.0)
        if abs(p) > lim.max_pressure_gpa:
            return Violation("pressure", p, lim.max_pressure_gpa, "GPa",
                             f"pressure {p:.4g} GPa, |P| > {lim.max_pressure_gpa} GPa")
        k = int(np.argmax(np.abs(sig)))
        if abs(sig.flat[k]) > lim.max_stress_gpa:
            return Violation("stress", float(sig.flat[k]), lim.max_stress_gpa, "GPa",
                             f"stress sigma_{k // 3 + 1}{k % 3 + 1} {sig.flat[k]:.4g} GPa, "
                             f"|sigma_ij| > {lim.max_stress_gpa} GPa")
    if "forces" in arrays and arrays["forces"].size:
        norms = np.linalg.norm(arrays["forces"].reshape(-1, 3), axis=1)
        k = int(np.argmax(norms))
        if norms[k] > lim.max_force_ev_per_a:
            return Violation("force", float(norms[k]), lim.max_force_ev_per_a, "eV/A",
                             f"force {norms[k]:.4g} eV/A on {s[k].specie.symbol}{k} > {lim.max_force_ev_per_a} eV/A")
    return None


def check_result(result: EngineResult, engine_kind: str, limits: SanityLimits | None = None) -> Violation | None:
    """Physical sanity of one engine result.

    Parameters
    ----------
    result : EngineResult
        Energy eV, forces eV/A, stress GPa (tensile positive), structure as a
        pymatgen ``Structure.as_dict()``.
    engine_kind : str
        The profile's ``kind`` ("qe", "chgnet", "emt"): selects the energy bounds.
    limits : SanityLimits, optional
        Thresholds; the defaults when None.

    Returns
    -------
    Violation or None
        The first failed check in the order missing, finite, cell_volume,
        min_distance, energy_per_atom, pressure, stress, force; None if all pass.
    """
    return check_values(result.structure, result.energy_ev, result.forces_ev_per_a, result.stress_gpa,
                        engine_kind, limits)
