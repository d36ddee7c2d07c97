"""Benchmark: Langevin sampling schedules of the committed checkpoint.

For each schedule (levels x steps per level), generates the same samples
(same seed, same indices) and prints wall time per structure as a ratio to
CDVAE's schedule (50 x 100 = 5,000 steps), with structural validity
(CDVAE definition) and compositional validity (SMACT) of what it made.
The default schedule of aimmat is 10 x 5 = 50 steps plus a denoising step.

    .venv/bin/python bench/sampler.py [--checkpoint manifests/checkpoints/aimmat-small.pt] [--count 16] [--elements 3]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from aimmat.model import checkpoint
from aimmat.model.metrics import compositional_validity, structural_validity
from aimmat.model.sample import CDVAE_SCHEDULE, sample

ROOT = Path(__file__).resolve().parents[1]
SCHEDULES = [(5, 2), (10, 5), (10, 20), (50, 10), (50, 100)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", default=str(ROOT / "manifests" / "checkpoints" / "aimmat-small.pt"))
    ap.add_argument("--count", type=int, default=16)
    ap.add_argument("--elements", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    ck = checkpoint.load(Path(args.checkpoint))
    rows = []
    for levels, steps in SCHEDULES:
        sch = {"levels": levels, "steps": steps, "step_lr": CDVAE_SCHEDULE["step_lr"]}
        t0 = time.perf_counter()
        out = [s.structure for s in sample(ck.vae, args.count, args.elements, args.seed, sch)]
        dt = time.perf_counter() - t0
        rows.append((levels, steps, dt, np.mean(structural_validity(out)), np.mean(compositional_validity(out))))
        print(f"{levels:>3} x {steps:<4} {dt:8.2f} s", flush=True)
    base = next(r for r in rows if (r[0], r[1]) == (CDVAE_SCHEDULE["levels"], CDVAE_SCHEDULE["steps"]))[2]
    print(f"\n{args.count} samples, {args.elements} elements, checkpoint {Path(args.checkpoint).name}")
    print(f"{'schedule':>10} {'steps':>6} {'s/struct':>9} {'time vs CDVAE':>14} {'struct valid':>13} {'comp valid':>11}")
    for levels, steps, dt, sv, cv in rows:
        print(f"{levels:>4} x {steps:<4} {levels * steps:>6} {dt / args.count:>9.3f} {dt / base:>14.4f} {100 * sv:>12.0f}% {100 * cv:>10.0f}%")


if __name__ == "__main__":
    main()
