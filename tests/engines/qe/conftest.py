from __future__ import annotations

import shutil

import pytest
from pymatgen.core import Lattice, Structure

from aimmat.engines.qe.pseudos import resolve_pseudos
from aimmat.manifest.qe_profile import QeProfile

needs_pw = pytest.mark.skipif(shutil.which("pw.x") is None, reason="pw.x not installed (apt-get install quantum-espresso)")
A_SI = 5.43
BASE = {
    "kind": "qe",
    "preset": "fast",
    "pseudo": {"family": "debian", "files": {"Si": "Si.pbe-rrkj.UPF", "Al": "Al.pz-vbc.UPF"}},
    "ecutwfc_ry": 20,
    "kpoints": [2, 2, 2],
    "walltime_s": 300,
}


def profile(**kw) -> dict:
    """A validated qe profile dict with its ``pseudo_files`` resolved, as the
    executor passes it (the engine never resolves pseudopotentials itself)."""
    d = QeProfile.model_validate({**BASE, **kw}).model_dump()
    d["pseudo_files"] = {el: str(p) for el, p in resolve_pseudos(d["pseudo"], d["pseudo"]["files"]).items()}
    return d


def si(shift: float = 0.0) -> Structure:
    a = A_SI
    return Structure(Lattice([[0, a / 2, a / 2], [a / 2, 0, a / 2], [a / 2, a / 2, 0]]), ["Si", "Si"], [[0, 0, 0], [0.25 + shift, 0.25, 0.25]])


def al() -> Structure:
    return Structure(Lattice.cubic(4.05), ["Al"], [[0, 0, 0]])
