"""A small, untrained checkpoint built in-process for tests (seeded)."""

from __future__ import annotations

from pathlib import Path

import torch

from aimmat.model import checkpoint
from aimmat.model.vae import CrystalVAE, ElasticPredictor

ELASTIC_HP = dict(cutoff=4.0, n_layers=1, hidden="8x0e + 2x1o + 2x2e + 1x3o + 1x4e", out="8x0e + 2x2e + 2x4e",
                  lmax=4, n_heads=3, avg_neighbours=15.0)
VAE_HP = dict(latent_dim=8, cutoff=4.0, n_layers=1, lmax=2, hidden="8x0e + 2x1o + 2x2e", enc_out="8x0e + 2x1o + 2x2e",
              score_hidden="8x0e + 2x1o + 2x2e", score_layers=1, max_atoms=6, avg_neighbours=15.0)


def tiny_models(seed: int = 0):
    torch.manual_seed(seed)
    el = ElasticPredictor(**ELASTIC_HP)
    vae = CrystalVAE(**VAE_HP)
    vae.lat_mean.copy_(torch.tensor([2.6, 2.6, 2.6, 90.0, 90.0, 90.0]))
    vae.lat_std.copy_(torch.tensor([0.2, 0.2, 0.2, 5.0, 5.0, 5.0]))
    abl = ElasticPredictor(**{**ELASTIC_HP, "pd": False})
    return el, vae, abl


def write_tiny_checkpoint(path: Path, seed: int = 0) -> str:
    el, vae, abl = tiny_models(seed)
    payload = checkpoint.pack(
        config={"elastic": {"data": []}, "generator": {"data": [], "test": []}}, data_files={}, split_seed=1,
        metrics={}, sampler={"levels": 3, "steps": 2, "step_lr": 1e-4}, elastic=el,
        elastic_hparams={**ELASTIC_HP, "pd": True}, vae=vae, vae_hparams=VAE_HP, ablation=abl,
        ablation_hparams={**ELASTIC_HP, "pd": False})
    return checkpoint.save(payload, path)
