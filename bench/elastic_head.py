"""Elastic head variants on the held-out split of elastic_tensor_2015, trained in one process.

Each variant changes named keys of the committed config's elastic section
(``base``: unchanged; ``tensor``: the recipe before the log-moduli loss);
data, split, seed, epochs and the PD map are the same for all. Prints, per
variant, the figures the issue sets goals on (MAE of log10 K_VRH and
log10 G_VRH, Spearman of the ensemble spread against the error, PD
fraction) and the ratio of each MAE to the baseline's, with train time.

    .venv/bin/python bench/elastic_head.py [--epochs N] [--variants tensor,base,...] [--json out.json]
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from aimmat.model import data  # noqa: E402
from aimmat.model.evaluate import elastic_metrics  # noqa: E402
from aimmat.model.train import read_config, train_elastic  # noqa: E402

# "base" is the committed config as it stands (since 2026-12-04: log-moduli weight 1 and the error head);
# "tensor" is the recipe before it (tensor loss alone, no error head), the baseline of that change
VARIANTS = {
    "base": {},
    "tensor": {"log_moduli_weight": 0.0, "model": {"error_head": False}},
    "log3": {"log_moduli_weight": 3.0},
    "wide": {"model": {"n_layers": 2}},
}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=str(ROOT / "configs/model-small.yaml"))
    ap.add_argument("--epochs", type=int, default=None, help="override the config's epochs (all variants)")
    ap.add_argument("--variants", default="tensor,base")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", default=None)
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    cfg, root = read_config(Path(a.config))
    ecfg = cfg["elastic"]
    items = data.load(ecfg["data"], root, int(ecfg.get("max_atoms", 24))).items
    split = data.split(len(items), int(cfg.get("split_seed", 0)))
    test = [items[i] for i in split["test"]]
    train = [items[i] for i in split["train"]]
    rows = []
    for name in a.variants.split(","):
        c = copy.deepcopy(ecfg)
        for k, v in VARIANTS[name].items():
            c[k] = {**c[k], **v} if isinstance(v, dict) else v
        if a.epochs:
            c["epochs"] = a.epochs
        t0 = time.perf_counter()
        model, _, _ = train_elastic(items, split, c, int(cfg.get("seed", 0)), pd=True)
        m = elastic_metrics(model, test, train)
        m.update(variant=name, seconds=round(time.perf_counter() - t0, 1), epochs=c["epochs"])
        rows.append(m)
        eh = (f"  error head Spearman K {m['spearman_error_head_vs_error_k']:.2f} G "
              f"{m['spearman_error_head_vs_error_g']:.2f}" if "spearman_error_head_vs_error_k" in m else "")
        print(f"{name}: log10 K MAE {m['mae_log10_kvrh']:.3f}  log10 G MAE {m['mae_log10_gvrh']:.3f}  "
              f"Spearman (spread) {m['spearman_spread_vs_error']:.2f}{eh}  PD {m['pd_fraction']:.2f}  "
              f"{m['seconds']:.0f} s", flush=True)
    b = rows[0]
    print(f"\n{len(test)} held-out crystals; ratios against {b['variant']}:")
    for m in rows:
        print(f"  {m['variant']:10s} K {m['mae_log10_kvrh'] / b['mae_log10_kvrh']:.2f}x  "
              f"G {m['mae_log10_gvrh'] / b['mae_log10_gvrh']:.2f}x  time {m['seconds'] / b['seconds']:.2f}x")
    if a.json:
        Path(a.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
