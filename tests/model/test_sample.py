"""Sampling: the composition rule, decoded globals, per-index determinism
whatever the batch, and the structures returned."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from aimmat.model import sample as sample_mod
from aimmat.model.graph import MAX_Z
from aimmat.model.sample import CHUNK, DEFAULT_SCHEDULE, Sample, _counts, decode_globals, sample
from aimmat.model.vae import CrystalVAE
from tests.model.tiny import VAE_HP

FAST = {"levels": 2, "steps": 1, "step_lr": 1e-4, "min_separation": 0.0}


@pytest.fixture(scope="module")
def vae():
    torch.manual_seed(4)
    v = CrystalVAE(**VAE_HP)  # the tiny test model (untrained, seeded)
    v.lat_mean.copy_(torch.tensor([2.6, 2.6, 2.6, 90.0, 90.0, 90.0]))
    v.lat_std.copy_(torch.tensor([0.2, 0.2, 0.2, 5.0, 5.0, 5.0]))
    return v.eval()


# ----------------------------------------------------------------- composition
def test_counts_split_by_largest_remainder_with_one_atom_each():
    # n = 10, fractions 0.5/0.3/0.2: one atom each, the other 7 in proportion to frac*n - 1 = 4, 2, 1
    assert _counts(np.array([5.0, 3.0, 2.0]), 10).tolist() == [5, 3, 2]
    # a remainder goes to the largest fractional part
    assert _counts(np.array([0.45, 0.35, 0.2]), 7).tolist() == [3, 3, 1]


@pytest.mark.parametrize("seed", range(5))
def test_counts_always_sum_to_n_with_every_element_present(seed):
    rng = np.random.default_rng(seed)
    for _ in range(50):
        k = int(rng.integers(1, 6))
        n = int(rng.integers(k, 25))
        frac = rng.dirichlet(np.ones(k)) * rng.uniform(0.01, 1)
        c = _counts(frac, n)
        assert c.sum() == n and (c >= 1).all() and len(c) == k


def test_counts_edge_cases():
    assert _counts(np.array([0.9, 0.1]), 2).tolist() == [1, 1]  # n == k: one each
    # one dominant element takes every extra atom
    assert _counts(np.array([0.999, 0.0005, 0.0005]), 8).tolist() == [6, 1, 1]
    # equal fractions split evenly, ties broken in order
    assert _counts(np.array([1.0, 1.0, 1.0]), 7).tolist() == [3, 2, 2]


def test_decode_globals_respects_the_element_count(vae):
    gens = [torch.Generator().manual_seed(i) for i in range(12)]
    z = torch.randn(12, vae.latent_dim, generator=torch.Generator().manual_seed(99))
    for k in (1, 2, 3):
        n_atoms, species, lattice, cond = decode_globals(vae, z, k, gens)
        assert lattice.shape == (12, 3, 3) and cond.shape == (12, 5) and (cond.argmax(-1) == k - 1).all()
        for n, sp in zip(n_atoms.tolist(), species):
            assert k <= n <= vae.max_atoms and len(sp) == n
            assert len(set(sp.tolist())) == k and all(1 <= z_ <= MAX_Z for z_ in sp)
        assert (torch.linalg.det(lattice) > 0).all()


# -------------------------------------------------------------------- sampling
@pytest.fixture(scope="module")
def twenty(vae):
    return sample(vae, 20, 2, seed=3, schedule=FAST)  # two chunks of CHUNK


def test_samples_are_crystals_with_the_requested_element_count(twenty):
    assert [s.index for s in twenty] == list(range(20))
    for s in twenty:
        assert isinstance(s, Sample) and len(s.latent) == 8
        st = s.structure
        assert len(st.composition.elements) == 2
        assert st.volume > 0 and np.all((st.frac_coords >= 0) & (st.frac_coords < 1))
        assert 2 <= len(st) <= 6
    # every index has its own random stream
    assert len({tuple(s.latent) for s in twenty}) == 20
    assert len({s.structure.composition.reduced_formula for s in twenty}) > 1


def test_a_sample_depends_on_its_index_not_on_the_batch(vae, twenty):
    assert CHUNK == 16
    seen = []
    picked = sample(vae, 3, 2, seed=3, schedule=FAST, indices=[17, 15, 0],
                    progress=lambda done, total: seen.append((done, total)))
    assert [p.index for p in picked] == [17, 15, 0]  # in the order asked
    for p in picked:  # index 15 came in a batch of 16, index 17 with 4 others before
        assert p.structure.as_dict() == twenty[p.index].structure.as_dict()
        assert p.latent == twenty[p.index].latent
    assert seen == [(2, 3), (3, 3)]  # progress once per chunk


def test_seed_changes_the_samples_and_separation_is_off_at_zero(vae, twenty, monkeypatch):
    def forbidden(*a, **k):
        raise AssertionError("separate() ran with min_separation 0")

    monkeypatch.setattr(sample_mod, "separate", forbidden)
    other = sample(vae, 4, 2, seed=4, schedule=FAST)
    assert all(o.latent != t.latent for o, t in zip(other, twenty))


def test_separation_runs_when_asked(vae, monkeypatch):
    calls = []
    real = sample_mod.separate

    def spy(*a, **k):
        calls.append(a[-1])
        return real(*a, **k)

    monkeypatch.setattr(sample_mod, "separate", spy)
    out = sample(vae, 1, 2, seed=0, schedule={**FAST, "levels": 1, "min_separation": 0.5})
    assert calls == [0.5]
    from pymatgen.analysis.molecule_structure_comparator import CovalentRadius

    st = out[0].structure
    assert len(st) >= 2  # two elements: at least one pair to check
    d = st.distance_matrix + np.eye(len(st)) * 1e9
    r = np.array([CovalentRadius.radius[sp.symbol] for sp in st.species])
    assert (d >= 0.5 * (r[:, None] + r[None, :]) - 1e-2).all()


def test_default_schedule_is_filled_in(vae, monkeypatch):
    seen = {}

    def spy(v, idx, k, seed, sch, palette=None, guidance=None):
        seen.update(sch)
        return [Sample(None, i, []) for i in idx]

    monkeypatch.setattr(sample_mod, "_sample_chunk", spy)
    out = sample(vae, 1, 1, seed=0, schedule={"steps": 7})
    assert seen == {**DEFAULT_SCHEDULE, "steps": 7} and [o.index for o in out] == [0]
