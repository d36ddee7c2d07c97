"""Write the demo's structure files from pymatgen/ASE builders.

Run from the project root: ``python scripts/make_demo_structures.py``.
Lattice constants are experimental room-temperature values; the engines
relax them. Primitive cells keep the demo fast.
"""

from __future__ import annotations

from pathlib import Path

from ase.build import bulk
from pymatgen.core import Lattice, Structure
from pymatgen.io.ase import AseAtomsAdaptor

OUT = Path(__file__).resolve().parent.parent / "manifests" / "structures"


def demo_structures() -> dict[str, dict[str, Structure]]:
    conv = AseAtomsAdaptor.get_structure
    perovskite = Structure(Lattice.cubic(3.905), ["Sr", "Ti", "O", "O", "O"],
                           [[0, 0, 0], [0.5, 0.5, 0.5], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]])
    return {
        "1-element": {
            "Si": conv(bulk("Si", "diamond", a=5.431)),
            "Al": conv(bulk("Al", "fcc", a=4.05)),
            "Cu": conv(bulk("Cu", "fcc", a=3.615)),
        },
        "2-element": {
            "MgO": conv(bulk("MgO", "rocksalt", a=4.212)),
            "NaCl": conv(bulk("NaCl", "rocksalt", a=5.64)),
            "GaAs": conv(bulk("GaAs", "zincblende", a=5.653)),
        },
        "3-element": {"SrTiO3": perovskite},
    }


def emt_structures() -> dict[str, dict[str, Structure]]:
    """Metals and alloys EMT knows, for machinery tests."""
    conv = AseAtomsAdaptor.get_structure
    cuau = Structure(Lattice.cubic(3.75), ["Cu", "Au"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    nial = Structure(Lattice.cubic(2.88), ["Ni", "Al"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    return {
        "1-element": {"Cu": conv(bulk("Cu", "fcc", a=3.6)), "Al": conv(bulk("Al", "fcc", a=4.05)), "Ni": conv(bulk("Ni", "fcc", a=3.52))},
        "2-element": {"CuAu": cuau, "NiAl": nial},
    }


def qe_structures() -> dict[str, dict[str, Structure]]:
    """Small cells for the Quantum ESPRESSO demo, primitive vectors along the
    cubic axes' diagonals so the tensor's frame is the crystal's cubic frame
    (written as POSCAR: CIF would re-orient the lattice)."""
    conv = AseAtomsAdaptor.get_structure
    return {
        "1-element": {"Si": conv(bulk("Si", "diamond", a=5.43))},
        "2-element": {"SiC": conv(bulk("SiC", "zincblende", a=4.36))},
    }


def write(sets: dict[str, dict[str, Structure]], out: Path, fmt: str = "cif") -> list[Path]:
    paths = []
    for set_name, items in sets.items():
        (out / set_name).mkdir(parents=True, exist_ok=True)
        for name, s in items.items():
            path = out / set_name / f"{name}.{'vasp' if fmt == 'poscar' else fmt}"
            s.to(filename=str(path), fmt=fmt)
            paths.append(path)
    return paths


if __name__ == "__main__":
    for p in write(demo_structures(), OUT) + write(qe_structures(), OUT.parent / "structures-qe", fmt="poscar"):
        print(p.relative_to(OUT.parent.parent))
