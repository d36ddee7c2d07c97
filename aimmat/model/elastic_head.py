"""Elastic-tensor head: equivariant irreps -> Cartesian C_ijkl -> Mandel 6x6
-> positive definite by a spectral map.

The 21 independent components of a tensor with minor and major symmetry
decompose into ``2x0e + 2x2e + 1x4e``; e3nn's ``ReducedTensorProducts``
gives the change of basis to the Cartesian rank-4 tensor. In Mandel
notation (shear rows and columns scaled by sqrt 2) a rotation acts as an
orthogonal 6x6 matrix Q: M -> Q M Q^T. A spectral map
f(M) = V diag(f(lambda)) V^T commutes with that action, so the PD output
stays equivariant.

torch's ``eigh`` backward divides by eigenvalue gaps and is infinite for
degenerate spectra, which every cubic or hexagonal crystal has. The
``SpectralMap`` below therefore implements the Daleckii-Krein derivative
(divided differences, f' on the diagonal), which is finite and exact at
degeneracies. Nothing in torch or e3nn provides it.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch
from e3nn import o3
from torch import nn

IRREPS_ELASTIC = o3.Irreps("2x0e + 2x2e + 1x4e")
VOIGT_PAIRS = [(0, 0), (1, 1), (2, 2), (1, 2), (0, 2), (0, 1)]
MANDEL_W = np.array([1, 1, 1, 2 ** 0.5, 2 ** 0.5, 2 ** 0.5])
GPA_UNIT = 100.0  # network outputs are in units of 100 GPa


@lru_cache(maxsize=None)
def _change_of_basis() -> torch.Tensor:
    return o3.ReducedTensorProducts("ijkl=jikl=klij", i="1o").change_of_basis.detach().clone()


def irreps_to_cartesian(x: torch.Tensor) -> torch.Tensor:
    """(..., 21) irreps coefficients -> (..., 3, 3, 3, 3)."""
    q = _change_of_basis().to(dtype=x.dtype, device=x.device)
    return torch.einsum("...a,aijkl->...ijkl", x, q)


def cartesian_to_mandel(c: torch.Tensor) -> torch.Tensor:
    i = [p[0] for p in VOIGT_PAIRS]
    j = [p[1] for p in VOIGT_PAIRS]
    m = c[..., i, j, :, :][..., :, i, j]
    w = torch.as_tensor(MANDEL_W, dtype=c.dtype, device=c.device)
    return m * w[:, None] * w[None, :]


def mandel_to_voigt(m: torch.Tensor) -> torch.Tensor:
    w = torch.as_tensor(MANDEL_W, dtype=m.dtype, device=m.device)
    return m / (w[:, None] * w[None, :])


def voigt_to_mandel(v: torch.Tensor) -> torch.Tensor:
    w = torch.as_tensor(MANDEL_W, dtype=v.dtype, device=v.device)
    return v * w[:, None] * w[None, :]


class SpectralMap(torch.autograd.Function):
    """f(M) = V diag(softplus(lambda) + floor) V^T with a degeneracy-safe backward."""

    @staticmethod
    def forward(ctx, m: torch.Tensor, floor: float):
        lam, v = torch.linalg.eigh(m)
        f = nn.functional.softplus(lam) + floor
        ctx.save_for_backward(lam, v, f)
        return v @ torch.diag_embed(f) @ v.transpose(-1, -2)

    @staticmethod
    def backward(ctx, g: torch.Tensor):
        lam, v, f = ctx.saved_tensors
        df = torch.sigmoid(lam)
        dl = lam[..., :, None] - lam[..., None, :]
        dfv = f[..., :, None] - f[..., None, :]
        scale = lam.abs().amax(-1, keepdim=True)[..., None].clamp_min(1.0)
        close = dl.abs() <= 1e-6 * scale
        mean_df = (df[..., :, None] + df[..., None, :]) / 2
        gamma = torch.where(close, mean_df, dfv / torch.where(close, torch.ones_like(dl), dl))
        gs = (g + g.transpose(-1, -2)) / 2
        inner = v.transpose(-1, -2) @ gs @ v
        return v @ (gamma * inner) @ v.transpose(-1, -2), None


def make_pd(m: torch.Tensor, floor: float = 1e-3) -> torch.Tensor:
    m = (m + m.transpose(-1, -2)) / 2
    return SpectralMap.apply(m, floor)


class ElasticHead(nn.Module):
    """Pooled equivariant features -> ensemble of Mandel matrices (GPa).

    ``pd=False`` is the unconstrained ablation (same network, no spectral map).
    """

    def __init__(self, irreps_in: o3.Irreps, n_heads: int = 4, pd: bool = True, floor: float = 1e-3):
        super().__init__()
        self.pd, self.floor = pd, floor
        self.heads = nn.ModuleList(o3.Linear(irreps_in, IRREPS_ELASTIC) for _ in range(n_heads))

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        """(B, dim) -> (H, B, 6, 6) Mandel, GPa."""
        out = []
        for head in self.heads:
            m = cartesian_to_mandel(irreps_to_cartesian(head(pooled)))
            out.append(make_pd(m, self.floor) if self.pd else (m + m.transpose(-1, -2)) / 2)
        return torch.stack(out) * GPA_UNIT


def vrh_torch(voigt: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Hill bulk and shear moduli of (..., 6, 6) Voigt stiffness tensors, differentiable.

    The same formulas as pymatgen's ``ElasticTensor.k_vrh`` / ``g_vrh`` (a
    test checks them against it); written out because pymatgen works on
    numpy arrays and training needs gradients. Valid for positive definite
    input (the compliance is its inverse).
    """
    c = voigt
    s = torch.linalg.inv(c)
    d = lambda m, i: m[..., i, i]  # noqa: E731
    o = lambda m, i, j: m[..., i, j]  # noqa: E731
    k_v = (d(c, 0) + d(c, 1) + d(c, 2) + 2 * (o(c, 0, 1) + o(c, 1, 2) + o(c, 0, 2))) / 9
    g_v = (d(c, 0) + d(c, 1) + d(c, 2) - (o(c, 0, 1) + o(c, 1, 2) + o(c, 0, 2))
           + 3 * (d(c, 3) + d(c, 4) + d(c, 5))) / 15
    k_r = 1 / (d(s, 0) + d(s, 1) + d(s, 2) + 2 * (o(s, 0, 1) + o(s, 1, 2) + o(s, 0, 2)))
    g_r = 15 / (4 * (d(s, 0) + d(s, 1) + d(s, 2)) - 4 * (o(s, 0, 1) + o(s, 1, 2) + o(s, 0, 2))
                + 3 * (d(s, 3) + d(s, 4) + d(s, 5)))
    return (k_v + k_r) / 2, (g_v + g_r) / 2
