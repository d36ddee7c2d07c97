"""Reading one candidate's structure file, and what it must hold to enter
a campaign. ``read_structure`` runs before anything is written (diff and
apply parse new candidates first), so a file refused here stops both with
exit 3 and an untouched campaign folder.

A structure that passes is one ordered periodic crystal: at least one atom
and at most ``MAX_ATOMS``, a finite, non-degenerate cell, finite
coordinates, real elements only (no dummy species such as ``X`` or an
unknown symbol like ``Xx``, which pymatgen reads as a dummy, and no
vacancies), and every site fully occupied by one element. A file must hold
exactly the one structure it is read as: a POSCAR that lists more position
lines than it declares atoms, and a CIF with several structure blocks, are
refused rather than cut short.

Each check returns ``None`` or ``(problem, fix)``; ``read_structure``
names the file, the candidate and the manifest key.
"""

from __future__ import annotations

import json
import os
import re
import warnings

from aimmat.errors import ManifestError

MAX_ATOMS = 1000  # more than this is not a candidate the stages can afford (DFT, elastic)
MAX_FILE_BYTES = 64 * 2**20  # a one-structure file (CIF, POSCAR, JSON) larger than this is not one
MIN_VOLUME_A3 = 0.1
MIN_CELL_SHAPE = 1e-3  # volume / (a b c): 1 for a cube; ~0 for flat or collinear cell vectors


def read_structure(src, where: str | None = None):
    """Parse one candidate's structure (``src``: a ``sources.CandidateSource``)
    and check it is one ordered crystal. ``where``: the source's manifest key
    (``<manifest>: candidate_sets.<i>.source``); errors name ``<where>.glob``,
    the file (and frame) and the candidate."""
    from pymatgen.core import Structure

    label = f"{where}.glob: " if where else ""
    label += f"{src.path}" + (f" frame {src.frame}" if src.frame is not None else "")
    cand = f"candidate {src.set_name}/{src.cand_id}"

    def refuse(problem: tuple[str, str]):
        return ManifestError(f"{label}: {problem[0]} ({cand})", fix=problem[1])

    try:
        if src.fmt != "extxyz" and (p := file_size_problem(os.stat(src.file).st_size)):
            raise refuse(p)
        if src.fmt == "json":
            data = json.loads(src.path.read_text())
            structure = Structure.from_dict(data)
        elif src.fmt == "cif":
            from pymatgen.io.cif import CifParser

            parser = CifParser(str(src.path))
            blocks = cif_structure_blocks(parser.as_dict())
            if len(blocks) > 1:
                raise refuse((f"CIF holds {len(blocks)} structure blocks ({', '.join('data_' + b for b in blocks)}); "
                              "a CIF file gives one candidate",
                              "split it into one file per block (one data_ block each)"))
            parsed = parser.parse_structures(primitive=False)
            if not parsed:
                raise ValueError("no structure in CIF")
            structure = parsed[0]
        elif src.fmt == "poscar":
            from monty.io import zopen
            from pymatgen.io.vasp import Poscar

            with zopen(src.file, mode="rt", encoding="utf-8") as fh:
                text = fh.read()
            if p := poscar_problem(text):
                raise refuse(p)
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                structure = Poscar.from_file(src.file).structure
            if any("cannot be determined" in str(w.message) for w in caught):
                raise refuse(("POSCAR names no elements (no symbols line, none after the coordinates, no POTCAR "
                              "beside it): pymatgen would invent H, He, ...", "add the element symbols line (VASP 5)"))
        else:
            from ase.io import read
            from pymatgen.io.ase import AseAtomsAdaptor

            atoms = read(str(src.path), index=src.frame if src.frame is not None else 0, format="extxyz")
            if not atoms.pbc.all():
                raise ValueError("frame is not periodic in all three directions (pbc must be T T T)")
            structure = AseAtomsAdaptor.get_structure(atoms)
    except ManifestError:
        raise
    except Exception as exc:  # parsers raise anything from KeyError to IndexError
        raise ManifestError(
            f"{label}: cannot read {src.fmt} structure for {cand}: {exc}",
            fix="check the file, or set the source's `format:`",
        ) from None
    try:
        problem = structure_problem(structure)
    except Exception as exc:  # a structure odd enough to break the checks is refused too
        problem = (f"cannot check the structure: {exc}", "check the file")
    if problem:
        raise refuse(problem)
    return structure


