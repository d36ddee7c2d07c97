"""What the QE presets converge, measured on stress.

For each test crystal, a cell sheared by eps_xy = 1% is computed at the
k-spacing of each preset and at a dense reference spacing; printed is the
error of the shear stress sigma_xy (GPa) and of the normal stress against the
reference, and the error as a fraction of the crystal's C44 (sigma_xy /
(2 eps_xy) at the reference). Metals use the preset's metal spacing.

    .venv/bin/python bench/qe_presets.py [--reference-spacing 0.08]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
from ase.build import bulk
from pymatgen.core import Lattice
from pymatgen.io.ase import AseAtomsAdaptor

from aimmat.engines.qe.engine import QeEngine
from aimmat.manifest.qe_profile import QeProfile, presets

CRYSTALS = {
    # name: (builder, pseudo files, ecutwfc, metal?)
    "Si (PBE RRKJ, 30 Ry)": (lambda: bulk("Si", "diamond", a=5.47), {"Si": "Si.pbe-rrkj.UPF"}, 30, False),
    "Al (LDA VBC, 20 Ry)": (lambda: bulk("Al", "fcc", a=3.98), {"Al": "Al.pz-vbc.UPF"}, 20, True),
}


def sheared(atoms, eps=0.01):
    s = AseAtomsAdaptor.get_structure(atoms)
    f = np.eye(3)
    f[0, 1] = f[1, 0] = eps
    s.lattice = Lattice(s.lattice.matrix @ f.T)
    return s


def stress(structure, files, ecut, spacing, preset, tmp: Path) -> np.ndarray:
    prof = QeProfile.model_validate({"kind": "qe", "preset": preset, "pseudo": {"family": "debian", "files": files},
                                     "ecutwfc_ry": ecut, "kspacing_per_a": spacing}).model_dump()
    res = QeEngine().run(structure, prof, "static", tmp / f"{preset}-{spacing}")
    if res.failure_code:
        sys.exit(f"FAIL {res.failure_code}: {res.message}")
    return np.asarray(res.stress_gpa)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reference-spacing", type=float, default=0.08)
    args = ap.parse_args()
    if shutil.which("pw.x") is None:
        sys.exit("pw.x not found")
    table = presets()
    with tempfile.TemporaryDirectory() as tmp:
        for name, (build, files, ecut, metal) in CRYSTALS.items():
            s = sheared(build())
            ref = stress(s, files, ecut, args.reference_spacing, "stringent", Path(tmp))
            c44 = ref[0, 1] / 0.02
            print(f"{name}: reference spacing {args.reference_spacing}/A, sigma_xy {ref[0, 1]:.3f} GPa (C44 ~ {c44:.1f} GPa)")
            for preset, p in table.items():
                spacing = p["kspacing_metal_per_a"] if metal else p["kspacing_per_a"]
                got = stress(s, files, ecut, spacing, preset, Path(tmp))
                d_xy, d_xx = abs(got[0, 1] - ref[0, 1]), abs(got[0, 0] - ref[0, 0])
                print(f"  {preset:9s} spacing {spacing:.2f}/A: |d sigma_xy| {d_xy:.3f} GPa ({100 * d_xy / abs(ref[0, 1]):.1f}% of it, "
                      f"{100 * d_xy / 0.02 / abs(c44):.1f}% of C44), |d sigma_xx| {d_xx:.3f} GPa")


if __name__ == "__main__":
    main()
