"""Benchmark: planning cost of apply on a ranked generated set, per candidate.

For each size N (default 50, 200, 800) this applies a manifest with one
generated set of N candidates (the committed checkpoint, seed 0), ranked by
the predicted tensor with ``top_k: 3``, through screen and an EMT relax (a
fast engine: the engine is not what is measured). apply's planning calls
(``plan``, ``plan_candidate``, ``shortlists``) and its scans (``scan``,
``scan_candidate``) are wrapped with timers in the same process; generation,
prediction and the stage tasks are not counted.

Printed per size: planning and scanning time per candidate, and each as a
ratio to the smallest size. A call made inside another timed call (the old
``_set_shortlist`` scanning and planning its set) counts once, in the
outer one. Target (issue 12, reported, not asserted):
planning time per candidate flat within 1.5x across sizes. Before the
redesign every candidate that reached the shortlist re-scanned and
re-planned its whole set, so the cost per candidate grew with N.

    .venv/bin/python bench/shortlist.py [--sizes 50,200,800] [--workdir DIR] [--json]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
CHECKPOINT = ROOT / "manifests" / "checkpoints" / "aimmat-small.pt"
# apply's planning and scanning entry points (the pre-redesign executor had
# ``_set_shortlist``, which scanned and planned the whole set; it is timed
# when present, so this script measures either tree: PYTHONPATH=<old tree>)
PLANNING = ("plan", "plan_candidate", "shortlists", "_set_shortlist")
SCANNING = ("scan", "scan_candidate")


def manifest(n: int) -> dict:
    try:
        from aimmat.identity import sha256_file
    except ImportError:  # the tree before the redesign
        from aimmat.manifest.identity import sha256_file

    return {
        "campaign": {"name": f"sl{n}", "root": "campaigns"},
        "profiles": {"emt": {"kind": "emt", "fmax_ev_per_a": 0.5, "max_steps": 20}},
        "models": {"small": {"path": str(CHECKPOINT), "sha256": sha256_file(CHECKPOINT)}},
        "candidate_sets": [{"name": "gen", "elements": 2, "check_elements": False,
                            "source": {"kind": "generator", "model": "small", "count": n, "seed": 0},
                            "rank": {"weights": {"log10_k_vrh": 1.0}, "top_k": 3}}],
        "stages": {"screen": {"charge_neutral": False}, "relax": {"profile": "emt"}},
    }


class Timers:
    """Wraps module attributes with timers; ``restore`` puts them back."""

    def __init__(self, module, names):
        self.module, self.names = module, names
        names = [n for n in names if hasattr(module, n)]
        self.seconds = dict.fromkeys(names, 0.0)
        self.calls = dict.fromkeys(names, 0)
        self._depth = 0
        self._orig = {n: getattr(module, n) for n in names}
        for n in names:
            setattr(module, n, self._wrap(n, self._orig[n]))

    def _wrap(self, name, fn):
        def timed(*a, **kw):
            if self._depth:  # inside another timed call: counted there
                return fn(*a, **kw)
            self._depth += 1
            t0 = time.perf_counter()
            try:
                return fn(*a, **kw)
            finally:
                self._depth -= 1
                self.seconds[name] += time.perf_counter() - t0
                self.calls[name] += 1
        return timed

    def restore(self):
        for n, fn in self._orig.items():
            setattr(self.module, n, fn)


def measure(workdir: Path, n: int) -> dict:
    from aimmat.apply import executor
    from aimmat.manifest import load_manifest

    path = workdir / f"n{n}.yaml"
    path.write_text(yaml.safe_dump(manifest(n)))
    spec = load_manifest(path)
    timers = Timers(executor, PLANNING + SCANNING)
    t0 = time.perf_counter()
    try:
        summary, final = executor.apply(spec, jobs=1, progress=False)
    finally:
        timers.restore()
    wall = time.perf_counter() - t0
    relaxed = summary.ran.get(("relax", "done"), 0) + summary.ran.get(("relax", "failed"), 0)
    if relaxed > 3:
        sys.exit(f"FAIL: {relaxed} candidates relaxed, top_k is 3")
    plan_s = sum(timers.seconds.get(k, 0.0) for k in PLANNING)
    scan_s = sum(timers.seconds.get(k, 0.0) for k in SCANNING)
    return {"size": n, "wall_s": wall, "passes": getattr(summary, "passes", None), "tasks": summary.n_ran, "relaxed": relaxed,
            "plan_us_per_cand": 1e6 * plan_s / n, "scan_us_per_cand": 1e6 * scan_s / n,
            "calls": dict(timers.calls)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="50,200,800")
    ap.add_argument("--workdir", type=Path)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    sizes = sorted(int(s) for s in args.sizes.split(","))
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="aimmat-shortlist-"))
    log = (lambda *a: print(*a, file=sys.stderr)) if args.json else print
    rows = []
    try:
        for n in sizes:
            log(f"applying a ranked generated set of {n} ...")
            rows.append(measure(workdir, n))
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    base = rows[0]
    for r in rows:
        r["plan_vs_smallest"] = r["plan_us_per_cand"] / base["plan_us_per_cand"]
        r["scan_vs_smallest"] = r["scan_us_per_cand"] / base["scan_us_per_cand"]
    worst = max(r["plan_vs_smallest"] for r in rows)
    if args.json:
        print(json.dumps({"rows": rows, "target_plan_flat_within_1.5x": worst <= 1.5}, indent=1))
        return
    print(f"\n{'size':>6} {'passes':>6} {'tasks':>6} {'plan us/cand':>13} {'vs min':>7} {'scan us/cand':>13} {'vs min':>7}")
    for r in rows:
        print(f"{r['size']:>6} {str(r['passes']):>6} {r['tasks']:>6} {r['plan_us_per_cand']:>13.1f} {r['plan_vs_smallest']:>7.2f}"
              f" {r['scan_us_per_cand']:>13.1f} {r['scan_vs_smallest']:>7.2f}")
    print(f"target: planning time per candidate flat within 1.5x across sizes: "
          f"{'HOLDS' if worst <= 1.5 else 'FAILS'} (worst {worst:.2f}x)")


if __name__ == "__main__":
    main()
