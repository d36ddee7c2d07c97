"""Periodic crystal graphs and their batching.

A batch holds Cartesian positions, lattices and, per edge, the source and
destination atom and the integer lattice shift of the destination image.
Edge vectors are recomputed from positions and lattices on every forward
pass (``edge_vectors``), so that rotating or translating the input moves
them consistently and gradients flow to positions.

Two neighbour searches:
- ``from_structures``: pymatgen's ``Structure.get_neighbor_list`` (fast C
  code) for data sets and ranking;
- ``radius_graph_pbc``: torch, for the score network during sampling,
  where positions change at every step. Written here because neither
  pymatgen nor e3nn searches neighbours of torch tensors with periodic
  images; cells during sampling are small (<= ~20 atoms), so an explicit
  image enumeration is cheap.

Never change torch's global default dtype here: CHGNet breaks under float64.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch

MAX_Z = 94  # species vocabulary: H .. Pu


@dataclass
class Batch:
    species: torch.Tensor  # (N,) atomic numbers
    pos: torch.Tensor  # (N, 3) Cartesian, Angstrom
    lattice: torch.Tensor  # (B, 3, 3) rows are lattice vectors
    batch: torch.Tensor  # (N,) crystal index of each atom
    edge_src: torch.Tensor  # (E,)
    edge_dst: torch.Tensor  # (E,)
    edge_shift: torch.Tensor  # (E, 3) integer image of dst, in lattice units
    n_atoms: torch.Tensor  # (B,)

    @property
    def n_graphs(self) -> int:
        return int(self.lattice.shape[0])

    def to(self, device) -> "Batch":
        return Batch(**{k: getattr(self, k).to(device) for k in self.__dataclass_fields__})

    def with_pos(self, pos: torch.Tensor) -> "Batch":
        return replace(self, pos=pos)


def edge_vectors(b: Batch) -> torch.Tensor:
    """dst position (with its lattice image) minus src position."""
    cell_of_edge = b.lattice[b.batch[b.edge_src]]
    shift = torch.einsum("ei,eij->ej", b.edge_shift.to(b.pos.dtype), cell_of_edge)
    return b.pos[b.edge_dst] + shift - b.pos[b.edge_src]


def _cat_graphs(species, pos, lattices, edges) -> Batch:
    n = [len(s) for s in species]
    offsets = np.cumsum([0] + n[:-1])
    src = np.concatenate([e[0] + o for e, o in zip(edges, offsets)]) if edges else np.zeros(0, int)
    dst = np.concatenate([e[1] + o for e, o in zip(edges, offsets)]) if edges else np.zeros(0, int)
    shifts = np.concatenate([e[2] for e in edges]) if edges else np.zeros((0, 3))
    return Batch(
        species=torch.as_tensor(np.concatenate(species), dtype=torch.long),
        pos=torch.as_tensor(np.concatenate(pos), dtype=torch.float32),
        lattice=torch.as_tensor(np.stack(lattices), dtype=torch.float32),
        batch=torch.repeat_interleave(torch.arange(len(n)), torch.as_tensor(n)),
        edge_src=torch.as_tensor(src, dtype=torch.long),
        edge_dst=torch.as_tensor(dst, dtype=torch.long),
        edge_shift=torch.as_tensor(shifts, dtype=torch.float32),
        n_atoms=torch.as_tensor(n, dtype=torch.long),
    )


def structure_edges(structure, cutoff: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Edges of one pymatgen Structure: (src, dst, integer image shift)."""
    centers, points, images, dists = structure.get_neighbor_list(cutoff)
    keep = dists > 1e-8
    return centers[keep].astype(int), points[keep].astype(int), images[keep].astype(float)


def from_structures(structures, cutoff: float, edges=None) -> Batch:
    """Batch of pymatgen Structures; ``edges`` may carry precomputed edge lists."""
    if edges is None:
        edges = [structure_edges(s, cutoff) for s in structures]
    for s in structures:
        if any(sp.Z > MAX_Z for sp in s.species):
            raise ValueError(f"{s.composition.reduced_formula}: elements beyond Z={MAX_Z} are not in the model's vocabulary")
    return _cat_graphs(
        [np.array([sp.Z for sp in s.species]) for s in structures],
        [s.cart_coords for s in structures],
        [s.lattice.matrix for s in structures],
        list(edges),
    )


