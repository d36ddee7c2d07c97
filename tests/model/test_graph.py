"""Periodic crystal graphs: both neighbour searches against ASE's neighbour
list (an independent implementation), batching offsets, edge vectors and
the lattice parameter conversions against pymatgen."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase.neighborlist import neighbor_list
from pymatgen.core import Lattice, Structure
from pymatgen.io.ase import AseAtomsAdaptor

from aimmat.model.graph import (
    MAX_Z,
    Batch,
    batch_from_tensors,
    edge_vectors,
    from_structures,
    lattice_from_params,
    lattice_params,
    radius_graph_pbc,
    structure_edges,
)

CUTOFF = 4.0


def nacl() -> Structure:
    """Rock salt, primitive fcc cell."""
    a = 5.64
    return Structure(Lattice([[0, a / 2, a / 2], [a / 2, 0, a / 2], [a / 2, a / 2, 0]]), ["Na", "Cl"],
                     [[0, 0, 0], [0.5, 0.5, 0.5]])


def triclinic() -> Structure:
    return Structure(Lattice.from_parameters(3.1, 3.4, 5.2, 80, 95, 110), ["Ga", "As", "As", "O"],
                     [[0, 0, 0], [0.25, 0.3, 0.2], [0.6, 0.5, 0.7], [0.1, 0.8, 0.4]])


def oblique() -> Structure:
    # a strongly sheared cell: the image range along a must come from the plane spacing, not |a|
    return Structure(Lattice([[3.0, 0, 0], [2.85, 0.6, 0], [0.3, 0.2, 2.9]]), ["Si", "C"],
                     [[0, 0, 0], [0.4, 0.55, 0.5]])


def reference_edges(s: Structure, cutoff: float) -> set[tuple[int, int, tuple[int, int, int]]]:
    """(src, dst, image of dst) from ASE's neighbour list, which is independent of pymatgen and torch."""
    i, j, shift = neighbor_list("ijS", AseAtomsAdaptor.get_atoms(s), cutoff)
    return {(int(a), int(b), tuple(int(x) for x in sh)) for a, b, sh in zip(i, j, shift)}


def edge_set(src, dst, shift) -> set[tuple[int, int, tuple[int, int, int]]]:
    src, dst = np.asarray(src), np.asarray(dst)
    shift = np.rint(np.asarray(shift)).astype(int)
    return {(int(a), int(b), tuple(int(x) for x in sh)) for a, b, sh in zip(src, dst, shift)}


def safe_cutoff(s: Structure, lo: float = 3.5, hi: float = 4.5) -> float:
    """Middle of the widest gap between pair distances in [lo, hi]: float32 and
    float64 searches then agree on which pairs are inside."""
    d = np.unique(s.get_neighbor_list(hi)[3])
    d = np.concatenate([[lo], d[(d > lo) & (d < hi)], [hi]])
    k = int(np.argmax(np.diff(d)))
    assert d[k + 1] - d[k] > 0.005
    return float(d[k] + d[k + 1]) / 2


@pytest.mark.parametrize("make", [nacl, triclinic, oblique])
def test_both_neighbour_searches_agree_with_ase(make):
    s = make()
    cutoff = safe_cutoff(s)
    ref = reference_edges(s, cutoff)
    assert len(ref) > 4 * len(s)  # many images: a real test of the periodic search
    assert edge_set(*structure_edges(s, cutoff)) == ref
    for dtype in (torch.float64, torch.float32):
        pos = torch.tensor(s.cart_coords, dtype=dtype)
        lat = torch.tensor(s.lattice.matrix, dtype=dtype)[None]
        assert edge_set(*radius_graph_pbc(pos, lat, torch.tensor([len(s)]), cutoff)) == ref, dtype


def test_rock_salt_has_six_nearest_and_twelve_next_nearest_neighbours():
    s = nacl()
    pos = torch.tensor(s.cart_coords, dtype=torch.float32)
    lat = torch.tensor(s.lattice.matrix, dtype=torch.float32)[None]
    for cutoff, per_atom in ((3.0, 6), (4.2, 18)):
        src, dst, _ = radius_graph_pbc(pos, lat, torch.tensor([2]), cutoff)
        assert torch.bincount(src).tolist() == [per_atom, per_atom]
        species = torch.tensor([11, 17])
        unlike = (species[src] != species[dst]).sum().item()
        assert unlike == 12  # the first shell is the other species, the second the same


