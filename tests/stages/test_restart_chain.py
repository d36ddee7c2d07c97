"""Retries keep a relaxation's progress: a rung that does not restart from a
printed structure starts from the structure the failed attempt started from,
never from the stage's input (seen with real pw.x: a vc-relax stopped at
walltime after 14 BFGS steps, its restart stopped with 'charge is wrong'
before printing a cell, and the next rung went back to the generated cell
and spent another walltime on the same steps)."""

from __future__ import annotations

from pymatgen.core import Lattice, Structure

from aimmat.engines.base import EngineResult, Remedy
from aimmat.stages import relax as relax_mod
from aimmat.stages.relax import run_engine_task


def _cell(a: float) -> Structure:
    return Structure(Lattice.cubic(a), ["Si", "Si"], [[0, 0, 0], [0.25, 0.25, 0.25]])


class ScriptedEngine:
    """Attempt 1 stops at walltime having moved the cell; attempt 2 fails before
    printing a structure; attempt 3 finishes. Remedies as the QE ladder gives
    them: restart from the last structure, then a mixing change (no restart)."""

    name = "qe"

    def __init__(self):
        self.started_from: list[float] = []

    def run(self, structure, params, task, directory, kpts=None):
        self.started_from.append(round(structure.lattice.a, 6))
        n = len(self.started_from)
        if n == 1:
            return EngineResult(structure=_cell(5.2).as_dict(), failure_code="out_of_walltime", message="max_seconds",
                                has_output=True)
        if n == 2:
            return EngineResult(failure_code="charge_wrong", message="charge is wrong", has_output=True)
        return EngineResult(energy_ev=-200.0, forces_ev_per_a=[[0, 0, 0], [0, 0, 0]],
                            stress_gpa=[[0.0, 0, 0], [0, 0.0, 0], [0, 0, 0.0]], structure=_cell(5.1).as_dict(),
                            converged=True, n_steps=3, has_output=True)

    def remedy(self, code, overrides, params):
        if code == "out_of_walltime":
            return Remedy({"x": 1}, "restart from last structure", restart=True)
        if code == "charge_wrong":
            return Remedy({"x": 1, "mixing_beta": 0.5}, "mixing_beta 0.7 -> 0.5")
        return None


def test_a_rung_without_a_new_structure_keeps_the_last_start(tmp_path, monkeypatch):
    eng = ScriptedEngine()
    monkeypatch.setattr(relax_mod, "get_engine", lambda p: eng)
    s0 = _cell(5.6)
    prev = None
    for i in range(3):
        out = run_engine_task("relax", s0, {"kind": "qe"}, tmp_path / f"a{i}", prev)
        if out.ok:
            break
        assert out.retryable
        prev = out
    assert out.ok
    assert eng.started_from == [5.6, 5.2, 5.2]  # not back to 5.6 after the charge_wrong attempt
