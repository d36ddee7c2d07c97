"""The physical sanity gate: real results pass, each kind of nonsense fails
with the figure that failed."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from pymatgen.core import Lattice, Structure

from aimmat.engines import EngineResult, get_engine
from aimmat.engines.qe.parse import RY_EV
from aimmat.engines.qe.read import read_results
from aimmat.stages.sanity import SanityLimits, check_result, check_values, thomas_fermi_energy_ev

QE_DATA = Path(__file__).resolve().parents[1] / "data" / "qe"


def si(a=5.43) -> Structure:
    return Structure(Lattice([[0, a / 2, a / 2], [a / 2, 0, a / 2], [a / 2, a / 2, 0]]), ["Si", "Si"],
                     [[0, 0, 0], [0.25, 0.25, 0.25]])


def result(structure, energy_per_atom, forces=None, stress=None) -> EngineResult:
    n = len(structure)
    return EngineResult(energy_ev=energy_per_atom * n,
                        forces_ev_per_a=forces if forces is not None else [[0.0, 0.0, 0.0]] * n,
                        stress_gpa=stress if stress is not None else np.diag([-1.0, -1.0, -1.0]).tolist(),
                        structure=structure.as_dict(), converged=True)


def qe_golden(name="si_scf_converged") -> EngineResult:
    case = json.loads((QE_DATA / name / "case.json").read_text())
    s = case["structure"]
    structure = Structure(Lattice(s["lattice"]), s["species"], s["frac_coords"])
    return read_results(QE_DATA / name / "outputs", structure, case["task"], case["returncode"], case["timed_out"],
                        1.0, case["kpts"])


@pytest.mark.parametrize("name", ["si_scf_converged", "si_vcrelax_converged"])
def test_real_pw_x_result_passes(name):
    res = qe_golden(name)
    assert res.failure_code is None and res.energy_ev < 0
    assert check_result(res, "qe") is None


def test_real_emt_result_passes(tmp_path):
    al = Structure(Lattice.cubic(4.05), ["Al"] * 4, [[0, 0, 0], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]])
    res = get_engine({"kind": "emt"}).run(al, {}, "static", tmp_path / "emt")
    assert res.failure_code is None
    assert check_result(res, "emt") is None


def test_normal_ml_energies_pass():
    # CHGNet predicts Materials Project energies: Si about -5.4 eV/atom, W about -13
    assert check_result(result(si(), -5.42), "chgnet") is None
    w = Structure(Lattice.cubic(3.17), ["W", "W"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    assert check_result(result(w, -12.95), "chgnet") is None
    assert check_result(result(si(), 0.3), "emt") is None


def test_collapsed_atoms_fail_min_distance_with_the_figure():
    # the second Si 0.3 A from the first; every field finite, a plausible energy
    s = Structure(Lattice.cubic(5.43), ["Si", "Si"], [[0, 0, 0], [0.3 / 5.43, 0, 0]])
    v = check_result(result(s, -107.0), "qe")
    assert v.check == "min_distance" and v.failure_code == "unphysical_result"
    assert v.value == pytest.approx(0.3) and v.threshold == pytest.approx(0.5 * 2 * 1.11)
    assert v.unit == "A"
    assert "0.3 A between Si0 and Si1" in v.message and "= 1.11 A" in v.message


def test_coincident_atoms_and_short_periodic_images_fail():
    same = Structure(Lattice.cubic(5.0), ["Si", "Si"], [[0.1, 0.1, 0.1], [0.1, 0.1, 0.1]])
    assert check_result(result(same, -107.0), "qe").value == pytest.approx(0.0)
    # one atom per cell, cell vector 0.5 A: the atom's own image is the collapsed neighbour
    thin = Structure(Lattice.orthorhombic(0.5, 6.0, 6.0), ["Si"], [[0, 0, 0]])
    v = check_result(result(thin, -107.0), "qe")
    assert v.check == "min_distance" and v.value == pytest.approx(0.5)


def test_positive_thousands_of_ry_fails_energy_for_qe():
    # +5000 Ry on a healthy diamond Si cell, all fields finite: only the energy gives it away
    res = result(si(), 5000 * RY_EV / 2)
    assert all(math.isfinite(x) for x in [res.energy_ev, *np.ravel(res.stress_gpa), *np.ravel(res.forces_ev_per_a)])
    v = check_result(res, "qe")
    assert v.check == "energy_per_atom" and v.threshold == 0.0
    assert v.value == pytest.approx(5000 * RY_EV / 2)
    assert f"{v.value:.6g}" in v.message and "> 0 eV/atom" in v.message


def test_qe_floor_is_thomas_fermi_and_real_energies_sit_far_above():
    # Si: Thomas-Fermi -363 Ha per atom (exact all-electron -289 Ha); pw.x Si is about -107 eV/atom
    assert thomas_fermi_energy_ev(si()) == pytest.approx(-0.7687 * 14 ** (7 / 3) * 27.2114, rel=1e-4)
    assert qe_golden().energy_ev / 2 > thomas_fermi_energy_ev(si()) / 50
    v = check_result(result(si(), -5000 * RY_EV / 2 * 10), "qe")  # -340 keV/atom
    assert v.check == "energy_per_atom" and v.threshold == pytest.approx(thomas_fermi_energy_ev(si()))


def test_ml_energy_bounds():
    assert check_result(result(si(), 12.0), "chgnet").check == "energy_per_atom"
    assert check_result(result(si(), -30.0), "chgnet").check == "energy_per_atom"
    assert check_result(result(si(), -107.0), "emt").check == "energy_per_atom"
    assert check_result(result(si(), -107.0), "some_new_engine") is None  # no bounds known: not checked


@pytest.mark.parametrize("where", ["energy", "forces", "stress", "lattice", "positions"])
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_anywhere_fails(where, bad):
    res = result(si(), -107.0)
    if where == "energy":
        res.energy_ev = bad
    elif where == "forces":
        res.forces_ev_per_a[1] = [0.0, bad, 0.0]
    elif where == "stress":
        res.stress_gpa[2][1] = bad
    elif where == "lattice":
        res.structure["lattice"]["matrix"][0][1] = bad
    else:
        res.structure["sites"][1]["abc"][2] = bad
    v = check_result(res, "qe")
    assert v.check == "finite" and where in v.message


def test_huge_pressure_stress_and_force_fail():
    v = check_result(result(si(), -107.0, stress=np.diag([-800.0] * 3).tolist()), "qe")
    assert v.check == "pressure" and v.value == pytest.approx(800.0) and v.threshold == 500.0
    assert "800 GPa" in v.message and "500" in v.message
    shear = np.zeros((3, 3))
    shear[0, 1] = shear[1, 0] = 700.0
    v = check_result(result(si(), -107.0, stress=shear.tolist()), "qe")
    assert v.check == "stress" and v.value == pytest.approx(700.0) and "sigma_12" in v.message
    v = check_result(result(si(), -107.0, forces=[[0, 0, 0], [0, 0, 120.0]]), "qe")
    assert v.check == "force" and v.value == pytest.approx(120.0) and "Si1" in v.message


def test_first_failure_wins_and_limits_override():
    s = Structure(Lattice.cubic(5.43), ["Si", "Si"], [[0, 0, 0], [0.3 / 5.43, 0, 0]])
    # collapsed AND positive energy: geometry is checked first
    assert check_result(result(s, 100.0), "qe").check == "min_distance"
    assert check_result(result(s, -107.0), "qe", SanityLimits(distance_factor=0.1)) is None
    strict = SanityLimits(max_pressure_gpa=0.5)
    assert check_result(result(si(), -107.0), "qe", strict).check == "pressure"
    assert check_values(si(), -214.0, None, None, "qe") is None  # forces/stress absent: not checked
    assert check_values(si(), None, None, None, "qe").check == "missing"
    assert check_result(result(si(), -107.0), "qe", strict).to_json()["failure_code"] == "unphysical_result"