def test_image_range_follows_plane_spacing_in_a_sheared_cell():
    # |b| is 2.9 A but the b planes are only 0.6 A apart: images up to |n_b| = 7 lie within 4 A
    s = oblique()
    cutoff = safe_cutoff(s)
    ref = reference_edges(s, cutoff)
    assert max(abs(sh[1]) for _, _, sh in ref) >= 5
    pos = torch.tensor(s.cart_coords, dtype=torch.float64)
    lat = torch.tensor(s.lattice.matrix, dtype=torch.float64)[None]
    assert edge_set(*radius_graph_pbc(pos, lat, torch.tensor([len(s)]), cutoff)) == ref


def test_single_atom_cell_connects_to_its_own_images_but_not_itself():
    s = Structure(Lattice.cubic(2.5), ["Cu"], [[0, 0, 0]])
    src, dst, shift = structure_edges(s, 3.0)
    # 6 face neighbours at 2.5 A; the next shell (2.5 sqrt 2 = 3.54 A) is outside
    assert len(src) == 6 and set(src) == {0} and set(dst) == {0}
    assert sorted(map(tuple, shift.astype(int))) == sorted(
        [(1, 0, 0), (-1, 0, 0), (0, 1, 0), (0, -1, 0), (0, 0, 1), (0, 0, -1)])
    s2, d2, sh2 = radius_graph_pbc(torch.zeros(1, 3), torch.eye(3)[None] * 2.5, torch.tensor([1]), 3.0)
    assert edge_set(s2, d2, sh2) == edge_set(src, dst, shift)


def test_edge_vectors_have_the_neighbour_distances():
    s = triclinic()
    b = from_structures([s], CUTOFF)
    d = torch.linalg.norm(edge_vectors(b), dim=-1).numpy()
    _, _, _, ref = s.get_neighbor_list(CUTOFF)
    assert np.allclose(np.sort(d), np.sort(ref[ref > 1e-8]), atol=1e-4)
    assert (d < CUTOFF).all() and (d > 0.5).all()


def test_batch_offsets_and_per_crystal_fields():
    a, c = nacl(), triclinic()
    b = from_structures([a, c], CUTOFF)
    assert b.n_graphs == 2 and b.n_atoms.tolist() == [2, 4]
    assert b.batch.tolist() == [0, 0, 1, 1, 1, 1]
    assert b.species.tolist() == [11, 17, 31, 33, 33, 8]
    assert b.pos.dtype == torch.float32 and b.lattice.shape == (2, 3, 3)
    assert torch.allclose(b.lattice[1], torch.tensor(c.lattice.matrix, dtype=torch.float32))
    # every edge stays inside its crystal
    assert torch.equal(b.batch[b.edge_src], b.batch[b.edge_dst])
    ea, ec = from_structures([a], CUTOFF), from_structures([c], CUTOFF)
    n_a = len(ea.edge_src)
    assert len(b.edge_src) == n_a + len(ec.edge_src)
    assert torch.equal(b.edge_src[n_a:], ec.edge_src + 2) and torch.equal(b.edge_dst[:n_a], ea.edge_dst)
    # the batched edge vectors are those of each crystal alone
    assert torch.allclose(edge_vectors(b), torch.cat([edge_vectors(ea), edge_vectors(ec)]), atol=1e-6)


def test_precomputed_edges_are_used_as_given():
    s = nacl()
    edges = [(np.array([0]), np.array([1]), np.array([[0.0, 0.0, 0.0]]))]
    b = from_structures([s], CUTOFF, edges=edges)
    assert b.edge_src.tolist() == [0] and b.edge_dst.tolist() == [1]
    assert torch.allclose(edge_vectors(b), torch.tensor([[2.82, 2.82, 2.82]]), atol=1e-5)


