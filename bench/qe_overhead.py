"""Benchmark: what aimmat adds to Quantum ESPRESSO runs, and what packing gains.

1. Overhead. A Si relax + SCF campaign (Debian Si.pbe-rrkj.UPF, 30 Ry,
   6x6x6) is applied through aimmat in this process (``apply()``: planning,
   records, journal, parsing), then the very pw.x input files aimmat wrote
   are run directly with pw.x, one after the other. Both are repeated
   alternately; the minimum of each is kept. Printed: the ratio
   aimmat / direct (target <= 1.05), and the same for the CLI, whose Python
   start-up and imports are a fixed cost per command.
2. Packing. The 24-cell Si elastic set (plus the unstrained cell) is run by
   aimmat twice: cells packed onto the cores as 1-rank pw.x processes (the
   default), and cells one after another with all cores each
   (``mpi_ranks`` = cores). Printed: the wall-time ratio packed / sequential.

    .venv/bin/python bench/qe_overhead.py [--repeat 3] [--skip-packing] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml
from ase.build import bulk
from pymatgen.io.ase import AseAtomsAdaptor

from aimmat.apply.executor import apply
from aimmat.engines.qe.engine import pw_env
from aimmat.manifest import load_manifest

PROFILE = {"kind": "qe", "preset": "fast", "pseudo": {"family": "debian", "files": {"Si": "Si.pbe-rrkj.UPF"}},
           "ecutwfc_ry": 30, "kpoints": [6, 6, 6], "walltime_s": 3600}


def campaign(root: Path, stages: dict, **profile) -> Path:
    (root / "s").mkdir(parents=True, exist_ok=True)
    AseAtomsAdaptor.get_structure(bulk("Si", "diamond", a=5.43)).to(filename=str(root / "s" / "Si.vasp"), fmt="poscar")
    m = {"campaign": {"name": "b", "root": "camp"}, "profiles": {"qe": {**PROFILE, **profile}},
         "candidate_sets": [{"name": "si", "elements": 1, "source": {"kind": "files", "glob": "s/*.vasp"}}],
         "stages": stages}
    path = root / "m.yaml"
    path.write_text(yaml.safe_dump(m))
    return path


def timed_apply(path: Path, **kw) -> float:
    shutil.rmtree(path.parent / "camp", ignore_errors=True)
    t0 = time.perf_counter()
    summary, _ = apply(load_manifest(path), progress=False, **kw)
    wall = time.perf_counter() - t0
    if summary.failed:
        sys.exit(f"FAIL: {summary.failed}")
    return wall


def timed_cli(path: Path) -> float:
    shutil.rmtree(path.parent / "camp", ignore_errors=True)
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "aimmat.cli.main", "apply", str(path), "-q", "--jobs", "1"], check=True, capture_output=True)
    return time.perf_counter() - t0


def timed_direct(inputs: list[Path], work: Path) -> float:
    """The same pw.in files, run by hand: copy, run pw.x, nothing else."""
    shutil.rmtree(work, ignore_errors=True)
    t0 = time.perf_counter()
    for i, src in enumerate(inputs):
        d = work / str(i)
        d.mkdir(parents=True)
        shutil.copy(src, d / "pw.in")
        with open(d / "pw.out", "w") as fo:
            subprocess.run(["pw.x", "-in", "pw.in"], cwd=d, stdout=fo, stderr=subprocess.DEVNULL, env=pw_env(), check=False)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--skip-packing", action="store_true")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    if shutil.which("pw.x") is None:
        sys.exit("pw.x not found: apt-get install quantum-espresso")
    cores = os.cpu_count() or 1
    res: dict = {"cores": cores}
    with tempfile.TemporaryDirectory(prefix="aimmat-qe-bench-") as tmp:
        root = Path(tmp)
        path = campaign(root / "o", {"relax": {"profile": "qe"}, "scf": {"profile": "qe"}})
        timed_apply(path, jobs=1)  # warm-up: imports, pw.x version probe, page cache
        camp = root / "o" / "camp" / "b" / "si" / "Si"
        inputs = [camp / "relax" / "attempt-1" / "pw.in", camp / "scf" / "attempt-1" / "pw.in"]
        saved = root / "inputs"
        saved.mkdir()
        inputs = [Path(shutil.copy(p, saved / f"{i}.in")) for i, p in enumerate(inputs)]
        t_api, t_cli, t_dir = [], [], []
        for _ in range(args.repeat):
            t_dir.append(timed_direct(inputs, root / "direct"))
            t_api.append(timed_apply(path, jobs=1))
            t_cli.append(timed_cli(path))
        res.update(direct_s=min(t_dir), aimmat_s=min(t_api), cli_s=min(t_cli),
                   overhead_ratio=min(t_api) / min(t_dir), cli_ratio=min(t_cli) / min(t_dir))
        if not args.skip_packing:
            stages = {"relax": {"profile": "qe"}, "elastic": {"profile": "qe"}}
            packed_path = campaign(root / "p", stages)
            seq_path = campaign(root / "q", stages, mpi_ranks=cores)
            t_packed = timed_apply(packed_path, jobs=1, cores=cores)
            t_seq = timed_apply(seq_path, jobs=1, cores=cores)
            res.update(packed_s=t_packed, sequential_allcores_s=t_seq, packing_ratio=t_packed / t_seq)
    if args.json:
        print(json.dumps(res, indent=1))
        return
    print(f"Si relax+SCF  direct pw.x {res['direct_s']:.2f} s | aimmat apply() {res['aimmat_s']:.2f} s | "
          f"CLI {res['cli_s']:.2f} s  (min of {args.repeat})")
    print(f"overhead ratio aimmat/direct: {res['overhead_ratio']:.3f}  (target <= 1.05: "
          f"{'HOLDS' if res['overhead_ratio'] <= 1.05 else 'FAILS'});  CLI/direct: {res['cli_ratio']:.3f}")
    if "packing_ratio" in res:
        print(f"Si elastic (relax + 25 cells): packed 1-rank x {cores} {res['packed_s']:.1f} s | "
              f"one after another, {cores} ranks each {res['sequential_allcores_s']:.1f} s | ratio packed/sequential {res['packing_ratio']:.3f}")


if __name__ == "__main__":
    main()
