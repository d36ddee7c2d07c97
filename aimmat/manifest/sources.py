"""Where candidate structures come from: files (CIF, POSCAR, extxyz, JSON).

Resolving a source is cheap (glob and hash); parsing is done only for
candidates that are new or whose source bytes changed.
"""

from __future__ import annotations

import glob as globmod
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from aimmat.errors import ManifestError
from aimmat.manifest.identity import sha256_file

_SUFFIX_FORMAT = {
    ".cif": "cif",
    ".vasp": "poscar",
    ".poscar": "poscar",
    ".extxyz": "extxyz",
    ".xyz": "extxyz",
    ".json": "json",
}
_SAFE_STEM = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass(frozen=True)
class CandidateSource:
    set_name: str
    cand_id: str
    path: Path  # absolute
    relpath: str  # as recorded: relative to the manifest folder
    sha256: str
    fmt: str
    frame: int | None  # extxyz frame index

    def provenance(self) -> dict:
        return {"kind": "file", "path": self.relpath, "sha256": self.sha256, "format": self.fmt, "frame": self.frame}


@dataclass(frozen=True)
class GeneratedSource(CandidateSource):
    """Candidate ``frame`` (the sample index) of a generator source; ``sha256``
    is the checkpoint's, ``path`` the checkpoint file."""

    model: str
    n_elements: int
    seed: int
    schedule: tuple  # sorted (name, value) pairs; () = the checkpoint's own

    def provenance(self) -> dict:
        return {"kind": "generator", "model": self.model, "checkpoint": self.relpath, "checkpoint_sha256": self.sha256,
                "seed": self.seed, "index": self.frame, "n_elements": self.n_elements,
                "schedule": dict(self.schedule) or None}


def resolve_generator(set_name: str, n_elements: int, source, file: Path, relpath: str, sha256: str) -> list[GeneratedSource]:
    schedule = tuple(sorted(source.schedule.model_dump().items())) if source.schedule else ()
    return [GeneratedSource(set_name, f"g{source.seed}-{i:05d}", file, relpath, sha256, "generator", i,
                            str(source.model), n_elements, source.seed, schedule)
            for i in range(source.count)]


def detect_format(path: Path, declared: str) -> str:
    if declared != "auto":
        return declared
    name = path.name.upper()
    if name.startswith(("POSCAR", "CONTCAR")):
        return "poscar"
    fmt = _SUFFIX_FORMAT.get(path.suffix.lower())
    if fmt is None:
        raise ManifestError(
            f"{path}: cannot tell the structure format from the file name",
            fix="use .cif, .vasp/POSCAR, .extxyz or .json, or set `format:` on the source",
        )
    return fmt


def _count_extxyz_frames(path: Path) -> int:
    """Count frames by walking atom-count lines, without parsing the frames."""
    frames = 0
    with open(path, encoding="utf-8", errors="replace") as fh:
        lines = fh.readlines()
    i = 0
    while i < len(lines):
        head = lines[i].strip()
        if not head:
            i += 1
            continue
        try:
            n = int(head)
        except ValueError:
            raise ManifestError(f"{path}:{i + 1}: extxyz frame must start with an atom count, got '{head[:40]}'") from None
        frames += 1
        i += n + 2
    return frames


def _cand_id(path: Path, where: str) -> str:
    stem = path.name
    for suffix in _SUFFIX_FORMAT:
        if stem.lower().endswith(suffix):
            stem = stem[: -len(suffix)]
            break
    if stem.upper() in {"POSCAR", "CONTCAR"}:
        stem = path.parent.name
    cid = _SAFE_STEM.sub("_", stem).strip("._-")
    if not cid:
        raise ManifestError(f"{where}: file {path} gives no usable candidate id", fix="rename the file")
    return cid[:100]


def resolve_files(set_name: str, patterns: list[str], declared_fmt: str, base: Path, where: str) -> list[CandidateSource]:
    paths: list[Path] = []
    for pattern in patterns:
        if Path(pattern).is_absolute():
            hits = sorted(globmod.glob(pattern, recursive=True))
        else:
            hits = sorted(globmod.glob(str(base / pattern), recursive=True))
        hits = [h for h in hits if Path(h).is_file()]
        if not hits:
            raise ManifestError(
                f"{where}: glob '{pattern}' matches no file (searched from {base})",
                fix="check the path; globs are relative to the manifest's folder",
            )
        paths.extend(Path(h) for h in hits)
    out: list[CandidateSource] = []
    seen: dict[str, Path] = {}
    base_s = os.path.realpath(base)
    for path in dict.fromkeys(paths):
        fmt = detect_format(path, declared_fmt)
        digest = sha256_file(path)
        absolute = os.path.abspath(path)
        rel = os.path.relpath(absolute, base_s) if absolute.startswith(base_s + os.sep) else absolute
        base_id = _cand_id(path, where)
        frames = [None]
        if fmt == "extxyz":
            count = _count_extxyz_frames(path)
            if count == 0:
                raise ManifestError(f"{path}: extxyz file holds no frame")
            frames = [None] if count == 1 else list(range(count))
        for frame in frames:
            cid = base_id if frame is None else f"{base_id}-{frame:04d}"
            if cid in seen:
                raise ManifestError(
                    f"{where}: duplicate candidate id '{cid}' from {seen[cid]} and {path}",
                    fix="rename one of the files; candidate ids come from file names",
                )
            seen[cid] = path
            out.append(CandidateSource(set_name, cid, path, rel, digest, fmt, frame))
    return out


def read_structure(src: CandidateSource):
    """Parse one candidate's structure; errors name the file."""
    from pymatgen.core import Structure

    try:
        if src.fmt == "json":
            data = json.loads(src.path.read_text())
            structure = Structure.from_dict(data)
        elif src.fmt == "cif":
            from pymatgen.io.cif import CifParser

            parsed = CifParser(str(src.path)).parse_structures(primitive=False)
            if not parsed:
                raise ValueError("no structure in CIF")
            structure = parsed[0]
        elif src.fmt == "poscar":
            from pymatgen.io.vasp import Poscar

            structure = Poscar.from_file(str(src.path)).structure
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
        where = f"{src.path}" + (f" frame {src.frame}" if src.frame is not None else "")
        raise ManifestError(
            f"{where}: cannot read {src.fmt} structure for candidate {src.set_name}/{src.cand_id}: {exc}",
            fix="check the file, or set the source's `format:`",
        ) from None
    if len(structure) == 0:
        raise ManifestError(f"{src.path}: structure has no atoms")
    if structure.volume <= 0.1:
        raise ManifestError(f"{src.path}: cell volume {structure.volume:.3g} A^3 is not a crystal cell")
    return structure