def structure_problem(structure) -> tuple[str, str] | None:
    """The first reason ``structure`` (a pymatgen Structure) cannot be a
    candidate, with its fix; ``None`` when it can."""
    import numpy as np

    n = len(structure)
    if n == 0:
        return "structure has no atoms", "the file must list at least one atomic site"
    if n > MAX_ATOMS:
        return (f"structure has {n} atoms, more than {MAX_ATOMS}",
                "use a smaller cell (the primitive cell, or a smaller supercell)")
    matrix = structure.lattice.matrix
    if not np.isfinite(matrix).all():
        return "lattice has non-finite values (nan or inf)", "write numbers for all nine lattice components"
    volume = abs(float(np.linalg.det(matrix)))
    lengths = np.linalg.norm(matrix, axis=1)
    shape = volume / float(np.prod(lengths)) if lengths.all() else 0.0
    if volume <= MIN_VOLUME_A3 or shape < MIN_CELL_SHAPE:
        return (f"cell volume {volume:.3g} A^3 (lattice vectors of lengths "
                f"{', '.join(f'{x:.3g}' for x in lengths)} A) is not a crystal cell: "
                "the lattice is singular or degenerate",
                "give three linearly independent lattice vectors")
    frac = structure.frac_coords
    bad = np.flatnonzero(~np.isfinite(frac).all(axis=1))
    if bad.size:
        return (f"{bad.size} site(s) have non-finite coordinates (nan or inf), the first is site {int(bad[0]) + 1}",
                "write numbers for every coordinate")
    dummies = _dummy_species(structure)
    if dummies:
        return (f"structure holds species that are not elements: {', '.join(dummies)} "
                "(a dummy species, a vacancy or an unknown element symbol)",
                "replace them with real elements, or remove those sites")
    partial = sum(1 for site in structure if not site.is_ordered)
    if partial:
        return (f"structure is disordered: {partial} of {n} site(s) are partially occupied "
                "(fractional occupancy, or more than one species on a site)",
                "order it before adding it, e.g. with pymatgen's OrderDisorderedStructureTransformation "
                "(pymatgen.transformations.standard_transformations), and add the ordered structure")
    return None


def _dummy_species(structure) -> list[str]:
    from pymatgen.core import Element, Species
    from pymatgen.core.periodic_table import DummySpecies

    out: list[str] = []
    for site in structure:
        for sp in site.species:
            if isinstance(sp, DummySpecies) or not isinstance(sp, (Element, Species)):
                label = str(getattr(sp, "symbol", sp))
                if label not in out:
                    out.append(label)
    return out


def file_size_problem(size: int) -> tuple[str, str] | None:
    if size > MAX_FILE_BYTES:
        return (f"file is {size / 2**20:.0f} MiB, more than a structure file of at most {MAX_ATOMS} atoms needs "
                f"(limit {MAX_FILE_BYTES // 2**20} MiB)",
                "check that the glob matches structure files only")
    return None


def poscar_problem(text: str) -> tuple[str, str] | None:
    """A POSCAR whose first block lists more position lines than its counts
    line declares atoms (pymatgen reads the declared number and drops the
    rest). What follows the first blank line (velocities, predictor-corrector
    data of a CONTCAR) is not counted. Header layout as pymatgen's
    ``Poscar.from_str`` reads it."""
    from pymatgen.util.io_utils import clean_lines

    chunks = re.split(r"\n\s*\n", text.rstrip())
    if chunks and chunks[0] == "":
        chunks.pop(0)
    if not chunks:
        return None
    lines = list(clean_lines(chunks[0].split("\n"), remove_empty_lines=False))
    try:
        try:
            counts = [int(t) for t in lines[5].split()]  # VASP 4: no symbols line
            ipos = 6
        except ValueError:
            n_sym = next(k for k in range(1, 11) if _is_int(lines[5 + k].split()[0]))
            counts = [int(t) for line in lines[5 + n_sym: 5 + 2 * n_sym] for t in line.split()]
            ipos = 5 + 2 * n_sym
        if lines[ipos].split()[0][0] in "sS":  # selective dynamics
            ipos += 1
    except (IndexError, ValueError, StopIteration):
        return None  # pymatgen read it; a layout this check does not know is left to pymatgen
    declared = sum(counts)
    listed = sum(1 for line in lines[ipos + 1:] if line.strip())
    if listed > declared:
        return (f"POSCAR declares {declared} atom(s) (counts line: {' '.join(map(str, counts))}) "
                f"but lists {listed} position lines",
                "make the counts line match the positions (or remove the extra lines)")
    return None


def _is_int(token: str) -> bool:
    try:
        int(token)
    except ValueError:
        return False
    return True


def cif_structure_blocks(cif_dict: dict) -> list[str]:
    """Names of the blocks of a CIF (``CifParser.as_dict()``) that list
    atomic sites; blocks of metadata only (``data_global``) do not count."""
    out = []
    for name, block in cif_dict.items():
        keys = {k.lower() for k in block}
        if "_atom_site_fract_x" in keys or "_atom_site_cartn_x" in keys:
            out.append(name)
    return out

