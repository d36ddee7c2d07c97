"""Where candidate structures come from: files (CIF, POSCAR, extxyz, JSON).

Resolving a source is cheap (glob and hash); parsing is done only for
candidates that are new or whose source bytes changed.
"""

from __future__ import annotations

import fnmatch
import glob as globmod
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path

from aimmat.errors import ManifestError
from aimmat.identity import sha256_file
from aimmat.manifest.structure_checks import read_structure  # noqa: F401  (re-exported: parsing lives there)

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


def _count_extxyz_frames(path: str, where: str) -> int:
    """Count frames by walking atom-count lines, without parsing the frames
    (the lines of a frame are skipped unread)."""
    from itertools import islice

    frames = 0
    lineno = 0
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            for line in fh:
                lineno += 1
                head = line.strip()
                if not head:
                    continue
                try:
                    n = int(head)
                except ValueError:
                    n = -1
                if n < 0:
                    raise ManifestError(
                        f"{where}.glob: {path}:{lineno}: extxyz frame must start with an atom count, got '{head[:40]}'",
                        fix="check the file, or narrow the glob to structure files")
                frames += 1
                lineno += sum(1 for _ in islice(fh, n + 1))  # the comment line and n atom lines
    except OSError as exc:
        raise ManifestError(f"{where}.glob: cannot read {path}: {exc.strerror or exc}") from None
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


def _escapes(pattern: str, base: str) -> str | None:
    """Where a relative ``pattern`` lands when its ``..`` steps climb out of
    the top-level folder that holds the manifest (``/home``, ``/tmp``, ...),
    or ``None`` when it stays inside. Decided on the pattern as written (a
    lexical ``os.path.normpath``): links inside the tree are not followed."""
    top = base.lstrip(os.sep).split(os.sep, 1)[0]
    if not top or ".." not in pattern.split("/"):
        return None
    target = os.path.normpath(os.path.join(base, pattern))
    return None if target.lstrip(os.sep).split(os.sep, 1)[0] == top else target


def resolve_files(set_name: str, patterns: list[str], declared_fmt: str, base: Path, where: str,
                  hasher=None) -> list[CandidateSource]:
    """Candidate sources of a set's globs. ``hasher(path, stat) -> sha256``
    may answer from a cache (default: hash the file). ``where`` is the
    source's manifest key (``<manifest>:<line>: candidate_sets.<i>.source``);
    errors about what a glob matched name ``<where>.glob`` and the file.

    Relative globs are read from the manifest's folder and may climb out of
    it with ``..`` (a data folder beside the manifests' folder), but not
    out of the top-level folder that holds it: ``../../../../usr/share/*``
    reaches a system folder by counting steps, and is refused. Absolute
    globs are taken as written (``/data/runs/*.cif``, and ``/etc/*`` too:
    what it matches must then be structure files, like any glob's).
    """
    hits: list[tuple[str, os.stat_result]] = []
    base_abs = os.path.abspath(base)
    for pattern in patterns:
        absolute_pattern = Path(pattern).is_absolute()
        if not absolute_pattern and (target := _escapes(pattern, base_abs)) is not None:
            raise ManifestError(
                f"{where}.glob: glob '{pattern}' climbs out of {base_abs} with '..' to {target}, outside "
                f"{os.sep}{base_abs.lstrip(os.sep).split(os.sep, 1)[0]} (the top-level folder holding the manifest)",
                fix="point the glob at your structure files; write an absolute path if they really live there",
            )
        found = _glob_stat(pattern if absolute_pattern else str(base / pattern))
        if not found:
            raise ManifestError(
                f"{where}.glob: glob '{pattern}' matches no file (searched from {base})",
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
            try:
                fmt = detect_format(Path(h), declared_fmt)
            except ManifestError as exc:
                raise ManifestError(f"{where}.glob: glob {_which(patterns, h, base)} matched a file that is not a "
                                    f"structure file: {exc.message}",
                                    fix=f"narrow the glob to structure files; {exc.fix}") from None
            if not poscar:
                fmt_of[ext] = fmt
        try:
            digest = hasher(h, st) if hasher is not None else sha256_file(h)
        except OSError as exc:
            raise ManifestError(f"{where}.glob: cannot read {h} (matched by {_which(patterns, h, base)}): "
                                f"{exc.strerror or exc}", fix="narrow the glob to structure files you can read") from None
        # glob gives absolute paths here; normalize only when needed (os.path.relpath costs
        # more than the rest of this loop; the prefix test is the same for a normalized path)
        absolute = h if h.startswith("/") and "/." not in h and "//" not in h else os.path.abspath(h)
        rel = absolute[len(base_s):] if absolute.startswith(base_s) else absolute
        stem = name[:dot] if not poscar and ext.lower() in _SUFFIX_FORMAT else None
        base_id = stem if stem and _PLAIN_ID.fullmatch(stem) else _cand_id(name, h, where)
        if fmt == "extxyz":
            count = _count_extxyz_frames(h, where)
            if count == 0:
                raise ManifestError(f"{where}.glob: {h}: extxyz file holds no frame")
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


def _which(patterns: list[str], path: str, base: Path) -> str:
    """The glob of ``patterns`` that matched ``path`` (for messages only)."""
    for p in patterns:
        full = p if Path(p).is_absolute() else str(base / p)
        if any(h == path for h, _ in _glob_stat(full)):
            return f"'{p}'"
    return " or ".join(f"'{p}'" for p in patterns)
