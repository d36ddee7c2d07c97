"""``aimmat model train CONFIG.yaml``: train the elastic predictor (PD and
unconstrained ablation, identically seeded) and the crystal VAE, evaluate
the elastic heads on the held-out split, write one checkpoint.

Ensemble: the heads share the equivariant trunk; each head sees its own
bootstrap weights of the training examples (Poisson(1) per example and
head), the usual cheap approximation of a deep ensemble.
"""

from __future__ import annotations

import copy
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
import yaml

from aimmat.errors import UsageError
from aimmat.model import checkpoint, data
from aimmat.model.elastic_head import GPA_UNIT, voigt_to_mandel
from aimmat.model.graph import from_structures, lattice_params, structure_edges
from aimmat.model.vae import CrystalVAE, ElasticPredictor
from aimmat.model.sample import DEFAULT_SCHEDULE


def read_config(path: Path, data_root: str | None = None) -> tuple[dict, Path]:
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"training config {path} not found")
    try:
        cfg = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise UsageError(f"training config {path} is not valid YAML: {e}") from None
    for key in ("elastic", "generator"):
        if not isinstance(cfg, dict) or key not in cfg:
            raise UsageError(f"training config {path}: missing section {key!r}")
    # --data-root, then $AIMMAT_SHARED_DATA (both relative to the working
    # directory), then the config's data_root (relative to the config file)
    if data_root or os.environ.get("AIMMAT_SHARED_DATA"):
        root = Path(data_root or os.environ["AIMMAT_SHARED_DATA"])
    else:
        root = Path(cfg.get("data_root", "../shared/data"))
        root = root if root.is_absolute() else path.parent / root
    return cfg, root.resolve()


