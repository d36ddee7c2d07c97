"""E(3)-equivariant message passing (e3nn): the building block of the
encoder and of the decoder's coordinate score network.

One layer: for every edge, spherical harmonics of the edge direction and a
radial basis of its length; a tensor product of the neighbour's features
with the harmonics, weighted per edge by an MLP of the radial basis; summed
over neighbours, plus a self-interaction; then a gated nonlinearity (scalars
through SiLU, higher orders multiplied by sigmoid gates). Equivariance holds
by construction (e3nn); tests check it numerically.
"""

from __future__ import annotations

import torch
from e3nn import o3
from e3nn.math import soft_one_hot_linspace
from e3nn.nn import FullyConnectedNet, Gate
from torch import nn

from aimmat.model.graph import MAX_Z, Batch, edge_vectors


def _gate(hidden: o3.Irreps) -> Gate:
    scalars = o3.Irreps([(m, ir) for m, ir in hidden if ir.l == 0])
    gated = o3.Irreps([(m, ir) for m, ir in hidden if ir.l > 0])
    gates = o3.Irreps(f"{gated.num_irreps}x0e") if gated.num_irreps else o3.Irreps("")
    return Gate(scalars, [nn.functional.silu], gates, [torch.sigmoid], gated)


class Conv(nn.Module):
    """Point convolution: sum over neighbours of TP(x_nb, Y(r_hat); w(|r|))."""

    def __init__(self, irreps_in, irreps_out, irreps_sh, n_basis: int, radial_hidden: int, avg_neighbours: float):
        super().__init__()
        self.irreps_in, self.irreps_out = o3.Irreps(irreps_in), o3.Irreps(irreps_out)
        self.tp = o3.FullyConnectedTensorProduct(self.irreps_in, irreps_sh, self.irreps_out, shared_weights=False)
        self.radial = FullyConnectedNet([n_basis, radial_hidden, self.tp.weight_numel], nn.functional.silu)
        self.self_int = o3.Linear(self.irreps_in, self.irreps_out)
        self.norm = avg_neighbours ** 0.5

    def forward(self, x, sh, emb, src, dst):
        msg = self.tp(x[dst], sh, self.radial(emb))
        agg = torch.zeros(x.shape[0], msg.shape[1], dtype=msg.dtype, device=msg.device)
        agg.index_add_(0, src, msg)
        return self.self_int(x) + agg / self.norm


class EquivariantGNN(nn.Module):
    """Species (+ optional per-atom scalar context) -> per-atom irreps.

    ``hidden``: irreps of the hidden features; ``out``: irreps of the last
    layer's output (no gate on it).
    """

    def __init__(self, hidden: str, out: str, *, lmax: int, n_layers: int, cutoff: float, n_basis: int = 10,
                 radial_hidden: int = 32, embed_dim: int = 32, context_dim: int = 0, avg_neighbours: float = 20.0):
        super().__init__()
        self.cutoff, self.n_basis = cutoff, n_basis
        self.irreps_sh = o3.Irreps.spherical_harmonics(lmax)
        self.embed = nn.Embedding(MAX_Z + 1, embed_dim)
        self.context = nn.Linear(context_dim, embed_dim) if context_dim else None
        irreps = o3.Irreps(f"{embed_dim}x0e")
        self.layers = nn.ModuleList()
        hidden = o3.Irreps(hidden)
        for _ in range(n_layers):
            gate = _gate(hidden)
            conv = Conv(irreps, gate.irreps_in, self.irreps_sh, n_basis, radial_hidden, avg_neighbours)
            self.layers.append(nn.ModuleList([conv, gate]))
            irreps = gate.irreps_out
        self.out = Conv(irreps, out, self.irreps_sh, n_basis, radial_hidden, avg_neighbours)
        self.irreps_hidden, self.irreps_out = irreps, o3.Irreps(out)

    def forward(self, b: Batch, context: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns (last hidden features, output features), both per atom."""
        vec = edge_vectors(b)
        length = torch.linalg.norm(vec, dim=-1)
        sh = o3.spherical_harmonics(self.irreps_sh, vec, normalize=True, normalization="component")
        emb = soft_one_hot_linspace(length, 0.0, self.cutoff, self.n_basis, basis="smooth_finite", cutoff=True)
        emb = emb * self.n_basis ** 0.5
        x = self.embed(b.species)
        if self.context is not None and context is not None:
            x = x + self.context(context)
        for conv, gate in self.layers:
            x = gate(conv(x, sh, emb, b.edge_src, b.edge_dst))
        return x, self.out(x, sh, emb, b.edge_src, b.edge_dst)


def mean_pool(x: torch.Tensor, b: Batch) -> torch.Tensor:
    out = torch.zeros(b.n_graphs, x.shape[1], dtype=x.dtype, device=x.device)
    out.index_add_(0, b.batch, x)
    return out / b.n_atoms.to(x.dtype)[:, None]


def invariants(x: torch.Tensor, irreps: o3.Irreps) -> torch.Tensor:
    """Scalars of ``x`` plus the norm of every higher-order irrep: an invariant summary."""
    parts = []
    for (mul, ir), sl in zip(irreps, irreps.slices()):
        block = x[..., sl]
        if ir.l == 0:
            parts.append(block)
        else:
            sq = block.reshape(*block.shape[:-1], mul, ir.dim).pow(2).sum(-1)
            parts.append((sq + 1e-8).sqrt() - 1e-4)  # smooth at zero (cubic crystals have zero l=2)
    return torch.cat(parts, dim=-1)
