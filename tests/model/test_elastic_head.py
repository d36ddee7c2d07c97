"""The elastic head's notation changes and positive-definite map, against
known tensors: Lame's isotropic tensor, rotations of the Cartesian tensor."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from e3nn import o3
from scipy.spatial.transform import Rotation

from aimmat.model.elastic_head import (
    GPA_UNIT,
    IRREPS_ELASTIC,
    ElasticHead,
    cartesian_to_mandel,
    irreps_to_cartesian,
    make_pd,
    mandel_to_voigt,
    voigt_to_mandel,
)

VOIGT = ((0, 0), (1, 1), (2, 2), (1, 2), (0, 2), (0, 1))


def isotropic_cartesian(lam: float, mu: float) -> torch.Tensor:
    d = torch.eye(3, dtype=torch.float64)
    return (lam * torch.einsum("ij,kl->ijkl", d, d)
            + mu * (torch.einsum("ik,jl->ijkl", d, d) + torch.einsum("il,jk->ijkl", d, d)))


def rotate4(c: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    return torch.einsum("ia,jb,kc,ld,...abcd->...ijkl", r, r, r, r, c)


def test_isotropic_tensor_in_mandel_form_has_eigenvalues_3k_and_2g():
    lam, mu = 60.0, 30.0
    m = cartesian_to_mandel(isotropic_cartesian(lam, mu))
    eig = torch.linalg.eigvalsh(m).numpy()
    k = lam + 2 * mu / 3
    assert np.allclose(np.sort(eig), sorted([3 * k] + [2 * mu] * 5), atol=1e-10)
    v = mandel_to_voigt(m).numpy()
    assert v[0, 0] == pytest.approx(lam + 2 * mu) and v[0, 1] == pytest.approx(lam) and v[3, 3] == pytest.approx(mu)
    assert v[0, 3] == 0 and v[3, 4] == 0


def test_mandel_is_an_isometry_of_the_rank_four_tensor():
    torch.manual_seed(0)
    c = irreps_to_cartesian(torch.randn(4, 21, dtype=torch.float64))
    m = cartesian_to_mandel(c)
    assert torch.allclose(torch.linalg.norm(m.reshape(4, -1), dim=-1), torch.linalg.norm(c.reshape(4, -1), dim=-1))
    # and the double contraction C : C is the Mandel product trace(M M)
    assert torch.allclose(torch.einsum("bijkl,bijkl->b", c, c), torch.einsum("bij,bji->b", m, m))


def test_voigt_and_mandel_round_trip():
    v = torch.randn(3, 6, 6, dtype=torch.float64)
    assert torch.allclose(mandel_to_voigt(voigt_to_mandel(v)), v)
    m = voigt_to_mandel(v)
    assert torch.allclose(m[:, :3, :3], v[:, :3, :3])
    assert torch.allclose(m[:, 3:, 3:], 2 * v[:, 3:, 3:])
    assert torch.allclose(m[:, :3, 3:], 2 ** 0.5 * v[:, :3, 3:])


def test_change_of_basis_is_a_bijection_onto_the_21_constants():
    assert IRREPS_ELASTIC.dim == 21
    eye = torch.eye(21, dtype=torch.float64)
    v = mandel_to_voigt(cartesian_to_mandel(irreps_to_cartesian(eye)))
    coords = torch.stack([v[:, i, j] for i in range(6) for j in range(i, 6)], dim=1)  # (21, 21)
    assert torch.linalg.matrix_rank(coords).item() == 21
    # linear
    x, y = torch.randn(2, 21, dtype=torch.float64)
    assert torch.allclose(irreps_to_cartesian(2 * x - y), 2 * irreps_to_cartesian(x) - irreps_to_cartesian(y))


def test_irreps_rotate_like_the_cartesian_tensor():
    torch.manual_seed(1)
    x = torch.randn(21, dtype=torch.float64)
    r = torch.tensor(Rotation.random(random_state=5).as_matrix())
    d = IRREPS_ELASTIC.D_from_matrix(r)
    # e3nn builds the change of basis in float32: agreement to ~1e-7 relative
    assert torch.allclose(irreps_to_cartesian(d @ x), rotate4(irreps_to_cartesian(x), r), atol=1e-6)
    assert not torch.allclose(irreps_to_cartesian(x), rotate4(irreps_to_cartesian(x), r), atol=1e-2)


def test_scalar_channels_give_exactly_the_isotropic_tensors():
    scalars = [i for i, (mul, ir) in enumerate(IRREPS_ELASTIC) if ir.l == 0]
    assert IRREPS_ELASTIC[scalars[0]].mul == 2  # Lame's two constants
    x = torch.zeros(21, dtype=torch.float64)
    x[:2] = torch.tensor([0.7, -1.3], dtype=torch.float64)
    c = irreps_to_cartesian(x)
    r = torch.tensor(Rotation.random(random_state=2).as_matrix())
    assert torch.allclose(rotate4(c, r), c, atol=1e-6)  # float32 change of basis
    # so it is lam d_ij d_kl + mu (d_ik d_jl + d_il d_jk) for some lam, mu
    v = mandel_to_voigt(cartesian_to_mandel(c))
    lam, mu = v[0, 1].item(), v[3, 3].item()
    assert torch.allclose(c, isotropic_cartesian(lam, mu), atol=1e-6)
    # any l > 0 channel breaks isotropy
    y = torch.zeros(21, dtype=torch.float64)
    y[5] = 1.0
    assert not torch.allclose(rotate4(irreps_to_cartesian(y), r), irreps_to_cartesian(y), atol=1e-6)


def test_make_pd_of_a_diagonal_matrix_is_softplus_plus_floor():
    lam = torch.tensor([-5.0, -0.5, 0.0, 0.3, 2.0, 40.0], dtype=torch.float64)
    out = make_pd(torch.diag(lam), floor=1e-3)
    assert torch.allclose(out, torch.diag(torch.log1p(torch.exp(lam)) + 1e-3), atol=1e-12)


def test_make_pd_uses_the_symmetric_part_and_keeps_eigenvectors():
    torch.manual_seed(3)
    a = torch.randn(6, 6, dtype=torch.float64)
    sym = (a + a.T) / 2
    out = make_pd(a)
    assert torch.allclose(out, make_pd(sym), atol=1e-12) and torch.allclose(out, out.T, atol=1e-12)
    lam, v = torch.linalg.eigh(sym)
    expected = v @ torch.diag(torch.nn.functional.softplus(lam) + 1e-3) @ v.T
    assert torch.allclose(out, expected, atol=1e-12)
    assert torch.linalg.eigvalsh(out).min() >= 1e-3 - 1e-12  # the floor bounds the spectrum


def test_make_pd_is_batched():
    torch.manual_seed(4)
    a = torch.randn(3, 5, 6, 6, dtype=torch.float64)
    out = make_pd(a)
    assert out.shape == a.shape
    assert torch.allclose(out[2, 1], make_pd(a[2, 1]), atol=1e-12)


@pytest.mark.parametrize("pd", [True, False])
def test_head_outputs_an_ensemble_of_symmetric_mandel_matrices_in_gpa(pd):
    torch.manual_seed(6)
    irreps = o3.Irreps("6x0e + 3x2e + 2x4e")
    head = ElasticHead(irreps, n_heads=3, pd=pd)
    pooled = irreps.randn(5, -1)
    out = head(pooled)
    assert out.shape == (3, 5, 6, 6)
    assert torch.allclose(out, out.transpose(-1, -2), atol=1e-4)
    for h, lin in enumerate(head.heads):  # each head: its linear map, then the tensor, x 100 GPa
        raw = cartesian_to_mandel(irreps_to_cartesian(lin(pooled)))
        want = make_pd(raw, head.floor) if pd else raw
        assert torch.allclose(out[h], want * GPA_UNIT, atol=1e-3)
    if pd:
        assert (torch.linalg.eigvalsh(out.double()).min() > 0).item()
    assert not torch.allclose(out[0], out[1])  # the heads differ: an ensemble


def test_head_is_equivariant_for_rotated_features():
    torch.manual_seed(8)
    irreps = o3.Irreps("4x0e + 2x2e + 1x4e")
    head = ElasticHead(irreps, n_heads=2, pd=True).double()
    x = irreps.randn(2, -1, dtype=torch.float64)
    r = torch.tensor(Rotation.random(random_state=9).as_matrix())
    out = head(x)
    rot = head(x @ irreps.D_from_matrix(r).T)
    # rotating the features rotates the Mandel matrix by the orthogonal Mandel form of the Bond matrix
    from aimmat.elastic.symmetry import bond_matrix

    w = torch.tensor([1, 1, 1, 2 ** 0.5, 2 ** 0.5, 2 ** 0.5], dtype=torch.float64)
    q = torch.diag(w) @ torch.tensor(bond_matrix(r.numpy())) @ torch.diag(1 / w)
    assert torch.allclose(rot, q @ out @ q.T, atol=1e-4)  # GPa; float32 change of basis
    assert not torch.allclose(rot, out, atol=1.0)


def test_vrh_torch_matches_pymatgen_and_has_gradients():
    from pymatgen.analysis.elasticity import ElasticTensor

    from aimmat.model.elastic_head import vrh_torch

    rng = np.random.default_rng(3)
    for _ in range(5):
        a = rng.normal(size=(6, 6))
        c = a @ a.T * 20 + np.eye(6) * 40  # a positive definite, fully anisotropic tensor
        et = ElasticTensor.from_voigt(c)
        k, g = vrh_torch(torch.tensor(c, requires_grad=True))
        assert abs(float(k) - et.k_vrh) < 1e-9 * et.k_vrh and abs(float(g) - et.g_vrh) < 1e-9 * et.g_vrh
    # isotropic: K = lambda + 2 mu / 3, G = mu exactly (Voigt and Reuss agree)
    c = mandel_to_voigt(cartesian_to_mandel(isotropic_cartesian(60.0, 30.0))).requires_grad_(True)
    k, g = vrh_torch(c)
    assert abs(float(k) - 80.0) < 1e-9 and abs(float(g) - 30.0) < 1e-9
    (k + g).backward()
    assert torch.isfinite(c.grad).all() and c.grad.abs().sum() > 0
