"""The crystal VAE and the elastic predictor.

``CrystalVAE``: equivariant encoder -> invariant latent (mean, log variance);
decoder from (latent, element-count condition) to number of atoms,
composition and lattice (lengths scaled by N^(1/3), angles), plus an
equivariant score network that denoises Cartesian positions at a given
noise level (denoising score matching, as in CDVAE; the sampler in
``sample.py`` chooses how many annealed Langevin steps to take).

``ElasticPredictor``: equivariant GNN -> mean-pooled features -> an ensemble
of elastic heads (``elastic_head.py``), positive definite unless built as
the unconstrained ablation.
"""

from __future__ import annotations

import math

import torch
from e3nn import o3
from torch import nn

from aimmat.model.elastic_head import ElasticHead
from aimmat.model.graph import MAX_Z, Batch, batch_from_tensors, lattice_params
from aimmat.model.nets import EquivariantGNN, invariants, mean_pool

MAX_ELEMENTS = 5  # condition classes: 1 .. 4 elements, 5 = five or more


def n_elements_onehot(k: torch.Tensor) -> torch.Tensor:
    return nn.functional.one_hot((k.clamp(1, MAX_ELEMENTS) - 1).long(), MAX_ELEMENTS).float()


def _mlp(dims: list[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for a, b in zip(dims[:-1], dims[1:]):
        layers += [nn.Linear(a, b), nn.SiLU()]
    return nn.Sequential(*layers[:-1])


class ElasticPredictor(nn.Module):
    def __init__(self, *, hidden: str = "24x0e + 8x1o + 8x2e + 4x3o + 4x4e", out: str = "32x0e + 8x2e + 8x4e",
                 lmax: int = 4, n_layers: int = 2, cutoff: float = 5.0, n_heads: int = 4, pd: bool = True,
                 avg_neighbours: float = 30.0, error_head: bool = False):
        super().__init__()
        self.gnn = EquivariantGNN(hidden, out, lmax=lmax, n_layers=n_layers, cutoff=cutoff,
                                  avg_neighbours=avg_neighbours)
        self.head = ElasticHead(o3.Irreps(out), n_heads=n_heads, pd=pd)
        self.cutoff = cutoff
        # optional: predicted log of the typical |error| of log10 K_VRH and log10 G_VRH, from invariants of
        # the pooled features (a heteroscedastic error model beside the ensemble; invariant by construction)
        if error_head:  # built under its own seed, so the rest of the model initialises as without it
            with torch.random.fork_rng():
                torch.manual_seed(0)
                self.error = _mlp([o3.Irreps(out).num_irreps, 32, 2])
        else:
            self.error = None

    def forward(self, b: Batch) -> torch.Tensor:
        """(H, B, 6, 6) Mandel matrices in GPa."""
        _, out = self.gnn(b)
        return self.head(mean_pool(out, b))

    def forward_with_error(self, b: Batch) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Tensors as ``forward`` and (B, 2) predicted log |error| of log10 K / G (None without the head)."""
        _, out = self.gnn(b)
        pooled = mean_pool(out, b)
        # detached: the error model reads the features and never shapes them (the tensors are the same with it)
        err = self.error(invariants(pooled.detach(), self.gnn.irreps_out)) if self.error is not None else None
        return self.head(pooled), err


class CrystalVAE(nn.Module):
    def __init__(self, *, latent_dim: int = 32, hidden: str = "32x0e + 8x1o + 8x2e", enc_out: str = "32x0e + 8x1o + 8x2e",
                 lmax: int = 2, n_layers: int = 2, cutoff: float = 5.0, max_atoms: int = 20,
                 score_hidden: str = "32x0e + 8x1o + 8x2e", score_layers: int = 3,
                 sigma_min: float = 0.01, sigma_max: float = 2.0, avg_neighbours: float = 30.0):
        super().__init__()
        self.latent_dim, self.max_atoms, self.cutoff = latent_dim, max_atoms, cutoff
        self.sigma_min, self.sigma_max = sigma_min, sigma_max
        self.encoder = EquivariantGNN(hidden, enc_out, lmax=lmax, n_layers=n_layers, cutoff=cutoff,
                                      avg_neighbours=avg_neighbours)
        inv_dim = sum(mul for mul, _ in self.encoder.irreps_out)
        self.to_latent = _mlp([inv_dim + MAX_ELEMENTS, 128, 2 * latent_dim])
        self.decoder = _mlp([latent_dim + MAX_ELEMENTS, 256, 256])
        self.n_atoms_head = nn.Linear(256, max_atoms + 1)
        self.comp_head = nn.Linear(256, MAX_Z + 1)
        self.lattice_head = nn.Linear(256, 6)
        ctx = latent_dim + MAX_ELEMENTS + 1
        self.score = EquivariantGNN(score_hidden, "1x1o", lmax=lmax, n_layers=score_layers, cutoff=cutoff,
                                    context_dim=ctx, avg_neighbours=avg_neighbours)
        # lattice normalisation (lengths / N^(1/3), angles): set from training data
        self.register_buffer("lat_mean", torch.zeros(6))
        self.register_buffer("lat_std", torch.ones(6))

    # -- encoder ---------------------------------------------------------------
    def encode(self, b: Batch, cond: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        _, out = self.encoder(b)
        h = invariants(mean_pool(out, b), self.encoder.irreps_out)
        mu, logvar = self.to_latent(torch.cat([h, cond], -1)).chunk(2, dim=-1)
        return mu, logvar.clamp(-10, 5)

    # -- decoder ---------------------------------------------------------------
    def decode_global(self, z: torch.Tensor, cond: torch.Tensor):
        h = self.decoder(torch.cat([z, cond], -1))
        return self.n_atoms_head(h), self.comp_head(h), self.lattice_head(h)

    def lattice_target(self, lattice: torch.Tensor, n_atoms: torch.Tensor) -> torch.Tensor:
        p = lattice_params(lattice)
        p = torch.cat([p[:, :3] / n_atoms[:, None].to(p.dtype) ** (1 / 3), p[:, 3:]], -1)
        return (p - self.lat_mean) / self.lat_std

    def lattice_from_output(self, out: torch.Tensor, n_atoms: torch.Tensor) -> torch.Tensor:
        p = out * self.lat_std + self.lat_mean
        lengths = p[:, :3].clamp_min(0.5) * n_atoms[:, None].to(p.dtype) ** (1 / 3)
        angles = p[:, 3:].clamp(30.0, 150.0)
        return torch.cat([lengths, angles], -1)

    def score_fn(self, b: Batch, z: torch.Tensor, cond: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """Per-atom Cartesian vector, trained to equal -noise/sigma (so score = out / sigma)."""
        ctx = torch.cat([z, cond, torch.log(sigma)[:, None]], -1)[b.batch]
        _, out = self.score(b, context=ctx)
        return out

    # -- training loss ---------------------------------------------------------
    def loss(self, b: Batch, n_elements: torch.Tensor, beta: float = 0.01, generator=None) -> dict:
        cond = n_elements_onehot(n_elements)
        mu, logvar = self.encode(b, cond)
        z = mu + torch.randn(mu.shape, generator=generator) * torch.exp(0.5 * logvar)
        kl = -0.5 * torch.mean(torch.sum(1 + logvar - mu ** 2 - logvar.exp(), -1))
        na_logits, comp_logits, lat = self.decode_global(z, cond)
        l_na = nn.functional.cross_entropy(na_logits, b.n_atoms.clamp(max=self.max_atoms))
        frac = torch.zeros(b.n_graphs, MAX_Z + 1)
        frac.index_add_(0, b.batch, nn.functional.one_hot(b.species, MAX_Z + 1).float())
        frac = frac / b.n_atoms[:, None]
        l_comp = -(frac * nn.functional.log_softmax(comp_logits, -1)).sum(-1).mean()
        l_lat = nn.functional.mse_loss(lat, self.lattice_target(b.lattice, b.n_atoms))
        # denoising score matching on Cartesian positions, log-uniform noise levels
        u = torch.rand(b.n_graphs, generator=generator)
        sigma = torch.exp(math.log(self.sigma_min) + u * (math.log(self.sigma_max) - math.log(self.sigma_min)))
        noise = torch.randn(b.pos.shape, generator=generator) * sigma[b.batch][:, None]
        inv = torch.linalg.inv(b.lattice)
        frac_noisy = torch.einsum("ni,nij->nj", b.pos + noise, inv[b.batch]) % 1.0
        nb = batch_from_tensors(b.species, frac_noisy, b.lattice, b.n_atoms, self.cutoff)
        pred = self.score_fn(nb, z, cond, sigma)
        # target: displacement back to the clean position, minimum image (as CDVAE)
        clean = torch.einsum("ni,nij->nj", b.pos, inv[b.batch])
        dfrac = clean - frac_noisy
        dfrac = dfrac - torch.round(dfrac)
        back = torch.einsum("ni,nij->nj", dfrac, b.lattice[b.batch])
        target = back / sigma[b.batch][:, None]
        l_score = ((pred - target) ** 2).sum(-1).mean()
        total = l_na + l_comp + 10 * l_lat + l_score + beta * kl
        return {"loss": total, "n_atoms": l_na.detach(), "composition": l_comp.detach(), "lattice": l_lat.detach(),
                "score": l_score.detach(), "kl": kl.detach()}
