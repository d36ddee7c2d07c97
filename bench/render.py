"""Benchmark: snapshot + render cost per candidate across campaign sizes.

Builds the same synthetic, up-to-date campaigns as bench/reconcile.py (1k,
10k, 100k candidates, three stages each, records only), declares the
screening and public templates plus the HTML report, and times
``aimmat.render.outputs.render`` (scan, snapshot, templates, figures,
hashes, lock) in this process, --repeat times, keeping the minimum.
Printed: per-candidate cost at each size as a ratio to the smallest size
(target: flat within 1.5x).

    .venv/bin/python bench/render.py [--sizes 1000,10000,100000] [--repeat 2]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from reconcile import build, fits  # noqa: E402  (same synthetic campaigns)

from aimmat.manifest import load_manifest  # noqa: E402
from aimmat.render.outputs import render  # noqa: E402

TEMPLATES = Path(__file__).resolve().parents[1] / "templates"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="1000,10000,100000")
    ap.add_argument("--repeat", type=int, default=2)
    args = ap.parse_args()
    sizes = sorted(int(s) for s in args.sizes.split(","))
    rows = []
    work = Path(tempfile.mkdtemp(prefix="aimmat-render-bench-"))
    try:
        for n in sizes:
            if fits(work, n):
                print(f"skip {n}: {fits(work, n)}")
                continue
            root = work / f"n{n}"
            t0 = time.perf_counter()
            manifest, _ = build(root, n)
            m = yaml.safe_load(manifest.read_text())
            m["render"] = [{"template": str(TEMPLATES / t)} for t in
                           ("project.md.j2", "status_by_set.md.j2", "rerun_priority.md.j2", "validated.md.j2", "protocol.md.j2")]
            manifest.write_text(yaml.safe_dump(m))
            build_s = time.perf_counter() - t0
            times = []
            for _ in range(args.repeat):
                t0 = time.perf_counter()
                render(load_manifest(manifest), command=["bench"])
                times.append(time.perf_counter() - t0)
            rows.append((n, build_s, min(times)))
            print(f"built {n} in {build_s:.1f} s; snapshot + render {min(times):.2f} s", flush=True)
            shutil.rmtree(root)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    base = rows[0][2] / rows[0][0]
    print(f"\n{'size':>8} {'render s':>9} {'us/cand':>9} {'vs smallest':>12}")
    for n, _, t in rows:
        print(f"{n:>8} {t:>9.2f} {1e6 * t / n:>9.1f} {t / n / base:>12.2f}")
    worst = max(t / n / base for n, _, t in rows)
    print(f"target: per-candidate cost flat within 1.5x: {'HOLDS' if worst <= 1.5 else 'FAILS'} (worst {worst:.2f}x)")


if __name__ == "__main__":
    main()