def test_elements_beyond_the_vocabulary_are_refused_by_name():
    s = Structure(Lattice.cubic(4.0), ["Am", "O"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    assert s.species[0].Z == MAX_Z + 1
    with pytest.raises(ValueError, match="AmO.*Z=94"):
        from_structures([s], CUTOFF)


def test_edge_vectors_move_with_the_atoms_and_pass_gradients():
    b = from_structures([triclinic()], CUTOFF)
    moved = b.with_pos(b.pos + torch.tensor([0.3, -1.0, 2.0]))  # a rigid translation
    assert torch.allclose(edge_vectors(moved), edge_vectors(b), atol=1e-5)
    assert moved.edge_src is b.edge_src and moved.lattice is b.lattice  # only the positions change
    pos = b.pos.clone().requires_grad_()
    torch.linalg.norm(edge_vectors(b.with_pos(pos)), dim=-1).sum().backward()
    assert torch.isfinite(pos.grad).all() and pos.grad.abs().max() > 0
    # total force of a pair potential is zero: the gradients sum to zero over atoms
    assert torch.allclose(pos.grad.sum(0), torch.zeros(3), atol=1e-4)


def test_batch_to_device_keeps_every_field():
    b = from_structures([nacl()], CUTOFF)
    c = b.to("cpu")
    for k in Batch.__dataclass_fields__:
        assert torch.equal(getattr(c, k), getattr(b, k))


def test_batch_from_tensors_matches_the_structure_batch():
    xs = [nacl(), triclinic()]
    ref = from_structures(xs, CUTOFF)
    species = torch.tensor([sp.Z for s in xs for sp in s.species])
    frac = torch.tensor(np.concatenate([s.frac_coords for s in xs]), dtype=torch.float32)
    lat = torch.tensor(np.stack([s.lattice.matrix for s in xs]), dtype=torch.float32)
    b = batch_from_tensors(species, frac, lat, torch.tensor([2, 4]), CUTOFF)
    assert torch.allclose(b.pos, ref.pos, atol=1e-5) and torch.equal(b.batch, ref.batch)
    assert edge_set(b.edge_src, b.edge_dst, b.edge_shift) == edge_set(ref.edge_src, ref.edge_dst, ref.edge_shift)
    # gradients reach the fractional coordinates (the sampler's positions)
    frac = frac.clone().requires_grad_()
    b = batch_from_tensors(species, frac, lat, torch.tensor([2, 4]), CUTOFF)
    edge_vectors(b).pow(2).sum().backward()
    assert frac.grad is not None and frac.grad.abs().max() > 0


@pytest.mark.parametrize("params", [(3.1, 3.4, 5.2, 80, 95, 110), (4.0, 4.0, 4.0, 90, 90, 90),
                                    (3.2, 3.2, 5.2, 90, 90, 120), (5.0, 6.0, 7.0, 60, 70, 75)])
def test_lattice_parameters_match_pymatgen_both_ways(params):
    lat = Lattice.from_parameters(*params)
    p = lattice_params(torch.tensor(lat.matrix, dtype=torch.float64)[None])[0].numpy()
    assert np.allclose(p, list(lat.abc) + list(lat.angles), atol=1e-9)
    m = lattice_from_params(torch.tensor([params], dtype=torch.float64))[0].numpy()
    assert np.allclose(m, lat.matrix, atol=1e-9)  # pymatgen's orientation convention
    assert np.allclose(lattice_params(torch.tensor(m)[None])[0].numpy(), params, atol=1e-9)


def test_lattice_params_are_batched_and_rotation_invariant():
    lat = torch.tensor(np.stack([Lattice.from_parameters(3, 4, 5, 80, 95, 100).matrix,
                                 Lattice.cubic(2.0).matrix]), dtype=torch.float64)
    q, _ = torch.linalg.qr(torch.randn(3, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0)))
    p = lattice_params(lat)
    assert p.shape == (2, 6)
    assert torch.allclose(lattice_params(lat @ q.T), p, atol=1e-9)
    assert torch.allclose(p[1], torch.tensor([2.0, 2.0, 2.0, 90.0, 90.0, 90.0], dtype=torch.float64), atol=1e-12)
