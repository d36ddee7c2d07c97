"""The equivariant message-passing network: shapes, pooling, invariant
summaries, locality (nothing beyond the cutoff matters, smoothly), context
input, and equivariance of vector and tensor outputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from e3nn import o3
from pymatgen.core import Lattice, Structure
from scipy.spatial.transform import Rotation

from aimmat.model.graph import Batch, from_structures
from aimmat.model.nets import EquivariantGNN, invariants, mean_pool

CUTOFF = 3.5
HIDDEN = "8x0e + 2x1o + 2x2e"
OUT = "4x0e + 1x1o + 1x2e"


def crystal() -> Structure:
    return Structure(Lattice.from_parameters(3.1, 3.4, 5.2, 80, 95, 110), ["Ga", "As", "As", "O"],
                     [[0, 0, 0], [0.25, 0.3, 0.2], [0.6, 0.5, 0.7], [0.1, 0.8, 0.4]])


@pytest.fixture(scope="module")
def gnn():
    torch.manual_seed(0)
    return EquivariantGNN(HIDDEN, OUT, lmax=2, n_layers=2, cutoff=CUTOFF, avg_neighbours=10.0).eval()


def _pair_batch(distance: float, direction=(1.0, 0.0, 0.0)) -> Batch:
    """Two atoms in a huge box, joined by one edge each way (no periodic images within reach)."""
    d = torch.tensor(direction) / torch.linalg.norm(torch.tensor(direction)) * distance
    pos = torch.stack([torch.zeros(3), d])
    return Batch(species=torch.tensor([14, 8]), pos=pos, lattice=torch.eye(3)[None] * 50.0,
                 batch=torch.zeros(2, dtype=torch.long), edge_src=torch.tensor([0, 1]), edge_dst=torch.tensor([1, 0]),
                 edge_shift=torch.zeros(2, 3), n_atoms=torch.tensor([2]))


def _no_edges(b: Batch) -> Batch:
    empty = torch.zeros(0, dtype=torch.long)
    return Batch(species=b.species, pos=b.pos, lattice=b.lattice, batch=b.batch, edge_src=empty, edge_dst=empty,
                 edge_shift=torch.zeros(0, 3), n_atoms=b.n_atoms)


def test_output_shapes_and_irreps(gnn):
    b = from_structures([crystal(), crystal()], CUTOFF)
    hidden, out = gnn(b)
    assert gnn.irreps_out == o3.Irreps(OUT)
    assert out.shape == (8, o3.Irreps(OUT).dim) and hidden.shape == (8, gnn.irreps_hidden.dim)
    assert torch.isfinite(out).all()
    # the same crystal twice in a batch: the same features
    assert torch.allclose(out[:4], out[4:], atol=1e-6)


def test_species_matter(gnn):
    s = crystal()
    other = Structure(s.lattice, ["Ga", "As", "As", "S"], s.frac_coords)
    a = gnn(from_structures([s], CUTOFF))[1]
    b = gnn(from_structures([other], CUTOFF))[1]
    assert not torch.allclose(a, b, atol=1e-4)


def test_messages_vanish_smoothly_at_the_cutoff(gnn):
    with torch.no_grad():
        alone = gnn(_no_edges(_pair_batch(1.0)))[1]
        near_cut = gnn(_pair_batch(CUTOFF - 1e-3))[1]
        inside = gnn(_pair_batch(2.0))[1]
    # an edge just inside the cutoff contributes almost nothing: no jump when a neighbour crosses it
    assert torch.allclose(near_cut, alone, atol=1e-4)
    assert not torch.allclose(inside, alone, atol=1e-3)


def test_isolated_atoms_of_one_species_get_equal_features(gnn):
    b = _pair_batch(1.0)
    b = Batch(species=torch.tensor([14, 14]), pos=b.pos, lattice=b.lattice, batch=b.batch, edge_src=b.edge_src,
              edge_dst=b.edge_dst, edge_shift=b.edge_shift, n_atoms=b.n_atoms)
    with torch.no_grad():
        out = gnn(_no_edges(b))[1]
    assert torch.allclose(out[0], out[1])
    # without neighbours there is no direction: vector and tensor outputs are zero
    assert torch.allclose(out[:, 4:], torch.zeros_like(out[:, 4:]), atol=1e-7)


def test_permuting_atoms_permutes_the_features(gnn):
    s = crystal()
    perm = [2, 0, 3, 1]
    sp = Structure(s.lattice, [s.species[i] for i in perm], s.frac_coords[perm])
    with torch.no_grad():
        a = gnn(from_structures([s], CUTOFF))[1]
        b = gnn(from_structures([sp], CUTOFF))[1]
    assert torch.allclose(a[perm], b, atol=1e-5)


def test_vector_and_tensor_outputs_rotate_and_scalars_do_not(gnn):
    s = crystal()
    r = Rotation.random(random_state=3).as_matrix()
    moved = Structure(Lattice(s.lattice.matrix @ r.T), s.species, s.cart_coords @ r.T + np.array([0.3, -0.7, 1.1]),
                      coords_are_cartesian=True)
    with torch.no_grad():
        a = gnn(from_structures([s], CUTOFF))[1]
        b = gnn(from_structures([moved], CUTOFF))[1]
    d = o3.Irreps(OUT).D_from_matrix(torch.tensor(r, dtype=torch.float32))
    assert torch.allclose(a @ d.T, b, atol=1e-4)
    assert not torch.allclose(a, b, atol=1e-3)  # the l > 0 parts really moved
    assert torch.allclose(a[:, :4], b[:, :4], atol=1e-4)


def test_context_enters_only_when_the_network_has_a_context_input():
    torch.manual_seed(1)
    net = EquivariantGNN(HIDDEN, OUT, lmax=2, n_layers=1, cutoff=CUTOFF, context_dim=3).eval()
    b = from_structures([crystal()], CUTOFF)
    with torch.no_grad():
        base = net(b)[1]
        ctx = net(b, context=torch.ones(4, 3))[1]
        per_atom = net(b, context=torch.tensor([[1.0, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 1]]))[1]
    assert not torch.allclose(base, ctx, atol=1e-4)
    assert not torch.allclose(ctx, per_atom, atol=1e-4)  # the context is per atom
    plain = EquivariantGNN(HIDDEN, OUT, lmax=2, n_layers=1, cutoff=CUTOFF).eval()
    with torch.no_grad():
        assert torch.equal(plain(b)[1], plain(b, context=torch.ones(4, 3))[1])


def test_gradients_reach_positions_and_weights(gnn):
    b = from_structures([crystal()], CUTOFF)
    pos = b.pos.clone().requires_grad_()
    out = gnn(b.with_pos(pos))[1]
    out[:, :4].sum().backward()
    assert torch.isfinite(pos.grad).all() and pos.grad.abs().max() > 0
    # scalar outputs are translation invariant: the forces sum to zero
    assert torch.allclose(pos.grad.sum(0), torch.zeros(3), atol=1e-4)
    assert any(p.grad is not None and p.grad.abs().max() > 0 for p in gnn.parameters())
    gnn.zero_grad()


def test_mean_pool_averages_per_crystal():
    b = from_structures([crystal(), Structure(Lattice.cubic(3.0), ["Cu"], [[0, 0, 0]])], CUTOFF)
    x = torch.arange(5 * 2, dtype=torch.float32).reshape(5, 2)
    pooled = mean_pool(x, b)
    assert torch.allclose(pooled, torch.stack([x[:4].mean(0), x[4]]))


def test_invariants_are_scalars_and_norms():
    irreps = o3.Irreps("2x0e + 1x1o + 2x2e")
    x = torch.zeros(1, irreps.dim, dtype=torch.float64)
    x[0, :2] = torch.tensor([1.5, -2.0])
    x[0, 2:5] = torch.tensor([3.0, 0.0, 4.0])  # |v| = 5
    x[0, 5:10] = torch.tensor([0.0, 1.0, 0.0, 0.0, 0.0])  # |t1| = 1; t2 = 0
    inv = invariants(x, irreps)
    assert inv.shape == (1, 2 + 1 + 2)
    # norms, smoothed at zero (sqrt(|x|^2 + 1e-8) - 1e-4): within 1e-4 of the plain norm
    assert torch.allclose(inv[0], torch.tensor([1.5, -2.0, 5.0, 1.0, 0.0], dtype=torch.float64), atol=1.1e-4)
    assert inv[0, :2].tolist() == [1.5, -2.0]  # scalars pass unchanged
    assert inv[0, 4].abs() < 1e-12  # exactly zero for a zero block (cubic crystals have zero l=2 parts)


def test_invariants_are_rotation_invariant_and_smooth_at_zero():
    irreps = o3.Irreps("3x0e + 2x1o + 1x2e + 1x4e")
    torch.manual_seed(2)
    x = irreps.randn(4, -1, dtype=torch.float64)
    d = irreps.D_from_matrix(torch.tensor(Rotation.random(random_state=1).as_matrix()))
    assert torch.allclose(invariants(x @ d.T, irreps), invariants(x, irreps), atol=1e-10)
    zero = torch.zeros(1, irreps.dim, dtype=torch.float64, requires_grad=True)
    invariants(zero, irreps).sum().backward()
    assert torch.isfinite(zero.grad).all()  # a plain norm would give NaN at zero
