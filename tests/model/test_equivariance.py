"""Symmetry of the model: rotations, translations and permutations of the
input crystal, positive definiteness, and the score network."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pymatgen.analysis.elasticity import ElasticTensor
from pymatgen.core import Lattice, Structure
from scipy.spatial.transform import Rotation

from aimmat.elastic.symmetry import rotate_voigt
from aimmat.model.elastic_head import (cartesian_to_mandel, irreps_to_cartesian, make_pd, mandel_to_voigt,
                                       voigt_to_mandel)
from aimmat.model.graph import batch_from_tensors, from_structures
from aimmat.model.vae import n_elements_onehot
from tests.model.tiny import tiny_models


def _crystal() -> Structure:
    return Structure(Lattice.from_parameters(3.1, 3.4, 5.2, 80, 95, 110), ["Ga", "As", "As", "O"],
                     [[0, 0, 0], [0.25, 0.3, 0.2], [0.6, 0.5, 0.7], [0.1, 0.8, 0.4]])


def _moved(s: Structure, r: np.ndarray, t: np.ndarray) -> Structure:
    return Structure(Lattice(s.lattice.matrix @ r.T), s.species, s.cart_coords @ r.T + t, coords_are_cartesian=True)


def _elastic(model, s: Structure) -> np.ndarray:
    b = from_structures([s], model.gnn.cutoff)
    with torch.no_grad():
        return mandel_to_voigt(model(b)).double().numpy()[:, 0]


@pytest.fixture(scope="module")
def models():
    return tiny_models(3)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_rotating_and_translating_the_crystal_rotates_the_tensor(models, seed):
    el, _, abl = models
    r = Rotation.random(random_state=seed).as_matrix()
    s = _crystal()
    s2 = _moved(s, r, np.array([0.37, -1.2, 2.5]))
    for model in (el, abl):
        c1, c2 = _elastic(model, s), _elastic(model, s2)
        expected = np.array([rotate_voigt(c, r) for c in c1])
        assert np.abs(expected - c2).max() / np.abs(c2).max() < 1e-4
        # and the tensor is not trivially isotropic (the check would be vacuous)
        assert np.abs(c1 - expected).max() / np.abs(c1).max() > 1e-3
        k1 = [ElasticTensor.from_voigt(c).k_vrh for c in c1]
        k2 = [ElasticTensor.from_voigt(c).k_vrh for c in c2]
        assert np.allclose(k1, k2, rtol=1e-4)


def test_latent_is_invariant_and_permutation_changes_nothing(models):
    el, vae, _ = models
    s = _crystal()
    r = Rotation.random(random_state=7).as_matrix()
    perm = [2, 0, 3, 1]
    sp = Structure(s.lattice, [s.species[i] for i in perm], s.frac_coords[perm])
    cond = n_elements_onehot(torch.tensor([3]))
    with torch.no_grad():
        mus = [vae.encode(from_structures([x], vae.cutoff), cond)[0] for x in (s, _moved(s, r, np.ones(3)), sp)]
    assert torch.allclose(mus[0], mus[1], atol=1e-5) and torch.allclose(mus[0], mus[2], atol=1e-5)
    assert np.allclose(_elastic(el, s), _elastic(el, sp), rtol=1e-5, atol=1e-4)


def test_decoder_score_is_equivariant(models):
    _, vae, _ = models
    s = _crystal()
    r = Rotation.random(random_state=11).as_matrix()
    z = torch.randn(1, vae.latent_dim)
    cond = n_elements_onehot(torch.tensor([3]))
    sig = torch.tensor([0.3])
    outs = []
    for x in (s, _moved(s, r, np.array([0.5, 0.1, -0.3]))):
        species = torch.tensor([sp.Z for sp in x.species])
        b = batch_from_tensors(species, torch.tensor(x.frac_coords % 1.0, dtype=torch.float32),
                               torch.tensor(x.lattice.matrix, dtype=torch.float32)[None], torch.tensor([len(x)]),
                               vae.cutoff)
        with torch.no_grad():
            outs.append(vae.score_fn(b, z, cond, sig).numpy())
    assert np.abs(outs[0]).max() > 1e-4
    assert np.allclose(outs[0] @ r.T, outs[1], atol=1e-5 * max(1.0, np.abs(outs[0]).max()))


def test_spectral_map_is_pd_for_random_tensors_of_any_scale():
    torch.manual_seed(0)
    x = torch.randn(2000, 21, dtype=torch.float64) * torch.logspace(-3, 3, 2000, dtype=torch.float64)[:, None]
    m = make_pd(cartesian_to_mandel(irreps_to_cartesian(x)))
    assert (torch.linalg.eigvalsh(m).min(-1).values > 0).all()
    raw = cartesian_to_mandel(irreps_to_cartesian(x))
    assert (torch.linalg.eigvalsh(raw).min(-1).values < 0).any()  # the map is what makes them PD


def test_spectral_map_commutes_with_rotation_and_keeps_pd_matrices():
    from aimmat.elastic.symmetry import bond_matrix

    torch.manual_seed(1)
    a = torch.randn(6, 6, dtype=torch.float64)
    m = a @ a.T / 6
    r = Rotation.random(random_state=3).as_matrix()
    q = torch.tensor(bond_matrix(r))  # Voigt rotation; Mandel: W Q W^-1
    w = torch.tensor([1, 1, 1, 2 ** 0.5, 2 ** 0.5, 2 ** 0.5], dtype=torch.float64)
    qm = torch.diag(w) @ q @ torch.diag(1 / w)
    assert torch.allclose(qm @ qm.T, torch.eye(6, dtype=torch.float64), atol=1e-10)
    assert torch.allclose(make_pd(qm @ m @ qm.T), qm @ make_pd(m) @ qm.T, atol=1e-10)
    # softplus(x) ~ x for large eigenvalues: a stiff PD tensor passes nearly unchanged
    big = m + 50 * torch.eye(6, dtype=torch.float64)
    assert torch.allclose(make_pd(big), big, atol=1e-3)


def test_spectral_map_gradient_is_finite_and_exact_at_degenerate_spectra():
    cubic = np.array([[166, 64, 64, 0, 0, 0], [64, 166, 64, 0, 0, 0], [64, 64, 166, 0, 0, 0],
                      [0, 0, 0, 80, 0, 0], [0, 0, 0, 0, 80, 0], [0, 0, 0, 0, 0, 80.0]]) / 100
    m = voigt_to_mandel(torch.tensor(cubic)).requires_grad_()
    (make_pd(m) ** 2).sum().backward()
    assert torch.isfinite(m.grad).all()
    torch.manual_seed(2)
    assert torch.autograd.gradcheck(lambda a: make_pd(a), (torch.randn(6, 6, dtype=torch.float64, requires_grad=True),))
    # the torch eigh backward is not finite here: the reason for the custom derivative
    m2 = voigt_to_mandel(torch.tensor(cubic)).requires_grad_()
    lam, v = torch.linalg.eigh(m2)
    (v @ torch.diag(torch.nn.functional.softplus(lam)) @ v.T).pow(2).sum().backward()
    assert not torch.isfinite(m2.grad).all()


def test_irreps_map_to_a_tensor_with_elastic_symmetries():
    x = torch.randn(5, 21, dtype=torch.float64)
    c = irreps_to_cartesian(x)
    assert torch.allclose(c, c.transpose(-4, -3)) and torch.allclose(c, c.transpose(-2, -1))
    assert torch.allclose(c, c.permute(0, 3, 4, 1, 2))
    v = mandel_to_voigt(cartesian_to_mandel(c))
    assert np.allclose(ElasticTensor.from_voigt(v[0].numpy()), c[0].numpy(), atol=1e-12)


def test_predictions_on_real_crystals_are_pd(models):
    el, _, _ = models
    from pymatgen.core import Structure as S

    xs = [S.from_spacegroup("Fm-3m", Lattice.cubic(4.2), ["Mg", "O"], [[0, 0, 0], [0.5, 0.5, 0.5]]),
          S.from_spacegroup("Fd-3m", Lattice.cubic(5.43), ["Si"], [[0, 0, 0]]),
          S.from_spacegroup("P6_3/mmc", Lattice.hexagonal(3.2, 5.2), ["Mg"], [[1 / 3, 2 / 3, 0.25]]), _crystal()]
    for x in xs:
        assert (np.linalg.eigvalsh(_elastic(el, x)).min(-1) > 0).all()


def test_error_head_is_invariant_and_the_tensor_still_rotates():
    from aimmat.model.vae import ElasticPredictor
    from tests.model.tiny import ELASTIC_HP

    torch.manual_seed(4)
    model = ElasticPredictor(**ELASTIC_HP, error_head=True).eval()
    r = Rotation.random(random_state=7).as_matrix()
    s = _crystal()
    s2 = _moved(s, r, np.array([0.4, 0.1, -0.9]))
    with torch.no_grad():
        t1, e1 = model.forward_with_error(from_structures([s], model.gnn.cutoff))
        t2, e2 = model.forward_with_error(from_structures([s2], model.gnn.cutoff))
        assert torch.equal(t1, model(from_structures([s], model.gnn.cutoff)))  # same tensors as forward
    assert e1.shape == (1, 2) and torch.allclose(e1, e2, atol=1e-5)
    c1, c2 = mandel_to_voigt(t1).double().numpy()[:, 0], mandel_to_voigt(t2).double().numpy()[:, 0]
    assert np.abs(np.array([rotate_voigt(c, r) for c in c1]) - c2).max() / np.abs(c2).max() < 1e-4
    # a rattled crystal gets another error estimate: the head reads the structure
    s3 = s.copy()
    s3.perturb(0.3, min_distance=0.2)
    with torch.no_grad():
        _, e3 = model.forward_with_error(from_structures([s3], model.gnn.cutoff))
    assert not torch.allclose(e1, e3, atol=1e-4)
