"""The sanity gate inside the engine call every stage uses: a finished pw.x
run whose printed fields are all finite but whose result is unphysical
(positive energy of thousands of Ry, collapsed atoms) is unphysical_result,
not retried, and never reaches the elastic fit."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from pymatgen.core import Lattice, Structure

from aimmat.engines.qe.read import read_results
from aimmat.stages import relax as relax_mod
from aimmat.stages.relax import run_engine_task

GOLDEN = Path(__file__).resolve().parents[1] / "data" / "qe" / "si_scf_converged"


def _case():
    case = json.loads((GOLDEN / "case.json").read_text())
    s = case["structure"]
    return case, Structure(Lattice(s["lattice"]), s["species"], s["frac_coords"])


class ReplayEngine:
    """Returns a stored real pw.x output, read by the real reader (no pw.x run)."""

    name = "qe"

    def __init__(self, outputs: Path, structure: Structure, case: dict):
        self.outputs, self.structure, self.case = outputs, structure, case
        self.runs = 0

    def run(self, structure, params, task, directory, kpts=None):
        self.runs += 1
        c = self.case
        return read_results(self.outputs, self.structure, c["task"], c["returncode"], c["timed_out"], 1.0, c["kpts"])

    def remedy(self, code, overrides, params):
        return None


def _edited(tmp_path: Path, fn) -> Path:
    out = tmp_path / "outputs"
    shutil.copytree(GOLDEN / "outputs", out)
    (out / "pw.out").write_text(fn((out / "pw.out").read_text()))
    return out


def test_real_output_passes_the_gate(tmp_path, monkeypatch):
    case, s = _case()
    monkeypatch.setattr(relax_mod, "get_engine", lambda p: ReplayEngine(GOLDEN / "outputs", s, case))
    out = run_engine_task("static", s, {"kind": "qe"}, tmp_path, None)
    assert out.ok and out.outputs["energy_per_atom_ev"] < 0


def test_positive_energy_of_thousands_of_ry_is_unphysical(tmp_path, monkeypatch):
    case, s = _case()
    # every field stays finite: only the total energy's sign and size are wrong
    outputs = _edited(tmp_path, lambda t: re.sub(r"(!\s+total energy\s+=\s+)-?[\d.]+", r"\g<1>5000.00000000", t))
    eng = ReplayEngine(outputs, s, case)
    monkeypatch.setattr(relax_mod, "get_engine", lambda p: eng)
    out = run_engine_task("static", s, {"kind": "qe"}, tmp_path / "run", None)
    assert not out.ok and out.failure_code == "unphysical_result" and not out.retryable
    assert out.outputs["sanity"]["check"] == "energy_per_atom" and "eV/atom" in out.message
    assert np.isfinite(out.outputs["energy_ev"])


def test_collapsed_atoms_are_unphysical(tmp_path, monkeypatch):
    case, s = _case()
    collapsed = Structure(s.lattice, s.species, [[0, 0, 0], [0.02, 0.0, 0.0]])
    eng = ReplayEngine(GOLDEN / "outputs", collapsed, case)
    monkeypatch.setattr(relax_mod, "get_engine", lambda p: eng)
    out = run_engine_task("static", collapsed, {"kind": "qe"}, tmp_path, None)
    assert out.failure_code == "unphysical_result" and out.outputs["sanity"]["check"] == "min_distance"
    assert "min distance" in out.message


def test_an_unphysical_cell_is_never_fitted(tmp_path, monkeypatch):
    from aimmat.stages.elastic import run_elastic

    case, s = _case()
    bad = _edited(tmp_path, lambda t: re.sub(r"(!\s+total energy\s+=\s+)-?[\d.]+", r"\g<1>5000.00000000", t))
    monkeypatch.setattr(relax_mod, "get_engine", lambda p: ReplayEngine(bad, s, case))
    cfg = {"magnitudes": [-0.01, 0.01], "strain_set": "auto", "symprec": 0.01, "fit_rms_max_gpa": 2.0,
           "pd_min_eigenvalue_gpa": 0.0, "standard_setting": False, "strain_set_by": "n_cells"}
    out = run_elastic(s, cfg, {"kind": "emt"}, tmp_path / "el")
    assert not out.ok and out.failure_code == "unphysical_result"
    assert "tensor_voigt_gpa" not in out.outputs
