"""ASE's EMT: a toy potential for fast tests of the machinery only."""

from __future__ import annotations

from ase.calculators.emt import EMT

from aimmat.engines.ase_engine import AseEngine


class EmtEngine(AseEngine):
    name = "emt"

    def calculator(self):
        return EMT()
