"""A strained cell that is lost for good is never fitted: the record names it
and says whether the remaining cells still span the constants."""

from __future__ import annotations

from ase.build import bulk
from pymatgen.core import Lattice, Structure
from pymatgen.io.ase import AseAtomsAdaptor

from aimmat.stages import elastic as elastic_stage
from aimmat.stages.base import StageOutcome

CFG = {"magnitudes": [-0.01, -0.005, 0.005, 0.01], "strain_set": "auto", "symprec": 0.01, "fit_rms_max_gpa": 2.0,
       "pd_min_eigenvalue_gpa": 0.0}
EMT = {"kind": "emt", "fmax_ev_per_a": 0.05, "max_steps": 100, "optimizer": "FIRE"}


def _losing(names):
    real = elastic_stage.run_engine_task

    def run(task, structure, profile, directory, previous, kpts=None, reuse_from=()):
        if directory.name in names:  # an engine crash without remedy, e.g. a node that died
            return StageOutcome(ok=False, failure_code="nonzero_exit", message="test: lost", retryable=False)
        return real(task, structure, profile, directory, previous, kpts=kpts)

    return run


def test_lost_cell_named_and_fit_from_the_rest(tmp_path, monkeypatch):
    monkeypatch.setattr(elastic_stage, "run_engine_task", _losing({"c01"}))
    cu = AseAtomsAdaptor.get_structure(bulk("Cu", "fcc", a=3.59))
    out = elastic_stage.run_elastic(cu, CFG, EMT, tmp_path, None)
    assert out.ok
    assert out.outputs["lost_cells"] == ["c01"] and out.outputs["complete"] is False
    assert out.outputs["n_cells"] == 4 and out.outputs["pass_pd"]


def test_lost_cells_that_break_the_span_fail_the_stage(tmp_path, monkeypatch):
    # hexagonal: two deformation types x 4 magnitudes; losing one whole type leaves 5 constants undetermined
    mg = Structure(Lattice.hexagonal(3.2, 5.2), ["Cu", "Cu"], [[1 / 3, 2 / 3, 0.25], [2 / 3, 1 / 3, 0.75]])
    monkeypatch.setattr(elastic_stage, "run_engine_task", _losing({"c04", "c05", "c06", "c07"}))
    out = elastic_stage.run_elastic(mg, CFG, EMT, tmp_path, None)
    assert not out.ok and not out.retryable
    assert "determine" in out.message and "of the crystal's 5 independent constants" in out.message
