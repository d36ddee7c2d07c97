"""How far a stress is from its converged value when the SCF stops at a threshold.

The converge stage judges stress steps of 0.05-0.5 kbar; the SCF behind each
point must be converged well below that. A stress is first order in the
density error (the energy only second order), so it can be off by far more
than the threshold suggests. For ferromagnetic fcc Ni (pslibrary 0.1 PBEsol
ultrasoft from Debian's folder, a = 3.46 A, 90 Ry, ecutrho 720 Ry, MV 0.02 Ry)
each threshold is run twice on one mesh: from the atomic superposition
(``starting_magnetization`` 0.2) and from the converged density of a coarser
mesh (``startingpot='file'``), which changes only where the SCF starts. The
baseline is the same cell at 1e-14 in the same run. Printed per threshold:
both pressures, their difference from the baseline, the SCF iterations, and
pw.x's last estimated accuracy.

    .venv/bin/python bench/scf_stress_noise.py [--mesh 14] [--start-mesh 8] [--ecut 90]

Measured figures are in the README (section "Converge stage").
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from converge_metals import default_profile  # noqa: E402  (the converge benches' profile on Debian's folder)

from aimmat.engines.qe.execute import pw_env  # noqa: E402
from aimmat.engines.qe.parse import parse_pw_output  # noqa: E402

PSEUDO = "Ni.pbesol-n-rrkjus_psl.0.1.UPF"
A = 3.46  # its ferromagnetic equilibrium (bench/converge_metals.py)

INPUT = """&CONTROL
 calculation='scf', prefix='pw', outdir='./out', pseudo_dir='{pseudo_dir}', tstress=.true., verbosity='high'
/
&SYSTEM
 ibrav=0, nat=1, ntyp=1, ecutwfc={ecut}, ecutrho={rho}, occupations='smearing', smearing='mv', degauss=0.02,
 nspin=2, starting_magnetization(1)=0.2
/
&ELECTRONS
 conv_thr={thr:.0e}, mixing_beta=0.7, electron_maxstep=200{start}
/
ATOMIC_SPECIES
Ni 58.693 {pseudo}
CELL_PARAMETERS angstrom
0 {h} {h}
{h} 0 {h}
{h} {h} 0
ATOMIC_POSITIONS crystal
Ni 0 0 0
K_POINTS automatic
{n} {n} {n} 0 0 0
"""


def run(folder: Path, args, thr: float, mesh: int, density_from: Path | None = None) -> dict:
    """One pw.x SCF in ``folder``; started from ``density_from``'s charge density when given."""
    folder.mkdir(parents=True)
    if density_from is not None:
        save = folder / "out" / "pw.save"
        save.mkdir(parents=True)
        for f in (density_from / "out" / "pw.save").iterdir():
            if f.name.endswith((".dat", ".xml", ".UPF")) and not f.name.startswith("wfc"):
                shutil.copy(f, save / f.name)
    pseudo = Path(default_profile({"Ni": PSEUDO})["pseudo_files"]["Ni"])
    text = INPUT.format(pseudo_dir=pseudo.parent, pseudo=pseudo.name, ecut=args.ecut, rho=8 * args.ecut, thr=thr, h=A / 2,
                        n=mesh, start=", startingpot='file'" if density_from is not None else "")
    (folder / "pw.in").write_text(text)
    out = subprocess.run(["pw.x", "-in", "pw.in"], cwd=folder, capture_output=True, text=True, env=pw_env()).stdout
    (folder / "pw.out").write_text(out)
    parsed = parse_pw_output(out)  # pressure and completion as every stage reads them; iterations and accuracy below
    it = re.findall(r"convergence has been achieved in\s+(\d+)", out)
    acc = re.findall(r"estimated scf accuracy\s+<\s+([\d.Ee+-]+)", out)
    if not (parsed.job_done and parsed.pressures_kbar and it):
        raise SystemExit(f"pw.x did not finish in {folder}: see {folder / 'pw.out'}")
    return {"pressure_kbar": parsed.pressures_kbar[-1], "iterations": int(it[-1]), "accuracy_ry": float(acc[-1]) if acc else None}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mesh", type=int, default=14)
    ap.add_argument("--start-mesh", type=int, default=8, help="the coarser mesh whose density the second run starts from")
    ap.add_argument("--ecut", type=float, default=90.0)
    ap.add_argument("--thresholds", default="1e-8,1e-9,1e-10,1e-11,1e-12")
    args = ap.parse_args()
    if shutil.which("pw.x") is None:
        raise SystemExit("pw.x not found")
    thresholds = [float(t) for t in args.thresholds.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        with ThreadPoolExecutor(max_workers=2) as pool:
            base_f = pool.submit(run, root / "baseline", args, 1e-14, args.mesh)
            run(root / "coarse", args, 1e-14, args.start_mesh)
            base = base_f.result()
            print(f"fcc Ni, {args.mesh}^3, {args.ecut:g} Ry: baseline (1e-14 Ry) P = {base['pressure_kbar']:.2f} kbar, "
                  f"{base['iterations']} iterations")
            print(f"{'conv_thr Ry':>11} {'P scratch':>10} {'P from file':>12} {'dP scratch':>11} {'dP file':>8} "
                  f"{'iterations':>10} {'est. accuracy':>15}")
            for thr in thresholds:
                a, b = pool.map(lambda job: run(*job), [(root / f"s{thr:.0e}", args, thr, args.mesh),
                                                        (root / f"f{thr:.0e}", args, thr, args.mesh, root / "coarse")])
                d = [r["pressure_kbar"] - base["pressure_kbar"] for r in (a, b)]
                print(f"{thr:11.0e} {a['pressure_kbar']:10.2f} {b['pressure_kbar']:12.2f} {d[0]:+11.2f} {d[1]:+8.2f} "
                      f"{a['iterations']:>4} / {b['iterations']:<3} {a['accuracy_ry']:7.1e} / {b['accuracy_ry']:.1e}", flush=True)


if __name__ == "__main__":
    main()
