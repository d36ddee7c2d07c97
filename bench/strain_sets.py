"""How many DFT calls aimmat's elastic strain sets need, and what they cost in noise.

Per crystal system, one real structure from the shared elastic data set (a
made-up P1 cell for triclinic, which the set lacks): aimmat's number of
strained cells beside atomate2's symmetry-reduced counts and thermo_pw's,
and the standard deviation of the fitted constants under 0.5 kbar of
Gaussian stress noise, as the worst ratio over all C_ij of aimmat's set to
least squares over the 24-cell six-pure-state set (same magnitudes, same
symmetry-constrained fit). The ratio is computed exactly from the
least-squares covariance and checked by a Monte Carlo of --trials fits.

The second table prices each candidate set as pw.x would run it: every
crystal in spglib's standard orientation, a shared Monkhorst-Pack mesh from
--kspacing, irreducible k-points per strained cell counted with the
operations pw.x can find (aimmat.elastic.cost), and core-seconds estimated as
k-points x atoms^2 x --s-per-kpoint (default 0.0065 s: fcc Al, Debian LDA,
20 Ry, from bench/elastic_cost.py on this machine; an estimate, not a
measurement, for other crystals).

    .venv/bin/python bench/strain_sets.py [--data ../shared/data] [--trials 300] [--kspacing 0.25]
"""

from __future__ import annotations

import argparse
import gzip
import json
from pathlib import Path

import numpy as np
from pymatgen.core import Lattice, Structure

from aimmat.elastic.fit import cauchy, fit_tensor
from aimmat.elastic.strains import (
    DEFAULT_MAGNITUDES, PURE, choose_strain_set, deformation_from_lagrangian, lagrangian_from_deformation,
    matrix_to_voigt, noise_ratio, voigt_to_matrix,
)
from aimmat.elastic.symmetry import crystal_symmetry, project

ATOMATE2 = {"cubic": 6, "hexagonal": 18, "trigonal": 20, "tetragonal": 12, "orthorhombic": 18, "monoclinic": 20, "triclinic": 24}
THERMO_PW = {"cubic": 8, "hexagonal": 12, "trigonal": 12, "tetragonal": 16, "orthorhombic": 24, "monoclinic": 24, "triclinic": 24}
TARGET = {"cubic": 4, "hexagonal": 8, "trigonal": 8, "tetragonal": 8, "orthorhombic": 12, "monoclinic": 20, "triclinic": 24}
NOISE_GPA = 0.05


def structures(data: Path) -> dict[str, tuple[Structure, np.ndarray]]:
    d = json.load(gzip.open(data / "elastic_tensor_2015" / "elastic_tensor_2015.json.gz"))
    cols = d["columns"]
    out = {}
    for r in d["data"]:
        s = Structure.from_dict(r[cols.index("structure")])
        sym = crystal_symmetry(s)
        if sym.crystal_system not in out:
            v = r[cols.index("elastic_tensor_original")]
            out[sym.crystal_system] = (s, np.array(v["data"] if isinstance(v, dict) else v, dtype=float))
    if "triclinic" not in out:
        p1 = Structure(Lattice.from_parameters(4.1, 5.3, 6.2, 81, 97, 103), ["Si", "Ge"], [[0, 0, 0], [0.31, 0.42, 0.17]])
        rng = np.random.default_rng(0)
        a = rng.normal(size=(6, 6)) * 10
        out["triclinic"] = (p1, a @ a.T + np.eye(6) * 100)
    return out


def monte_carlo(c, types, basis, trials, rng) -> np.ndarray:
    defs = [deformation_from_lagrangian(voigt_to_matrix(m * t)) for t in types for m in DEFAULT_MAGNITUDES]
    clean = []
    for f in defs:
        s = c @ matrix_to_voigt(lagrangian_from_deformation(f))
        clean.append(cauchy(f, np.array([[s[0], s[5], s[4]], [s[5], s[1], s[3]], [s[4], s[3], s[2]]])))
    fits = []
    for _ in range(trials):
        noisy = []
        for sig in clean:
            n = rng.normal(0, NOISE_GPA, (3, 3))
            noisy.append(sig + (n + n.T) / 2)
        fits.append(fit_tensor(defs, noisy, np.zeros((3, 3)), basis)["tensor"])
    return np.std(fits, axis=0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[1] / ".." / "shared" / "data")
    ap.add_argument("--trials", type=int, default=300)
    ap.add_argument("--kspacing", type=float, default=0.25, help="k-spacing of the cost table (1/A, 2*pi included)")
    ap.add_argument("--s-per-kpoint", type=float, default=0.0065, help="core-seconds per k-point and atom^2 (calibration)")
    args = ap.parse_args()
    rng = np.random.default_rng(7)
    print(f"{'system':13s} {'consts':>6s} {'aimmat':>6s} {'atomate2':>8s} {'thermo_pw':>9s} {'target':>6s} "
          f"{'noise ratio':>11s} {'MC ratio':>8s}  example")
    ok = True
    order = ["cubic", "hexagonal", "trigonal", "tetragonal", "orthorhombic", "monoclinic", "triclinic"]
    found = structures(args.data)
    for system in order:
        s, c_orig = found[system]
        sym = crystal_symmetry(s)
        c = project(c_orig, sym.basis)
        sset = choose_strain_set(sym.basis)
        ratio = noise_ratio(sset.types, sym.basis)
        mine = monte_carlo(c, sset.types, sym.basis, args.trials, rng)
        ref = monte_carlo(c, PURE, sym.basis, args.trials, rng)
        mask = ref > 1e-3
        mc = float((mine[mask] / ref[mask]).max())
        hold = sset.n_cells <= TARGET[system] and ratio <= 1.5 + 1e-9
        ok &= hold
        print(f"{system:13s} {sym.n_constants:6d} {sset.n_cells:6d} {ATOMATE2[system]:8d} {THERMO_PW[system]:9d} "
              f"{TARGET[system]:6d} {ratio:11.2f} {mc:8.2f}  {s.composition.reduced_formula} ({sym.spacegroup})")
    print(f"targets (calls <= target, noise ratio <= 1.5): {'HOLD' if ok else 'FAIL'}")
    print()
    cost_table(found, order, args.kspacing, args.s_per_kpoint)


def cost_table(found, order, kspacing: float, s_per_k: float) -> None:
    """Calls, k-points and estimated core-seconds of each candidate set, per crystal system."""
    from aimmat.elastic.cost import choose_by_cost
    from aimmat.engines.qe.inputs import kmesh
    from aimmat.engines.setting import standard_orientation

    print(f"cost at kspacing {kspacing}/A (standard orientation; core-s = k-points x atoms^2 x {s_per_k} s)")
    print(f"{'system':13s} {'set':22s} {'cells':>5s} {'noise':>5s} {'k-points':>9s} {'est. core-s':>11s}  chosen")
    for system in order:
        s, _ = found[system]
        std, _, _ = standard_orientation(s)
        sym = crystal_symmetry(std)
        mesh = kmesh(std, {"kspacing_per_a": kspacing})
        _, rows = choose_by_cost(std, sym.basis, choose_strain_set(sym.basis), mesh, DEFAULT_MAGNITUDES)
        for r in rows:
            est = r["predicted_kpoints"] * len(std) ** 2 * s_per_k
            print(f"{system:13s} {r['name']:22s} {r['n_cells']:5d} {r['noise_ratio']:5.2f} {r['predicted_kpoints']:9d} "
                  f"{est:11.1f}  {'*' if r['chosen'] else ''}   mesh {list(mesh)}, {len(std)} atoms")


if __name__ == "__main__":
    main()
