"""Write a pw.x input folder: the first step of the file-IO split."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from aimmat.engines.qe.inputs import build_input, kmesh
from aimmat.engines.qe.pseudos import upf_info

INPUT_NAME = "pw.in"


@dataclass(frozen=True)
class WrittenInput:
    """What ``write_inputs`` resolved and wrote.

    Attributes
    ----------
    path : Path
        The input file.
    pseudos : dict
        Element -> UPF path, for the structure's elements.
    zvals : dict
        Element -> valence charge from the UPF header.
    kpts : tuple
        Monkhorst-Pack mesh written to the input.
    namelists : dict
        Namelist values as written (``control``, ``system``, ...).
    """

    path: Path
    pseudos: dict[str, Path]
    zvals: dict[str, float]
    kpts: tuple[int, int, int]
    namelists: dict


def structure_pseudos(physics: dict, elements) -> dict[str, Path]:
    """The UPF files named in ``physics["pseudo_files"]`` for ``elements``.

    Raises
    ------
    ValueError
        When the parameters carry no resolved files: choosing pseudopotentials
        is the planner's decision (their bytes are in the stage key), never
        the engine's.
    """
    files = physics.get("pseudo_files")
    if not files:
        raise ValueError("pseudopotentials must be resolved before the engine runs: "
                         "pass params['pseudo_files'] = {element: path to the UPF file}")
    missing = sorted(set(elements) - set(files))
    if missing:
        raise ValueError(f"params['pseudo_files'] has no file for {', '.join(missing)}")
    return {el: Path(files[el]) for el in sorted(elements)}


def write_inputs(structure, physics: dict, task: str, directory: Path, kpts=None, *, walltime_s: float) -> WrittenInput:
    """Write ``directory/pw.in`` for ``task`` on ``structure``.

    Parameters
    ----------
    structure : pymatgen.core.Structure
        The cell to compute.
    physics : dict
        Physics parameters (a profile without its run fields) with resolved
        ``pseudo_files``.
    task : {"relax", "static", "relax_ions"}
        What to compute.
    directory : Path
        Created if missing.
        ``physics["restart_dir"]`` (set by the walltime/interruption ladder)
        names the previous attempt's ``out`` folder: it is copied to
        ``directory/out`` and the input asks pw.x to restart from it.
    kpts : tuple of int, optional
        Explicit mesh (the elastic stage shares one mesh across strained
        cells); default: from ``physics`` (``kpoints`` or ``kspacing_per_a``).
    walltime_s : float
        The run's wall-clock budget; pw.x is told to stop cleanly before it.

    Returns
    -------
    WrittenInput
    """
    directory.mkdir(parents=True, exist_ok=True)
    elements = sorted({sp.symbol for sp in structure.composition.elements})
    pseudos = structure_pseudos(physics, elements)
    infos = {el: upf_info(pseudos[el]) for el in elements}
    ultrasoft = any(i.pseudo_type in ("US", "USPP", "PAW") for i in infos.values())
    zvals = {el: infos[el].z_valence for el in elements}
    kpts = tuple(int(k) for k in (kpts or kmesh(structure, physics)))
    restart = _copy_restart_files(physics.get("restart_dir"), directory)
    text, namelists = build_input(structure, physics, task, pseudos, zvals, kpts, walltime_s, ultrasoft, restart)
    path = directory / INPUT_NAME
    path.write_text(text)
    return WrittenInput(path, pseudos, zvals, kpts, namelists)


def _copy_restart_files(source, directory: Path) -> bool:
    """Copy a previous attempt's ``out`` folder into ``directory/out``.

    A copy, not a link: pw.x rewrites its save folder, and the previous
    attempt's files stay as they were (a later retry or a post-mortem may
    need them). False when there is nothing to copy: the input then starts
    from scratch.
    """
    if not source or not Path(source).is_dir():
        return False
    shutil.rmtree(directory / "out", ignore_errors=True)
    shutil.copytree(source, directory / "out", symlinks=True)
    return True
