"""Every stage function has one signature and is reachable by dotted name:
fn(structure, cfg, profile, directory, previous) -> StageOutcome."""

from __future__ import annotations

import importlib
import inspect

import pytest
from ase.build import bulk
from pymatgen.io.ase import AseAtomsAdaptor

from aimmat.stages.base import StageOutcome

STAGE_FNS = ["aimmat.stages.screen:run_screen", "aimmat.stages.relax:run_relax", "aimmat.stages.scf:run_scf",
             "aimmat.stages.elastic:run_elastic"]
EMT = {"kind": "emt", "fmax_ev_per_a": 0.01, "max_steps": 200, "optimizer": "FIRE"}


def load(target: str):
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


@pytest.mark.parametrize("target", STAGE_FNS)
def test_one_signature(target):
    params = list(inspect.signature(load(target)).parameters)
    assert params == ["structure", "cfg", "profile", "directory", "previous"]


def test_relax_then_scf_through_the_uniform_call(tmp_path):
    cu = AseAtomsAdaptor.get_structure(bulk("Cu", "fcc", a=3.5))
    relax = load("aimmat.stages.relax:run_relax")(cu, {}, EMT, tmp_path / "relax", None)
    assert isinstance(relax, StageOutcome) and relax.ok and abs(relax.outputs["pressure_gpa"]) < 0.5
    from pymatgen.core import Structure

    scf = load("aimmat.stages.scf:run_scf")(Structure.from_dict(relax.outputs["structure"]), {}, EMT, tmp_path / "scf", None)
    assert scf.ok and scf.outputs["n_steps"] == 0
    assert scf.outputs["energy_ev"] == pytest.approx(relax.outputs["energy_ev"], abs=1e-8)
