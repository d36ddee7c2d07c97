"""The converge stage on metals with the default profile: is C44 converged?

For fcc Al (Debian's LDA VBC) and ferromagnetic fcc Ni (pslibrary 0.1 PBEsol
ultrasoft from Debian's folder, spin from ``spin: auto``) the converge stage runs with its
default tolerances on the default qe profile, then C44 is probed at the
chosen settings and on a mesh twice as dense (twice the k-points: the
k-spacing divided by 2^(1/3), same cutoff and smearing; twice per direction,
88^3 for Al, is more than pw.x 6.7's 40,000 k-points for the sheared cell
after symmetry): C44 = (sigma_xy(sheared) - sigma_xy(unstrained)) /
gamma_xy on the cubic axes (the primitive cells below keep them). Printed:
the ladder table, the choice and its reasons, both C44 values and their
ratio, and the wall time of each part.

    .venv/bin/python bench/converge_metals.py [al] [ni] [--json out.json]

Measured figures are in the README (section "Converge stage").
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

from pymatgen.core import Lattice, Structure

from aimmat.engines.qe.pseudos import resolve_pseudos
from aimmat.manifest.qe_profile import QeProfile
from aimmat.manifest.stage_configs import ConvergeStage
from aimmat.stages.base import EARLIER_ATTEMPTS
from aimmat.stages.converge import _Failed, _Ladder, run_converge


def fcc(symbol: str, a: float) -> Structure:
    """Primitive fcc cell with the cubic axes as Cartesian axes (xy shear probes C44)."""
    return Structure(Lattice([[0, a / 2, a / 2], [a / 2, 0, a / 2], [a / 2, a / 2, 0]]), [symbol], [[0, 0, 0]])


METALS = {
    # name: (structure, pseudo files, profile overrides); a at the functional's equilibrium (no residual pressure)
    "al": (fcc("Al", 3.98), {"Al": "Al.pz-vbc.UPF"}, {}),
    # Debian's Ni.pbe-nd-rrkjus (the family's PBE pick) is not used: its pressure oscillates by 2-4 kbar with
    # the cutoff up to 100 Ry (README), so the 0.5 kbar ladder ends not_converged_settings with it. pslibrary's
    # 3d-only ultrasoft PBEsol file (10 electrons, suggested 41 / 236 Ry) costs a fraction of the 18-electron
    # PAW one (75 / 476 Ry); a = 3.46 A is its ferromagnetic equilibrium (13.6 kbar at 3.45 A, 14^3, 45 Ry).
    "ni": (fcc("Ni", 3.46), {"Ni": "Ni.pbesol-n-rrkjus_psl.0.1.UPF"}, {"spin": "auto"}),
}




def two_site(symbol_a: str, symbol_b: str, a: float, frac: float) -> Structure:
    """Primitive fcc cell (cubic axes as above) with a second site at (frac, frac, frac): diamond 1/4, rock salt 1/2."""
    cell = fcc(symbol_a, a)
    cell.append(symbol_b, [frac] * 3)
    return cell


# gapped cubic crystals for the insulator k-ladder start (bench/converge_kstart.py): Debian's LDA files of the
# campaign bench's palette, lattice constants near their LDA equilibrium
INSULATORS = {
    "si": (two_site("Si", "Si", 5.40, 0.25), {"Si": "Si.pz-vbc.UPF"}, {}),
    "mgo": (two_site("Mg", "O", 4.17, 0.5), {"Mg": "Mg.pz-n-vbc.UPF", "O": "O.pz-rrkjus.UPF"}, {}),
}
CRYSTALS = {**METALS, **INSULATORS}

DENSER = 2 ** (1 / 3)  # spacing divisor: twice the k-points


def default_profile(files: dict, **over) -> dict:
    """The default qe profile on Debian's family, pseudopotentials resolved as the executor passes them."""
    prof = QeProfile.model_validate({"kind": "qe", "pseudo": {"family": "debian", "files": files}, **over}).model_dump()
    prof["pseudo_files"] = {k: str(v) for k, v in resolve_pseudos(prof["pseudo"], list(files)).items()}
    return prof


def c44_gpa(row: dict, gamma: float) -> float:
    """C44 from one ladder point: sheared minus unstrained xy stress over the engineering shear."""
    return (row["shear_stress_gpa"] - row["stress_gpa"][0][1]) / gamma


