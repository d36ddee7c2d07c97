"""Core-seconds of a real pw.x elastic stage, before and after the standard setting.

fcc Al (Al.pz-vbc.UPF, 20 Ry, smearing, fixed 8x8x8 mesh) is read from a CIF,
which leaves it in pymatgen's ``from_parameters`` orientation (cubic axes
not along x, y, z), and given to ``run_elastic`` twice:

* before: ``standard_setting: False`` and ``strain_set_by: n_cells`` (cells
  run in the CIF's orientation with the fewest-cells coupled set);
* after: the defaults (standard setting, set chosen by predicted k-points).

Core-seconds are the sum over cells of pw.x's own wall time x MPI ranks (1).
The lattice constant is first relaxed (vc-relax, standard cell) so the
unstrained cell passes the residual-stress check.

    .venv/bin/python bench/elastic_cost.py [--kpts 8] [--ecut 20]
"""

from __future__ import annotations

import argparse
import re
import tempfile
import time
from pathlib import Path

import numpy as np
from pymatgen.core import Lattice, Structure
from pymatgen.io.cif import CifParser, CifWriter

from aimmat.engines.qe.engine import QeEngine
from aimmat.engines.qe.pseudos import resolve_pseudos
from aimmat.manifest.qe_profile import QeProfile
from aimmat.runtime import slots
from aimmat.stages.elastic import run_elastic

CFG = {"magnitudes": [-0.01, -0.005, 0.005, 0.01], "strain_set": "auto", "symprec": 0.01, "fit_rms_max_gpa": 2.0,
       "pd_min_eigenvalue_gpa": 0.0, "residual_stress_max_gpa": 1.0}


def qe_profile(kpts: int, ecut: float) -> dict:
    d = QeProfile.model_validate({"kind": "qe", "preset": "fast", "ecutwfc_ry": ecut, "kpoints": [kpts] * 3,
                                  "walltime_s": 1200, "occupations": "smearing",
                                  "pseudo": {"family": "debian", "files": {"Al": "Al.pz-vbc.UPF"}}}).model_dump()
    d["pseudo_files"] = {el: str(p) for el, p in resolve_pseudos(d["pseudo"], d["pseudo"]["files"]).items()}
    return d


def fcc(a: float) -> Structure:
    return Structure(Lattice([[0, a / 2, a / 2], [a / 2, 0, a / 2], [a / 2, a / 2, 0]]), ["Al"], [[0, 0, 0]])


def pw_kpoints(directory: Path) -> int | None:
    m = re.search(r"number of k points=\s*(\d+)", (directory / "pw.out").read_text(errors="replace"))
    return int(m.group(1)) if m else None


def core_seconds(outputs: dict) -> float:
    return float(sum(c["engine"].get("pw_wall_s") or 0.0 for c in outputs["cells"]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kpts", type=int, default=8)
    ap.add_argument("--ecut", type=float, default=20.0)
    args = ap.parse_args()
    slots.init(1)  # one pw.x at a time, one rank: core-seconds = wall seconds
    prof = qe_profile(args.kpts, args.ecut)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        rel = QeEngine().run(fcc(4.0), prof, "relax", tmp / "relax")
        a = float(Structure.from_dict(rel.structure).lattice.a * np.sqrt(2))
        cif = CifParser.from_str(str(CifWriter(fcc(a)))).parse_structures(primitive=False)[0]
        print(f"fcc Al, a = {a:.4f} A (vc-relax {rel.extra.get('pw_wall_s', 0):.1f} s), mesh {[args.kpts] * 3}, "
              f"{args.ecut:g} Ry; CIF lattice rows:\n{np.round(cif.lattice.matrix, 4)}")
        rows = {}
        for name, extra in (("before", {"standard_setting": False, "strain_set_by": "n_cells"}), ("after", {})):
            t0 = time.perf_counter()
            out = run_elastic(cif, {**CFG, **extra}, prof, tmp / name)
            assert out.ok, out.message
            o = out.outputs
            c = np.array(o["tensor_voigt_gpa"])
            rows[name] = (core_seconds(o), c, o)
            ks = [pw_kpoints(tmp / name / c_["name"]) for c_ in o["cells"]]
            print(f"{name:6s}: {o['n_cells']:2d} strained cells ({o['strain_set']['kind']}), core-s {rows[name][0]:7.1f} "
                  f"(stage wall {time.perf_counter() - t0:.1f} s), C11 {c[0, 0]:7.2f} C12 {c[0, 1]:7.2f} "
                  f"C44 {c[3, 3]:7.2f} GPa, B_H {o['b_h_gpa']:.2f}, fit rms {o['fit_rms_gpa']:.3f}")
            if o["strain_set"].get("candidates"):
                for cand in o["strain_set"]["candidates"]:
                    print(f"        candidate {cand['name']:22s} cells {cand['n_cells']:2d} noise {cand['noise_ratio']:.2f} "
                          f"predicted k-points {cand['predicted_kpoints']:6d}{'  <- chosen' if cand['chosen'] else ''}")
            print(f"        pw.x k-points per cell (eq first): {ks}")
        (b, cb, _), (a_, ca, _) = rows["before"], rows["after"]
        dev = max(abs(ca[i, j] - cb[i, j]) / abs(cb[i, j]) for i, j in ((0, 0), (0, 1), (3, 3)))
        print(f"ratio after/before core-seconds: {a_ / b:.3f} (goal <= 0.5); largest C11/C12/C44 change {100 * dev:.2f}%")


if __name__ == "__main__":
    main()
