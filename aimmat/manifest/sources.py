"""Where candidate structures come from: files (CIF, POSCAR, extxyz, JSON).

Resolving a source is cheap (glob and hash); parsing is done only for
candidates that are new or whose source bytes changed.
"""

from __future__ import annotations

import fnmatch
import glob as globmod
import json
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path

from aimmat.errors import ManifestError
from aimmat.identity import sha256_file

_SUFFIX_FORMAT = {
    ".cif": "cif",
    ".vasp": "poscar",
    ".poscar": "poscar",
    ".extxyz": "extxyz",
    ".xyz": "extxyz",
    ".json": "json",
}
_SAFE_STEM = re.compile(r"[^A-Za-z0-9._-]+")
_PLAIN_ID = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,98}[A-Za-z0-9])?")  # what _cand_id returns unchanged


@dataclass(frozen=True)
class CandidateSource:
    set_name: str
    cand_id: str
    file: str  # absolute (a str: 100k Path objects cost more than the rest of loading)
    relpath: str  # as recorded: relative to the manifest folder
    sha256: str
    fmt: str
    frame: int | None  # extxyz frame index

    @property
    def path(self) -> Path:
        return Path(self.file)

    def provenance(self) -> dict:
        return {"kind": "file", "path": self.relpath, "sha256": self.sha256, "format": self.fmt, "frame": self.frame}


@dataclass(frozen=True)
class GeneratedSource(CandidateSource):
    """Candidate ``frame`` (the sample index) of a generator source; ``sha256``
    is the checkpoint's, ``file`` the checkpoint file."""

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
    return [GeneratedSource(set_name, f"g{source.seed}-{i:05d}", str(file), relpath, sha256, "generator", i,
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


def _cand_id(name: str, path: str, where: str) -> str:
    """Candidate id from a file name (``name``, the basename of ``path``)."""
    stem = name
    low = stem.lower()
    for suffix in _SUFFIX_FORMAT:
        if low.endswith(suffix):
            stem = stem[: -len(suffix)]
            break
    if stem.upper() in {"POSCAR", "CONTCAR"}:
        stem = os.path.basename(os.path.dirname(path))
    cid = _SAFE_STEM.sub("_", stem).strip("._-")
    if not cid:
        raise ManifestError(f"{where}: file {path} gives no usable candidate id", fix="rename the file")
    return cid[:100]


def _glob_stat(pattern: str) -> list[tuple[str, os.stat_result]]:
    """(path, stat) of each regular file matching ``pattern``, sorted by
    path, as ``sorted(glob.glob(pattern, recursive=True))`` then ``os.stat``
    give them.

    The usual "folder/*.cif" is listed with os.scandir and matched with
    fnmatch by hand: glob's per-name os.path.join and the separate stat
    were a fifth of loading a 100k-file manifest. Other patterns go to glob.
    """
    folder, name = os.path.split(pattern)
    out = []
    if not globmod.has_magic(name) or globmod.has_magic(folder) or "**" in pattern:
        for h in sorted(globmod.glob(pattern, recursive=True)):
            try:
                st = os.stat(h)
            except OSError:
                continue
            if stat.S_ISREG(st.st_mode):
                out.append((h, st))
        return out
    match = re.compile(fnmatch.translate(name)).match
    hidden_ok = name.startswith(".")  # glob skips dot files unless the pattern names them
    prefix = folder if folder.endswith(os.sep) or not folder else folder + os.sep
    is_reg = stat.S_ISREG
    try:
        with os.scandir(folder or ".") as it:
            for entry in it:
                n = entry.name
                if (hidden_ok or n[0] != ".") and match(n):
                    try:
                        st = entry.stat()
                    except OSError:
                        continue
                    if is_reg(st.st_mode):
                        out.append((prefix + n, st))
    except (FileNotFoundError, NotADirectoryError, PermissionError):
        return []
    out.sort(key=lambda t: t[0])
    return out


def resolve_files(set_name: str, patterns: list[str], declared_fmt: str, base: Path, where: str,
                  hasher=None) -> list[CandidateSource]:
    """Candidate sources of a set's globs. ``hasher(path, stat) -> sha256``
    may answer from a cache (default: hash the file)."""
    hits: list[tuple[str, os.stat_result]] = []
    for pattern in patterns:
        found = _glob_stat(pattern if Path(pattern).is_absolute() else str(base / pattern))
        if not found:
            raise ManifestError(
                f"{where}: glob '{pattern}' matches no file (searched from {base})",
                fix="check the path; globs are relative to the manifest's folder",
            )
        hits.extend(found)
    if len(patterns) > 1:  # one file matched by two patterns is one candidate
        hits = list({h: st for h, st in hits}.items())
    out: list[CandidateSource] = []
    seen: dict[str, str] = {}
    base_s = os.path.realpath(base) + os.sep
    fmt_of: dict[str, str] = {}
    sep = os.sep
    for h, st in hits:
        name = h[h.rfind(sep) + 1:]
        poscar = name[:7].upper().startswith(("POSCAR", "CONTCAR"))
        dot = name.rfind(".")
        ext = name[dot:] if dot > 0 else ""  # os.path.splitext's answer for these names
        fmt = fmt_of.get(ext) if declared_fmt == "auto" and not poscar else None
        if fmt is None:
            fmt = detect_format(Path(h), declared_fmt)
            if not poscar:
                fmt_of[ext] = fmt
        digest = hasher(h, st) if hasher is not None else sha256_file(h)
        # glob gives absolute paths here; normalize only when needed (os.path.relpath costs
        # more than the rest of this loop; the prefix test is the same for a normalized path)
        absolute = h if h.startswith("/") and "/." not in h and "//" not in h else os.path.abspath(h)
        rel = absolute[len(base_s):] if absolute.startswith(base_s) else absolute
        stem = name[:dot] if not poscar and ext.lower() in _SUFFIX_FORMAT else None
        base_id = stem if stem and _PLAIN_ID.fullmatch(stem) else _cand_id(name, h, where)
        if fmt == "extxyz":
            count = _count_extxyz_frames(Path(h))
            if count == 0:
                raise ManifestError(f"{h}: extxyz file holds no frame")
            frames = [None] if count == 1 else list(range(count))
        else:
            frames = (None,)
        for frame in frames:
            cid = base_id if frame is None else f"{base_id}-{frame:04d}"
            if cid in seen:
                raise ManifestError(
                    f"{where}: duplicate candidate id '{cid}' from {seen[cid]} and {h}",
                    fix="rename one of the files; candidate ids come from file names",
                )
            seen[cid] = h
            out.append(CandidateSource(set_name, cid, absolute, rel, digest, fmt, frame))
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