class Graphs:
    """Precomputed edges of a list of items (pymatgen neighbour lists)."""

    def __init__(self, items, cutoff: float):
        self.items = items
        self.cutoff = cutoff
        self.edges = [structure_edges(i.structure, cutoff) for i in items]

    def batch(self, idx):
        return from_structures([self.items[i].structure for i in idx], self.cutoff, [self.edges[i] for i in idx])


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def train_elastic(items, split, cfg: dict, seed: int, pd: bool) -> tuple[ElasticPredictor, dict, list]:
    hp = dict(cfg["model"], pd=pd)
    torch.manual_seed(seed)
    model = ElasticPredictor(**hp)
    graphs = Graphs(items, hp.get("cutoff", 5.0))
    target = voigt_to_mandel(torch.tensor(np.array([i.voigt for i in items]), dtype=torch.float32)) / GPA_UNIT
    rng = np.random.default_rng(seed)
    n_heads = hp.get("n_heads", 4)
    boot = torch.tensor(rng.poisson(1.0, (n_heads, len(items))), dtype=torch.float32)
    epochs, bs = int(cfg["epochs"]), int(cfg.get("batch_size", 32))
    opt = torch.optim.AdamW(model.parameters(), lr=float(cfg.get("lr", 2e-3)), weight_decay=1e-5)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=float(cfg.get("lr", 2e-3)), total_steps=epochs *
                                                ((len(split["train"]) + bs - 1) // bs))
    best, best_state, history = float("inf"), None, []
    for epoch in range(epochs):
        model.train()
        t0, tot = time.perf_counter(), 0.0
        for chunk in np.array_split(rng.permutation(split["train"]), max(1, len(split["train"]) // bs)):
            pred = model(graphs.batch(chunk)) / GPA_UNIT  # (H, B, 6, 6)
            err = ((pred - target[chunk]) ** 2).mean((-1, -2))  # (H, B)
            w = boot[:, chunk]
            loss = (err * w).sum() / w.sum().clamp_min(1.0)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            tot += float(loss.detach()) * len(chunk)
        val = evaluate_loss(model, graphs, target, split["val"])
        history.append({"epoch": epoch, "train": tot / len(split["train"]), "val": val})
        if val < best:
            best, best_state = val, copy.deepcopy(model.state_dict())
        _log(f"elastic{'' if pd else ' (no PD map)'} epoch {epoch + 1}/{epochs}: train {tot / len(split['train']):.4f} "
             f"val {val:.4f} ({time.perf_counter() - t0:.1f} s)")
    model.load_state_dict(best_state)
    model.eval()
    return model, hp, history


@torch.no_grad()
def evaluate_loss(model, graphs, target, idx, bs: int = 64) -> float:
    model.eval()
    tot = 0.0
    for chunk in np.array_split(idx, max(1, len(idx) // bs)):
        pred = model(graphs.batch(chunk)).mean(0) / GPA_UNIT
        tot += float(((pred - target[chunk]) ** 2).mean((-1, -2)).sum())
    return tot / max(1, len(idx))


def train_vae(items, cfg: dict, seed: int) -> tuple[CrystalVAE, dict, list]:
    hp = dict(cfg["model"])
    torch.manual_seed(seed)
    model = CrystalVAE(**hp)
    graphs = Graphs(items, model.cutoff)
    lat = lattice_params(torch.tensor(np.array([i.structure.lattice.matrix for i in items]), dtype=torch.float32))
    n = torch.tensor([len(i.structure) for i in items], dtype=torch.float32)
    lat = torch.cat([lat[:, :3] / n[:, None] ** (1 / 3), lat[:, 3:]], -1)
    model.lat_mean.copy_(lat.mean(0))
    model.lat_std.copy_(torch.maximum(lat.std(0), torch.tensor([0.1, 0.1, 0.1, 1.0, 1.0, 1.0])))
    n_el = torch.tensor([len(i.structure.composition.elements) for i in items])
    rng = np.random.default_rng(seed)
    gen = torch.Generator().manual_seed(seed)
    epochs, bs = int(cfg["epochs"]), int(cfg.get("batch_size", 64))
    lr = float(cfg.get("lr", 1e-3))
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-5)
    steps = epochs * max(1, len(items) // bs)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
    beta = float(cfg.get("beta", 0.01))
    history = []
    for epoch in range(epochs):
        model.train()
        t0, sums = time.perf_counter(), {}
        for chunk in np.array_split(rng.permutation(len(items)), max(1, len(items) // bs)):
            parts = model.loss(graphs.batch(chunk), n_el[chunk], beta=beta, generator=gen)
            opt.zero_grad()
            parts["loss"].backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
            opt.step()
            sched.step()
            for k, v in parts.items():
                sums[k] = sums.get(k, 0.0) + float(v.detach()) * len(chunk)
        means = {k: v / len(items) for k, v in sums.items()}
        history.append({"epoch": epoch, **means})
        _log(f"vae epoch {epoch + 1}/{epochs}: " + " ".join(f"{k} {v:.3f}" for k, v in means.items())
             + f" ({time.perf_counter() - t0:.1f} s)")
    model.eval()
    return model, hp, history


def run(config_path: Path, out: Path, data_root: str | None = None) -> dict:
    from aimmat.model.evaluate import elastic_metrics

    cfg, root = read_config(config_path, data_root)
    seed, split_seed = int(cfg.get("seed", 0)), int(cfg.get("split_seed", 0))
    torch.set_num_threads(int(cfg.get("threads", torch.get_num_threads())))
    ecfg, gcfg = cfg["elastic"], cfg["generator"]
    t0 = time.perf_counter()
    eds = data.load(ecfg["data"], root, int(ecfg.get("max_atoms", 24)))
    esplit = data.split(len(eds.items), split_seed)
    _log(f"elastic data: {len(eds.items)} crystals ({', '.join(f'{k} {len(v)}' for k, v in esplit.items())})")
    model, hp, hist = train_elastic(eds.items, esplit, ecfg, seed, pd=True)
    abl = abl_hp = abl_hist = None
    if ecfg.get("ablation", True):
        abl, abl_hp, abl_hist = train_elastic(eds.items, esplit, ecfg, seed, pd=False)
    gds = data.load(gcfg["data"], root, int(gcfg.get("max_atoms", 12)))
    _log(f"generator data: {len(gds.items)} crystals")
    vae, vae_hp, vae_hist = train_vae(gds.items, gcfg, seed)
    test_items = [eds.items[i] for i in esplit["test"]]
    train_items = [eds.items[i] for i in esplit["train"]]
    metrics = {"elastic": elastic_metrics(model, test_items, train_items),
               "train_seconds": round(time.perf_counter() - t0, 1)}
    if abl is not None:
        metrics["elastic_ablation"] = elastic_metrics(abl, test_items, train_items)
    payload = checkpoint.pack(
        config=cfg, data_files={**eds.files, **gds.files}, split_seed=split_seed, metrics=metrics,
        sampler=dict(cfg.get("sampler", DEFAULT_SCHEDULE)), elastic=model, elastic_hparams=hp, vae=vae,
        vae_hparams=vae_hp, ablation=abl, ablation_hparams=abl_hp,
        extra={"history": {"elastic": hist, "elastic_ablation": abl_hist, "vae": vae_hist}, "seed": seed})
    digest = checkpoint.save(payload, out)
    _log(f"wrote {out} (sha256 {digest}) in {time.perf_counter() - t0:.0f} s")
    return {"path": str(out), "sha256": digest, "metrics": metrics}
