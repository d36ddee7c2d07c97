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
from aimmat.model.elastic_head import GPA_UNIT, mandel_to_voigt, voigt_to_mandel, vrh_torch
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
    target, log_t, log_ok = targets(items)
    w_log = float(cfg.get("log_moduli_weight", 0.0))
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
            loss = batch_loss(model, graphs.batch(chunk), target[chunk], log_t[chunk], log_ok[chunk], boot[:, chunk],
                              w_log)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            tot += float(loss.detach()) * len(chunk)
        val = evaluate_loss(model, graphs, target, split["val"], log=(log_t, log_ok, w_log))
        history.append({"epoch": epoch, "train": tot / len(split["train"]), "val": val})
        if val < best:
            best, best_state = val, copy.deepcopy(model.state_dict())
        _log(f"elastic{'' if pd else ' (no PD map)'} epoch {epoch + 1}/{epochs}: train {tot / len(split['train']):.4f} "
             f"val {val:.4f} ({time.perf_counter() - t0:.1f} s)")
    model.load_state_dict(best_state)
    model.eval()
    return model, hp, history


def targets(items) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Mandel targets (100 GPa units), log10 of the reference Hill K and G, and where those logs count.

    The log moduli are the figures a campaign ranks by: a loss on the tensor alone (in 100 GPa units) lets
    stiff crystals dominate, so ``log_moduli_weight`` adds their absolute error (rows whose reference
    moduli are not positive get no such term)."""
    voigt = torch.tensor(np.array([i.voigt for i in items]), dtype=torch.float32)
    k_t, g_t = vrh_torch(voigt.double())
    ok = (k_t > 0) & (g_t > 0) & torch.isfinite(k_t) & torch.isfinite(g_t)
    return voigt_to_mandel(voigt) / GPA_UNIT, torch.stack([k_t, g_t], -1).clamp_min(1e-2).log10().float(), ok


def batch_loss(model, batch, target, log_t, ok, boot_w, w_log: float, error_head: bool = True) -> torch.Tensor:
    """Bootstrap-weighted loss of one batch: tensor MSE per head, plus ``w_log`` x the log-moduli error, plus
    the error head's likelihood where the model has one and ``error_head`` is set (training; a learning
    cycle's fine-tuning leaves the error head as trained)."""
    pred, s_err = model.forward_with_error(batch)
    pred = pred / GPA_UNIT  # (H, B, 6, 6)
    err = ((pred - target) ** 2).mean((-1, -2))  # (H, B)
    if w_log:
        err = err + w_log * log_moduli_error(pred, log_t, ok)
    loss = (err * boot_w).sum() / boot_w.sum().clamp_min(1.0)
    if s_err is not None and error_head:  # Laplace likelihood of the ensemble mean's log10 K / G residuals (detached)
        loss = loss + error_nll(pred.detach().mean(0), s_err, log_t, ok)
    return loss


def _log_moduli(mandel: torch.Tensor) -> torch.Tensor:
    """(..., 2) log10 of the Hill K and G of Mandel tensors in 100 GPa units (floored at 0.01 GPa)."""
    k, g = vrh_torch(mandel_to_voigt(mandel.double() * GPA_UNIT))
    return torch.nan_to_num(torch.stack([k, g], -1), nan=1e-2).clamp_min(1e-2).log10().float()


def log_moduli_error(pred_mandel: torch.Tensor, log_true: torch.Tensor, ok: torch.Tensor) -> torch.Tensor:
    """(H, B) sum of |log10 K_pred - log10 K_true| and the same for G; zero where ``ok`` is false."""
    return ((_log_moduli(pred_mandel) - log_true).abs().sum(-1)) * ok.float()


def error_nll(mean_mandel: torch.Tensor, s_err: torch.Tensor, log_true: torch.Tensor, ok: torch.Tensor) -> torch.Tensor:
    """Mean Laplace negative log-likelihood |r| / exp(s) + s of the residuals r of log10 K and log10 G, with
    s the error head's (B, 2) output: it learns which crystals the tensor head gets wrong."""
    r = (_log_moduli(mean_mandel) - log_true).abs().clamp_min(1e-4)
    nll = (r / torch.exp(s_err) + s_err) * ok.float()[:, None]
    return nll.sum() / (2 * ok.float().sum()).clamp_min(1.0)


