"""The crystal VAE and the elastic predictor: condition encoding, lattice
normalisation round trip, output shapes, the training loss and its gradients."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pymatgen.core import Lattice, Structure

from aimmat.model.graph import MAX_Z, from_structures, lattice_from_params, lattice_params
from aimmat.model.vae import MAX_ELEMENTS, CrystalVAE, n_elements_onehot
from tests.model.tiny import tiny_models


@pytest.fixture(scope="module")
def models():
    return tiny_models(2)


def crystals():
    return [Structure(Lattice.from_parameters(3.1, 3.4, 5.2, 80, 95, 110), ["Ga", "As", "As", "O"],
                      [[0, 0, 0], [0.25, 0.3, 0.2], [0.6, 0.5, 0.7], [0.1, 0.8, 0.4]]),
            Structure(Lattice.cubic(4.2), ["Mg", "O"], [[0, 0, 0], [0.5, 0.5, 0.5]])]


def test_element_count_condition_is_one_hot_and_clamped():
    oh = n_elements_onehot(torch.tensor([1, 2, 4, 5, 9, 0]))
    assert oh.shape == (6, MAX_ELEMENTS) and oh.dtype == torch.float32
    assert oh.argmax(-1).tolist() == [0, 1, 3, 4, 4, 0]  # 5 means "five or more"; 0 clamps to 1
    assert torch.equal(oh.sum(-1), torch.ones(6))


def test_lattice_normalisation_round_trips(models):
    _, vae, _ = models
    lat = torch.tensor(np.stack([s.lattice.matrix for s in crystals()]), dtype=torch.float32)
    n = torch.tensor([4, 2])
    target = vae.lattice_target(lat, n)
    p = lattice_params(lat)
    # lengths per atom^(1/3), then standardised with the recorded mean and spread
    assert torch.allclose(target[:, 0], (p[:, 0] / n ** (1 / 3) - vae.lat_mean[0]) / vae.lat_std[0], atol=1e-5)
    assert torch.allclose(target[:, 3], (p[:, 3] - vae.lat_mean[3]) / vae.lat_std[3], atol=1e-5)
    back = vae.lattice_from_output(target, n)
    assert torch.allclose(back, p, atol=1e-3)
    rebuilt = lattice_from_params(back)
    assert torch.allclose(lattice_params(rebuilt), p, atol=1e-3)


def test_lattice_output_is_kept_physical(models):
    _, vae, _ = models
    wild = torch.tensor([[-50.0, 0.0, 0.0, 100.0, -100.0, 0.0]])
    p = vae.lattice_from_output(wild, torch.tensor([8]))
    assert p[0, 0] == pytest.approx(0.5 * 2.0)  # lengths at least 0.5 A x N^(1/3)
    assert p[0, 3] == pytest.approx(150.0) and p[0, 4] == pytest.approx(30.0)  # angles within 30..150 degrees


def test_encoder_and_decoder_shapes(models):
    _, vae, _ = models
    b = from_structures(crystals(), vae.cutoff)
    cond = n_elements_onehot(torch.tensor([3, 2]))
    with torch.no_grad():
        mu, logvar = vae.encode(b, cond)
        assert mu.shape == logvar.shape == (2, vae.latent_dim)
        assert (logvar >= -10).all() and (logvar <= 5).all()
        na, comp, lat = vae.decode_global(mu, cond)
    assert na.shape == (2, vae.max_atoms + 1) and comp.shape == (2, MAX_Z + 1) and lat.shape == (2, 6)
    # each crystal is encoded on its own: batching does not mix them
    with torch.no_grad():
        alone = vae.encode(from_structures(crystals()[1:], vae.cutoff), cond[1:])[0]
    assert torch.allclose(alone, mu[1:], atol=1e-5)


def test_score_is_one_vector_per_atom(models):
    _, vae, _ = models
    b = from_structures(crystals(), vae.cutoff)
    z = torch.randn(2, vae.latent_dim)
    cond = n_elements_onehot(torch.tensor([3, 2]))
    with torch.no_grad():
        out = vae.score_fn(b, z, cond, torch.tensor([0.1, 1.0]))
        other = vae.score_fn(b, z, cond, torch.tensor([0.5, 1.0]))
    assert out.shape == (6, 3)
    # the noise level is an input: changing crystal 0's sigma changes crystal 0's atoms only
    assert not torch.allclose(out[:4], other[:4], atol=1e-6)
    assert torch.allclose(out[4:], other[4:], atol=1e-6)


def test_loss_is_finite_seeded_and_trains_every_part(models):
    _, vae, _ = models
    b = from_structures(crystals(), vae.cutoff)
    k = torch.tensor([3, 2])
    vae.zero_grad()
    out = vae.loss(b, k, beta=0.01, generator=torch.Generator().manual_seed(0))
    assert set(out) == {"loss", "n_atoms", "composition", "lattice", "score", "kl"}
    assert all(torch.isfinite(v) for v in out.values())
    assert out["kl"] >= 0 and out["composition"] > 0
    expected = out["n_atoms"] + out["composition"] + 10 * out["lattice"] + out["score"] + 0.01 * out["kl"]
    assert out["loss"].item() == pytest.approx(expected.item(), rel=1e-5)
    out["loss"].backward()
    for part in (vae.encoder, vae.to_latent, vae.decoder, vae.n_atoms_head, vae.comp_head, vae.lattice_head, vae.score):
        grads = [p.grad for p in part.parameters() if p.requires_grad]
        assert any(g is not None and g.abs().max() > 0 for g in grads), type(part).__name__
    vae.zero_grad()
    again = vae.loss(b, k, beta=0.01, generator=torch.Generator().manual_seed(0))
    assert again["loss"].item() == pytest.approx(out["loss"].item(), rel=1e-6)
    other = vae.loss(b, k, beta=0.01, generator=torch.Generator().manual_seed(1))
    assert other["score"].item() != pytest.approx(out["score"].item(), rel=1e-6)


def test_lattice_loss_is_zero_when_the_decoder_predicts_the_target(models, monkeypatch):
    _, vae, _ = models
    b = from_structures(crystals(), vae.cutoff)
    target = vae.lattice_target(b.lattice, b.n_atoms).detach()
    real = vae.decode_global

    def perfect(z, cond):
        na, comp, _ = real(z, cond)
        return na, comp, target

    monkeypatch.setattr(vae, "decode_global", perfect)
    with torch.no_grad():
        out = vae.loss(b, torch.tensor([3, 2]), generator=torch.Generator().manual_seed(0))
    assert out["lattice"].item() == pytest.approx(0.0, abs=1e-10)


def test_lattice_statistics_are_saved_with_the_weights(models):
    _, vae, _ = models
    assert isinstance(vae, CrystalVAE)
    state = vae.state_dict()
    assert torch.equal(state["lat_mean"], vae.lat_mean) and torch.equal(state["lat_std"], vae.lat_std)
    assert not any(p is vae.lat_mean for p in vae.parameters())  # buffers: not trained


@pytest.mark.parametrize("which", [0, 2])
def test_elastic_predictor_outputs_an_ensemble_of_symmetric_tensors(models, which):
    model = models[which]  # PD model and the unconstrained ablation
    b = from_structures(crystals(), model.cutoff)
    with torch.no_grad():
        out = model(b)
    n_heads = len(model.head.heads)
    assert out.shape == (n_heads, 2, 6, 6)
    assert torch.allclose(out, out.transpose(-1, -2), atol=1e-3)
    if model.head.pd:
        assert (torch.linalg.eigvalsh(out.double()).min() > 0).item()
    # a crystal's prediction does not depend on its batch mates
    with torch.no_grad():
        alone = model(from_structures(crystals()[:1], model.cutoff))
    assert torch.allclose(alone[:, 0], out[:, 0], rtol=1e-4, atol=1e-3)
