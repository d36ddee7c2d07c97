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
            "output_truncated", "converged_except_final_scf"} <= codes


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
    assert out.version == re.search(r"Program PWSCF v\.(\S+)", text).group(1)
    if exp["last_energy_ry"] is not None:
        assert out.energies_ry[-1] == exp["last_energy_ry"]
    assert classify(out, case["returncode"], TASKS[case["task"]], case["timed_out"]) == case["failure_code"]


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