@torch.no_grad()
def evaluate_loss(model, graphs, target, idx, bs: int = 64, log=None) -> float:
    """Validation loss of the ensemble mean: tensor MSE, plus the log-moduli term when ``log`` =
    (log10 targets, mask, weight) has a non-zero weight (the objective training minimises)."""
    model.eval()
    tot = 0.0
    for chunk in np.array_split(idx, max(1, len(idx) // bs)):
        pred = model(graphs.batch(chunk)).mean(0) / GPA_UNIT
        err = ((pred - target[chunk]) ** 2).mean((-1, -2))
        if log is not None and log[2]:
            err = err + log[2] * log_moduli_error(pred[None], log[0][chunk], log[1][chunk])[0]
        tot += float(err.sum())
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


def _generator_from(path: Path, gcfg: dict, seed: int, files: dict) -> tuple[CrystalVAE, dict, list, str]:
    """The VAE of an earlier checkpoint, refused unless it was trained from the same generator section,
    seed and data files (so the result is the checkpoint this config would train, minus the wait)."""
    ck = checkpoint.load(path)
    old = ck.meta["config"].get("generator")
    if old != gcfg or ck.meta.get("seed") != seed:
        raise UsageError(f"--generator-from {path}: its generator section or seed differs from this config's; "
                         "the generator must be retrained", fix="drop --generator-from")
    stale = {k: v for k, v in files.items() if ck.meta["data_files"].get(k) != v}
    if stale:
        raise UsageError(f"--generator-from {path}: generator data changed since it was trained: {', '.join(stale)}",
                         fix="drop --generator-from")
    payload = torch.load(path, map_location="cpu", weights_only=True)
    hist = (payload.get("history") or {}).get("vae", [])
    return ck.vae, payload["vae"]["hparams"], hist, ck.sha256


def run(config_path: Path, out: Path, data_root: str | None = None, generator_from: Path | None = None) -> dict:
    """Train the checkpoint CONFIG describes; ``generator_from``: take the VAE of that checkpoint (same
    generator section, seed and data) and train the elastic heads only."""
    from aimmat.model.evaluate import elastic_metrics

    cfg, root = read_config(config_path, data_root)
    seed, split_seed = int(cfg.get("seed", 0)), int(cfg.get("split_seed", 0))
    torch.set_num_threads(int(cfg.get("threads", torch.get_num_threads())))
    ecfg, gcfg = cfg["elastic"], cfg["generator"]
    t0 = time.perf_counter()
    eds = data.load(ecfg["data"], root, int(ecfg.get("max_atoms", 24)))
    esplit = data.split(len(eds.items), split_seed)
    _log(f"elastic data: {len(eds.items)} crystals ({', '.join(f'{k} {len(v)}' for k, v in esplit.items())})")
    gds = data.load(gcfg["data"], root, int(gcfg.get("max_atoms", 12)))
    reused = None
    if generator_from is not None:  # checked before any training: a refusal costs nothing
        vae, vae_hp, vae_hist, reused = _generator_from(Path(generator_from), gcfg, seed, gds.files)
    model, hp, hist = train_elastic(eds.items, esplit, ecfg, seed, pd=True)
    abl = abl_hp = abl_hist = None
    if ecfg.get("ablation", True):
        # the ablation trains on the tensor loss alone: the log-moduli term inverts the tensor (Reuss bound)
        # and needs it positive definite, so with it the unconstrained model would be judged on a loss it
        # cannot follow (measured: log10 K / G MAE 0.42 / 0.76 with it); the PD map's effect is read on the
        # tensor-loss pair (same recipe on both sides), recorded with the metrics
        abl, abl_hp, abl_hist = train_elastic(eds.items, esplit, {**ecfg, "log_moduli_weight": 0.0}, seed, pd=False)
    _log(f"generator data: {len(gds.items)} crystals")
    if reused:
        _log(f"generator: the VAE of {generator_from} (sha256 {reused[:12]}), not retrained")
    else:
        vae, vae_hp, vae_hist = train_vae(gds.items, gcfg, seed)
    test_items = [eds.items[i] for i in esplit["test"]]
    train_items = [eds.items[i] for i in esplit["train"]]
    metrics = {"elastic": elastic_metrics(model, test_items, train_items),
               "train_seconds": round(time.perf_counter() - t0, 1)}
    if abl is not None:
        metrics["elastic_ablation"] = {**elastic_metrics(abl, test_items, train_items),
                                       "recipe": "no PD map, tensor loss only (log_moduli_weight 0)"}
    payload = checkpoint.pack(
        config=cfg, data_files={**eds.files, **gds.files}, split_seed=split_seed, metrics=metrics,
        sampler=dict(cfg.get("sampler", DEFAULT_SCHEDULE)), elastic=model, elastic_hparams=hp, vae=vae,
        vae_hparams=vae_hp, ablation=abl, ablation_hparams=abl_hp,
        extra={"history": {"elastic": hist, "elastic_ablation": abl_hist, "vae": vae_hist}, "seed": seed,
               **({"generator_from_sha256": reused} if reused else {})})
    digest = checkpoint.save(payload, out)
    _log(f"wrote {out} (sha256 {digest}) in {time.perf_counter() - t0:.0f} s")
    return {"path": str(out), "sha256": digest, "metrics": metrics}
