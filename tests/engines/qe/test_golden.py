"""Golden pw.x cases (tests/data/qe, made by make_cases.py): real inputs and
outputs, read and classified without pw.x.

The expected figures in each case.json were read from the raw text with
plain regular expressions, so these tests check the parser's numbers and
unit conversions against what pw.x printed, and the classifier against the
outcome each case was provoked to have.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from pymatgen.core import Lattice, Structure

from aimmat.engines.qe.inputs import TASKS
from aimmat.engines.qe.parse import parse_pw_output
from aimmat.engines.qe.read import read_results
from aimmat.engines.qe.taxonomy import classify
from aimmat.engines.qe.write import write_inputs
from aimmat.engines.run_profile import split_profile

DATA = Path(__file__).resolve().parents[2] / "data" / "qe"
CASES = sorted(p.parent.name for p in DATA.glob("*/case.json"))


def load(name: str) -> tuple[dict, Structure]:
    case = json.loads((DATA / name / "case.json").read_text())
    s = case["structure"]
    return case, Structure(Lattice(s["lattice"]), s["species"], s["frac_coords"])


def test_the_cases_cover_the_taxonomy():
    codes = {json.loads((DATA / n / "case.json").read_text())["failure_code"] for n in CASES}
    assert {None, "electronic_not_converged", "ionic_nstep_exceeded", "out_of_walltime", "charge_wrong",
            "output_truncated", "converged_except_final_scf", "diagonalization_failure", "nonzero_exit",
            "out_of_memory", "interrupted", "cell_factor_too_small", "final_scf_pressure"} <= codes


@pytest.mark.parametrize("name", CASES)
def test_parse_and_classify(name):
    case, _ = load(name)
    text = (DATA / name / "outputs/pw.out").read_text()
    out = parse_pw_output(text)
    exp = case["expected"]
    assert len(out.energies_ry) == exp["n_total_energies"]
    assert out.scf_converged.count(True) == exp["n_scf_converged"]
    assert out.scf_converged.count(False) == exp["n_scf_not_converged"]
    assert out.job_done is exp["job_done"]
    banner = re.search(r"Program PWSCF v\.(\S+)", text)
    assert out.version == (banner.group(1) if banner else None)
    if exp["last_energy_ry"] is not None:
        assert out.energies_ry[-1] == exp["last_energy_ry"]
    err = (DATA / name / "outputs/pw.err").read_text()
    assert classify(out, case["returncode"], TASKS[case["task"]], case["timed_out"], err) == case["failure_code"]


@pytest.mark.parametrize("name", CASES)
def test_read_results(name):
    case, structure = load(name)
    exp = case["expected"]
    res = read_results(DATA / name / "outputs", structure, case["task"], case["returncode"], case["timed_out"], 1.5, case["kpts"])
    assert res.failure_code == case["failure_code"]
    assert res.converged is exp["converged"] is (case["failure_code"] is None)
    assert res.output_present is exp["output_present"]
    assert (res.structure is not None) is exp["has_structure"]
    assert res.n_steps == exp["n_steps"]
    assert res.extra["returncode"] == case["returncode"] and res.extra["kpoints"] == case["kpts"]
    assert res.wall_s == 1.5
    if case["failure_code"] is None:  # a finished SCF: metallicity is always known
        assert res.extra["metallic"] is exp["metallic"] is not None
    if res.failure_code:
        assert res.message
    if exp["last_energy_ev"] is not None:
        assert res.energy_ev == pytest.approx(exp["last_energy_ev"], rel=1e-12)
        # pw.x prints P > 0 for a compressed cell; tensile-positive stress gives P = -tr(sigma)/3
        pressure_gpa = -np.trace(res.stress_gpa) / 3
        assert pressure_gpa == pytest.approx(exp["last_pressure_kbar"] / 10, abs=2e-3)
        assert np.asarray(res.forces_ev_per_a).shape == (len(structure), 3)
    else:
        assert res.energy_ev is None


@pytest.mark.parametrize("name", CASES)
def test_write_inputs_reproduces_the_stored_input(name, tmp_path):
    case, structure = load(name)
    missing = [p for p in case["params"]["pseudo_files"].values() if not Path(p).is_file()]
    if missing:
        pytest.skip(f"pseudopotentials not installed: {missing}")
    physics, run = split_profile(case["params"])
    written = write_inputs(structure, physics, case["task"], tmp_path, walltime_s=run.walltime_s)
    assert list(written.kpts) == case["kpts"]
    assert written.path.read_text() == (DATA / name / "inputs/pw.in").read_text()


@pytest.mark.parametrize("name, metallic", [("si_scf_converged", False), ("al_scf_many_kpoints", True),
                                            ("ni_scf_magnetic_metal", True), ("si_vcrelax_converged", False)])
def test_metallicity_from_real_bands(name, metallic):
    case, _ = load(name)
    out = parse_pw_output((DATA / name / "outputs/pw.out").read_text())
    assert out.metallic is metallic
    if name == "al_scf_many_kpoints":
        assert case["expected"]["n_k_points"] >= 100 and len(out.bands_ev) == case["expected"]["n_k_points"]
    if name == "ni_scf_magnetic_metal":  # both spin channels read, a ferromagnet
        assert out.spin_polarized and len(out.bands_dw_ev) == len(out.bands_ev) > 0
        assert 0.3 < out.total_magnetization < 0.9


def test_final_scf_pressure_names_the_numbers():
    case, structure = load("si_vcrelax_final_scf_pressure")
    res = read_results(DATA / "si_vcrelax_final_scf_pressure" / "outputs", structure, "relax", 0, False, 1.0, case["kpts"])
    assert res.failure_code == "final_scf_pressure" and not res.converged
    assert "8.17 kbar" in res.message and "max(5 x press_conv_thr 0.5 kbar, 2 kbar)" in res.message
    assert res.structure is not None and res.extra["new_structure"]  # the restart point: the final cell


def test_cell_factor_case_keeps_the_last_cell():
    case, structure = load("si_vcrelax_cell_factor_too_small")
    res = read_results(DATA / "si_vcrelax_cell_factor_too_small" / "outputs", structure, "relax", case["returncode"], False, 1.0,
                       case["kpts"])
    assert res.failure_code == "cell_factor_too_small" and "cell_factor" in res.message
    assert res.extra["new_structure"] and Structure.from_dict(res.structure).volume < structure.volume
    assert "cell_factor      = 1.0" in (DATA / "si_vcrelax_cell_factor_too_small" / "inputs/pw.in").read_text()


def test_a_crash_in_the_diagonalization_is_a_diagonalization_failure():
    """A segfault right after "Starting wfcs" (a singular overlap on another BLAS
    kernel) gets the diagonalization remedy; the same signal mid-SCF is only a
    truncated output, and a crash after an MPI_ABORT banner is not a signal."""
    case, structure = load("al_scf_diagonalization_crash")
    res = read_results(DATA / "al_scf_diagonalization_crash" / "outputs", structure, "static", case["returncode"], False, 1.0,
                       case["kpts"])
    assert res.failure_code == "diagonalization_failure"
    assert "SIGSEGV" in res.message and "Starting wfcs" in res.message
    # the stopped-in-cdiaghg run of the same input: the same class, pw.x's own words
    twin, _ = load("al_scf_diagonalization_failure")
    res2 = read_results(DATA / "al_scf_diagonalization_failure" / "outputs", structure, "static", twin["returncode"], False, 1.0,
                        twin["kpts"])
    assert res2.failure_code == "diagonalization_failure" and "S matrix not positive definite" in res2.message
    out = parse_pw_output((DATA / "si_scf_output_truncated" / "outputs/pw.out").read_text())
    for rc in (-11, 139):
        assert classify(out, rc, "scf", False, "Program received signal SIGSEGV") == "output_truncated"
    crash = parse_pw_output((DATA / "al_scf_diagonalization_crash" / "outputs/pw.out").read_text())
    assert classify(crash, -11, "scf", False, "") == "diagonalization_failure"  # the signal alone, no backtrace
    assert classify(crash, 143, "scf", False, "") == "interrupted"  # SIGTERM from outside wins
    assert classify(crash, 0, "scf", False, "") == "output_truncated"  # no signal: only a cut output


def test_constructed_cases_say_so():
    for name in ("si_scf_out_of_memory", "si_scf_lapack_abort"):
        case, _ = load(name)
        assert case["constructed"] and "CONSTRUCTED" in case["note"]
    assert load("si_scf_interrupted")[0]["constructed"] is False
