"""Strain sets priced by predicted k-points: pw.x-visible operations, the
candidates, and a choice that is never costlier than the fewest-cells set
nor noisier than the bound."""

from __future__ import annotations

import numpy as np
import pytest
from pymatgen.core import Lattice, Structure
from scipy.spatial.transform import Rotation

from aimmat.elastic.cost import choose_by_cost, irreducible_kpoints, pw_rotations
from aimmat.elastic.fit import strain_set
from aimmat.elastic.strains import PURE, check_spans, choose_strain_set, lagrangian_from_deformation, matrix_to_voigt
from aimmat.elastic.symmetry import crystal_symmetry
from aimmat.engines.setting import standard_orientation

A = 4.05


def al(r=np.eye(3)) -> Structure:
    return Structure(Lattice(np.array([[0, A / 2, A / 2], [A / 2, 0, A / 2], [A / 2, A / 2, 0]]) @ r.T), ["Al"], [[0, 0, 0]])


def test_pw_rotations_drop_operations_a_rotated_cell_hides_from_pw_x():
    assert len(pw_rotations(al())) == 48
    r = Rotation.from_euler("zyx", [20, 10, 5], degrees=True).as_matrix()
    assert len(pw_rotations(al(r))) < 48  # spglib still finds 48 there; pw.x would not
    mg = Structure(Lattice.hexagonal(3.21, 5.21), ["Mg", "Mg"], [[1 / 3, 2 / 3, 0.25], [2 / 3, 1 / 3, 0.75]])
    assert len(pw_rotations(mg)) == 24


def test_irreducible_kpoints_closed_form():
    # triclinic cell with time reversal: (n^3 + 1) / 2 for an even mesh (Gamma and the 7 zone-boundary
    # points of order 2 map to themselves, the rest pair up): (512 - 8) / 2 + 8 = 260
    p1 = Structure(Lattice.from_parameters(4.1, 5.3, 6.2, 81, 97, 103), ["Si", "Ge"], [[0, 0, 0], [0.31, 0.42, 0.17]])
    assert irreducible_kpoints(p1, (8, 8, 8)) == 260
    assert irreducible_kpoints(al(), (8, 8, 8)) == 29  # fcc, 8x8x8 Gamma-centred: pw.x prints 29


def _voigts(defs):
    return np.array([matrix_to_voigt(lagrangian_from_deformation(f)) for f in defs])


@pytest.mark.parametrize("mesh", [(8, 8, 8), (12, 12, 12)])
def test_cubic_choice_is_cheapest_within_the_noise_bound(mesh):
    s = al()
    sym = crystal_symmetry(s)
    fewest = choose_strain_set(sym.basis)
    chosen, rows = choose_by_cost(s, sym.basis, fewest, mesh, (-0.01, -0.005, 0.005, 0.01))
    names = [r["name"] for r in rows]
    assert names[:3] == ["pure", "pure_subset", "coupled_fewest_cells"]
    pick = [r for r in rows if r["chosen"]]
    assert len(pick) == 1 and pick[0]["noise_ratio"] <= 1.5 + 1e-9
    assert all(pick[0]["predicted_cost"] <= r["predicted_cost"] for r in rows if r["noise_ratio"] <= 1.5 + 1e-9)
    # the fewest-cells set makes every strained cell low-symmetry: it is not the cheapest here
    fc = rows[names.index("coupled_fewest_cells")]
    assert pick[0]["predicted_kpoints"] < fc["predicted_kpoints"] and pick[0]["n_cells"] > fc["n_cells"]
    # each row's per-cell count is what the cell would get
    assert check_spans(chosen.voigt, sym.basis)[0]
    for row in rows:
        assert row["predicted_kpoints"] == sum(row["kpoints_per_cell"]) and len(row["kpoints_per_cell"]) == row["n_cells"]


def test_strain_set_records_candidates_with_a_mesh_and_counts_cells_without():
    s, r, _ = standard_orientation(al(Rotation.random(random_state=2).as_matrix()))
    defs, info = strain_set(s, kpts=(8, 8, 8))
    assert info["chosen_by"] == "predicted_cost" and info["kpoints"] == [8, 8, 8] and "k-points" in info["cost_model"]
    chosen = [c for c in info["candidates"] if c["chosen"]][0]
    assert info["predicted_kpoints"] == chosen["predicted_kpoints"] and info["n_cells"] == chosen["n_cells"] == len(defs)
    assert np.allclose(_voigts(defs), np.array([m * np.array(t) for t in chosen["types"] for m in info["magnitudes"]]), atol=1e-12)
    defs2, info2 = strain_set(s)
    assert info2["chosen_by"] == "n_cells" and "candidates" not in info2 and len(defs2) == 4
    defs3, info3 = strain_set(s, kpts=(8, 8, 8), pure=True)
    assert info3["kind"] == "pure" and info3["chosen_by"] == "request" and len(defs3) == 24


def test_the_pure_states_win_when_coupled_cells_cost_more():
    # with a bound only the pure states meet, the six pure states are chosen whatever they cost
    s = al()
    sym = crystal_symmetry(s)
    chosen, rows = choose_by_cost(s, sym.basis, choose_strain_set(sym.basis, max_noise_ratio=1.0), (6, 6, 6),
                                  (-0.01, 0.01), max_noise_ratio=0.1)
    assert chosen.kind == "pure" and np.array_equal(chosen.types, PURE)
    assert [r["name"] for r in rows if r["chosen"]] == ["pure"]


def test_hexagonal_choice_prices_both_kinds():
    mg = Structure(Lattice.hexagonal(3.21, 5.21), ["Mg", "Mg"], [[1 / 3, 2 / 3, 0.25], [2 / 3, 1 / 3, 0.75]])
    defs, info = strain_set(mg, kpts=(9, 9, 6))
    rows = info["candidates"]
    ok = [r for r in rows if r["noise_ratio"] <= 1.5 + 1e-9]
    chosen = [r for r in rows if r["chosen"]][0]
    assert chosen["predicted_cost"] == min(r["predicted_cost"] for r in ok)
    assert chosen["predicted_cost"] == pytest.approx(chosen["predicted_kpoints"] * 4)  # x n_atoms^2
