from __future__ import annotations

import pytest
from pymatgen.core import Lattice, Structure

from aimmat.stages.screen import min_distance_a, run_screen

CFG = {"min_distance_a": 0.5, "density_min_g_cm3": 0.5, "density_max_g_cm3": 25.0, "charge_neutral": True}


def nacl(a=5.64):
    return Structure.from_spacegroup("Fm-3m", Lattice.cubic(a), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])


def test_min_distance_includes_periodic_images():
    # one atom per cell: the only distances are to its own images
    s = Structure(Lattice.cubic(2.0), ["Cu"], [[0, 0, 0]])
    assert min_distance_a(s, 4.0) == pytest.approx(2.0)
    assert min_distance_a(nacl(), 4.0) == pytest.approx(5.64 / 2)


def test_nacl_passes_all():
    out = run_screen(nacl(), CFG, None, None, None)
    assert out.outputs["strict_pass"]
    assert set(out.outputs["criteria"]) == {"min_distance", "density", "charge_neutral"}
    assert out.outputs["criteria"]["density"]["value"] == pytest.approx(2.1, abs=0.15)


def test_each_criterion_can_fail():
    close = Structure(Lattice.cubic(4.0), ["Na", "Cl"], [[0, 0, 0], [0.05, 0, 0]])
    out = run_screen(close, CFG, None, None, None)
    assert not out.outputs["criteria"]["min_distance"]["pass"] and not out.outputs["strict_pass"]
    dilute = nacl(a=12.0)
    assert not run_screen(dilute, CFG, None, None, None).outputs["criteria"]["density"]["pass"]
    na2cl = Structure(Lattice.cubic(5.0), ["Na", "Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0], [0.5, 0.5, 0.5]])
    out = run_screen(na2cl, CFG, None, None, None)
    assert out.outputs["criteria"]["charge_neutral"]["pass"] is False
    assert run_screen(na2cl, {**CFG, "charge_neutral": False}, None, None, None).outputs["strict_pass"]