def converge_and_check(name: str, directory: Path, ranks: int = 1, **cfg_over) -> dict:
    """Run the converge stage with default settings on ``name``, then C44 at the choice and at a mesh twice as dense.

    ``ranks`` > 1 runs each pw.x with that many MPI ranks as k-point pools, one run at a time (resources only:
    the physics is the default profile's). A ``converge`` folder already in ``directory`` (a stopped run kept with
    ``--keep``) is moved aside and read as an earlier attempt: its finished runs are not computed again."""
    structure, files, over = CRYSTALS[name]
    if ranks > 1:  # a 1-atom metal's cost is its k-points: pools scale them (pw.x's default splits plane waves)
        over = {**over, "mpi_ranks": ranks, "pw_command": f"pw.x -nk {ranks}"}
    prof = default_profile(files, **over)
    cfg = ConvergeStage(profile="qe", **cfg_over).model_dump()
    if (directory / "converge").is_dir():
        earlier = directory / f"converge.earlier-{time.strftime('%Y%m%dT%H%M%S')}"
        (directory / "converge").rename(earlier)
        cfg[EARLIER_ATTEMPTS] = [str(p) for p in sorted(directory.glob("converge.earlier-*"), reverse=True)]
    t0 = time.perf_counter()
    out = run_converge(structure, cfg, prof, directory / "converge")
    conv_s = time.perf_counter() - t0
    res = {"metal": name, "ok": out.ok, "failure": out.failure_code, "message": out.message, "why": out.outputs.get("why"),
           "table": out.outputs.get("table"), "converge_wall_s": round(conv_s, 1)}
    if not out.ok:
        return res
    ch = out.outputs["chosen"]
    res["chosen"] = ch
    # at the choice: the ladder's own point (the same two runs), not a rerun
    row = next(r for r in out.outputs["table"] if r["ladder"] == "kspacing" and r["kspacing_per_a"] == ch["kspacing_per_a"]
               and r["degauss_ry"] == ch["degauss_ry"] and r["ecutwfc_ry"] == ch["ecutwfc_ry"])
    # twice the k-points: one more point computed as the ladder computes its points
    try:
        dense = _Ladder(structure, cfg, prof, directory / "dense").point(
            "dense", ch["ecutwfc_ry"], ch["ecutrho_ry"], ch["kspacing_per_a"] / DENSER, ch["degauss_ry"])
    except _Failed as exc:
        res.update(ok=False, failure="probe_failed", message=f"{exc.where}: {exc.outcome.failure_code}: {exc.outcome.message}")
        return res
    at, dn = ({"kpoints": r["kpoints"], "kspacing_per_a": r["kspacing_per_a"], "wall_s": r["wall_s"],
               "c44_gpa": c44_gpa(r, cfg["shear_strain"])} for r in (row, dense))
    res.update(c44_chosen=at, c44_dense=dn, c44_ratio=at["c44_gpa"] / dn["c44_gpa"])
    return res


def _kbar(gpa: float | None) -> str:
    """A stress in kbar, or "-" for a sheared cell the ladder did not need (its step's unstrained cell moved)."""
    return "-" if gpa is None else f"{gpa * 10:.3f}"


def report(res: dict) -> str:
    lines = [f"== {res['metal']}: converge {'chose' if res['ok'] else 'FAILED'} in {res['converge_wall_s'] / 60:.1f} min"]
    lines.append(f"{'ladder':9} {'ecut':>5} {'mesh':>12} {'degauss':>7} {'E/atom eV':>13} {'sxy(shear) kbar':>15} {'wall s':>7}")
    for r in res["table"] or []:
        lines.append(f"{r['ladder']:9} {r['ecutwfc_ry']:5.0f} {'x'.join(map(str, r['kpoints'])):>12} {r['degauss_ry'] or 0:7.3f} "
                     f"{r['energy_per_atom_ev']:13.5f} {_kbar(r['shear_stress_gpa']):>15} {r['wall_s']:7.1f}")
    lines += [f"why: {w}" for w in res["why"] or []]
    if res.get("chosen"):
        lines.append("chosen: " + ", ".join(f"{k} {v}" for k, v in res["chosen"].items()))
    if not res["ok"]:
        lines.append(f"{res['failure']}: {res['message']}")
        return "\n".join(lines)
    a, d = res["c44_chosen"], res["c44_dense"]
    lines.append(f"C44 at the choice ({'x'.join(map(str, a['kpoints']))}): {a['c44_gpa']:.2f} GPa; "
                 f"mesh twice as dense ({'x'.join(map(str, d['kpoints']))}): {d['c44_gpa']:.2f} GPa; "
                 f"ratio {res['c44_ratio']:.3f} (done when within 0.90-1.10); dense point {d['wall_s']:.0f} s of pw.x")
    return "\n".join(lines)


def run_bench(doc: str, choices, default, measure, show) -> None:
    """The command line both converge benches share: crystal names, --json, --keep; ``measure(name, folder)``
    per crystal, ``show(name, result)`` printed as each finishes."""
    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("crystals", nargs="*", default=default, choices=sorted(choices))
    ap.add_argument("--json", type=Path, help="write the full results here")
    ap.add_argument("--keep", type=Path, help="keep the pw.x folders here (default: a temporary folder); a run stopped "
                                              "there is resumed: its finished pw.x runs are read, not repeated")
    ap.add_argument("--ranks", type=int, default=1, help="MPI ranks per pw.x run, as k-point pools (default 1)")
    args = ap.parse_args()
    if shutil.which("pw.x") is None:
        sys.exit("pw.x not found")
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = args.keep or Path(tmp)
        for name in args.crystals:
            results[name] = measure(name, root, args.ranks)
            print(show(name, results[name]), flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


def main() -> None:
    run_bench(__doc__, METALS, ["al", "ni"], lambda m, root, ranks: converge_and_check(m, root / m, ranks), lambda m, res: report(res))


if __name__ == "__main__":
    main()
