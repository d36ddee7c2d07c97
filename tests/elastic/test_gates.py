"""Every gate catches a tensor known to violate it; a known-good tensor passes."""

from __future__ import annotations

import numpy as np
import pytest
from pymatgen.analysis.elasticity import ElasticTensor
from pymatgen.core import Lattice, Structure

from aimmat.elastic.fit import analyse
from aimmat.elastic.gates import born_criteria
from aimmat.elastic.moduli import derived_moduli, hill_young_poisson
from aimmat.elastic.symmetry import crystal_symmetry
from tests.elastic.tensors import cubic, hexagonal


SI = Structure(Lattice.cubic(5.43), ["Si"] * 8, [[0, 0, 0], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5],
                                                  [0.25, 0.25, 0.25], [0.75, 0.75, 0.25], [0.75, 0.25, 0.75], [0.25, 0.75, 0.75]])
MG = Structure(Lattice.hexagonal(3.21, 5.21), ["Mg", "Mg"], [[1 / 3, 2 / 3, 0.25], [2 / 3, 1 / 3, 0.75]])


def test_good_tensor_passes_everything():
    out = analyse(cubic(166, 64, 80), 0.1, crystal_symmetry(SI), SI)
    assert all(g["pass"] for g in out["gates"].values()), out["gates"]


@pytest.mark.parametrize("c, failing", [
    (cubic(100, 120, 50), "C11-C12>0"),
    (cubic(100, -60, 50), "C11+2C12>0"),
    (cubic(166, 64, -5), "C44>0"),
])
def test_cubic_born_criteria(c, failing):
    crit = born_criteria(c, "cubic")
    assert crit[failing] is False or crit[failing] == False  # noqa: E712
    assert sum(not v for v in crit.values()) == 1
    out = analyse(c, 0.1, crystal_symmetry(SI), SI)
    assert not out["gates"]["born"]["pass"] and not out["pass_pd"] and not out["pass_both"]


@pytest.mark.parametrize("args, failing", [
    ((60, 70, 20, 60, 17), "C11>|C12|"),
    ((60, 25, 60, 40, 17), "2C13^2<C33(C11+C12)"),
    ((60, 25, 20, 60, -1), "C44>0"),
])
def test_hexagonal_born_criteria(args, failing):
    crit = born_criteria(hexagonal(*args), "hexagonal")
    assert not crit[failing]
    sym = crystal_symmetry(MG)
    assert sym.crystal_system == "hexagonal" and sym.n_constants == 5
    assert not analyse(hexagonal(*args), 0.1, sym, MG)["gates"]["born"]["pass"]


def test_fit_rms_gate_and_pass_both():
    out = analyse(cubic(166, 64, 80), 3.5, crystal_symmetry(SI), SI, fit_rms_max_gpa=2.0)
    assert out["pass_pd"] and not out["pass_fit_rms"] and not out["pass_both"]


def test_voigt_ge_reuss_caught_for_an_unphysical_tensor():
    # Hill's bound K_V >= K_R, G_V >= G_R holds for every PD tensor; this indefinite one breaks it
    rng = np.random.default_rng(0)
    a = rng.normal(size=(6, 6)) * 50
    c = (a + a.T) / 2 + np.eye(6) * 30
    m = derived_moduli(c)
    assert m["g_voigt_gpa"] < m["g_reuss_gpa"]
    tri = Structure(Lattice.from_parameters(4.1, 5.3, 6.2, 81, 97, 103), ["Si"], [[0, 0, 0]])
    out = analyse(c, 0.1, crystal_symmetry(tri), tri)
    assert not out["gates"]["voigt_ge_reuss"]["pass"] and not out["pass_pd"]
    assert out["b_h_gpa"] == pytest.approx(m["b_h_gpa"])  # flagged, still reported


def test_symmetry_residual_of_a_symmetry_breaking_tensor():
    c = cubic(166, 64, 80)
    c[0, 0] += 10  # C11 != C22: not cubic
    out = analyse(c, 0.1, crystal_symmetry(SI), SI)
    assert out["symmetry_residual"] > 0.01 and not out["gates"]["symmetry"]["pass"]


def test_vrh_agrees_with_pymatgen():
    rng = np.random.default_rng(1)
    a = rng.normal(size=(6, 6))
    c = a @ a.T * 20 + np.eye(6) * 50
    m = derived_moduli(c)
    t = ElasticTensor.from_voigt(c)
    for mine, theirs in ((m["b_h_gpa"], t.k_vrh), (m["g_h_gpa"], t.g_vrh), (m["e_h_gpa"], t.y_mod / 1e9),
                         (m["poisson_h"], t.homogeneous_poisson)):
        assert mine == pytest.approx(theirs, rel=1e-8)


def test_seed_gecl3_moduli():
    e, nu = hill_young_poisson(27.690728639931116, 11.037134527918754)
    assert e == pytest.approx(29.228100484514577, rel=1e-12)
    assert nu == pytest.approx(0.3240801047854064, rel=1e-12)