def _images(lattice: torch.Tensor, cutoff: float) -> torch.Tensor:
    # Number of images needed along each axis: cutoff times the norm of the
    # reciprocal vector (without 2 pi) bounds the plane spacing.
    inv = torch.linalg.inv(lattice.double())
    n = torch.ceil(cutoff * torch.linalg.norm(inv, dim=0)).long().tolist()
    rng = [torch.arange(-k, k + 1) for k in n]
    return torch.cartesian_prod(*rng).to(lattice.dtype)


def radius_graph_pbc(pos: torch.Tensor, lattice: torch.Tensor, n_atoms: torch.Tensor, cutoff: float):
    """Edges within ``cutoff`` including periodic images, for small cells.

    Returns (src, dst, shift) with global atom indices.
    """
    srcs, dsts, shifts = [], [], []
    start = 0
    for g, n in enumerate(n_atoms.tolist()):
        p = pos[start:start + n]
        imgs = _images(lattice[g], cutoff)  # (I, 3)
        disp = imgs @ lattice[g]  # (I, 3)
        # vec[i, j, k] = p[j] + disp[k] - p[i]
        vec = p[None, :, None, :] + disp[None, None, :, :] - p[:, None, None, :]
        d = torch.linalg.norm(vec, dim=-1)
        mask = (d < cutoff) & (d > 1e-6)
        i, j, k = torch.nonzero(mask, as_tuple=True)
        srcs.append(i + start)
        dsts.append(j + start)
        shifts.append(imgs[k])
        start += n
    return torch.cat(srcs), torch.cat(dsts), torch.cat(shifts)


def batch_from_tensors(species, frac, lattice, n_atoms, cutoff: float) -> Batch:
    """Batch from torch tensors (fractional coordinates), edges by ``radius_graph_pbc``."""
    batch = torch.repeat_interleave(torch.arange(len(n_atoms), device=species.device), n_atoms)
    pos = torch.einsum("ni,nij->nj", frac, lattice[batch])
    src, dst, shift = radius_graph_pbc(pos.detach(), lattice.detach(), n_atoms, cutoff)
    return Batch(species=species, pos=pos, lattice=lattice, batch=batch, edge_src=src,
                 edge_dst=dst, edge_shift=shift, n_atoms=n_atoms)


def lattice_params(lattice: torch.Tensor) -> torch.Tensor:
    """(B,3,3) -> (B,6): lengths (A) and angles (degrees)."""
    a = torch.linalg.norm(lattice, dim=-1)
    def ang(i, j):
        c = (lattice[:, i] * lattice[:, j]).sum(-1) / (a[:, i] * a[:, j])
        return torch.rad2deg(torch.arccos(c.clamp(-1, 1)))
    return torch.stack([a[:, 0], a[:, 1], a[:, 2], ang(1, 2), ang(0, 2), ang(0, 1)], dim=-1)


def lattice_from_params(p: torch.Tensor) -> torch.Tensor:
    """(B,6) lengths + angles (degrees) -> (B,3,3), pymatgen's convention (a along x-ish)."""
    a, b, c = p[:, 0], p[:, 1], p[:, 2]
    al, be, ga = (torch.deg2rad(p[:, i]) for i in (3, 4, 5))
    val = (torch.cos(al) * torch.cos(be) - torch.cos(ga)) / (torch.sin(al) * torch.sin(be))
    val = val.clamp(-1 + 1e-6, 1 - 1e-6)
    gstar = torch.arccos(val)
    zero = torch.zeros_like(a)
    va = torch.stack([a * torch.sin(be), zero, a * torch.cos(be)], -1)
    vb = torch.stack([-b * torch.sin(al) * torch.cos(gstar), b * torch.sin(al) * torch.sin(gstar), b * torch.cos(al)], -1)
    vc = torch.stack([zero, zero, c], -1)
    return torch.stack([va, vb, vc], dim=1)


__all__ = [
    "Batch", "MAX_Z", "edge_vectors", "from_structures", "structure_edges", "radius_graph_pbc",
    "batch_from_tensors", "lattice_params", "lattice_from_params",
]
