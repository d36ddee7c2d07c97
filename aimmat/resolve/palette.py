"""The element palette: which elements a campaign's candidates may contain.

Declared in ``campaign.palette`` or derived from the pseudopotential folders
of the QE profiles the chain runs: an element is covered when every such
profile finds a file for it (the same look-up as a stage key's). The
generator samples only within the palette (``aimmat.model.sample``), the
screen rejects file candidates outside it (``no_pseudopotential``), and no
element outside it ever reaches a resolve that would need its file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from aimmat.errors import ManifestError
from aimmat.manifest.load import CampaignSpec

MAX_Z = 103  # through Lr: no pseudopotential family covers more


@dataclass(frozen=True)
class Palette:
    """``elements``: the allowed symbols (None: no restriction).
    ``by_profile``: the elements each QE profile covers."""

    elements: frozenset[str] | None
    by_profile: dict[str, frozenset[str]] = field(default_factory=dict)
    declared: bool = False

    def outside(self, symbols) -> list[str]:
        """The symbols of ``symbols`` not in the palette, sorted."""
        if self.elements is None:
            return []
        return sorted(set(symbols) - self.elements)

    def key_value(self) -> list[str] | None:
        """The palette as a key input: sorted symbols, or None."""
        return None if self.elements is None else sorted(self.elements)

    def describe(self) -> str:
        if self.elements is None:
            return "palette: unrestricted (no QE stage, none declared)"
        src = "declared" if self.declared else "derived"
        names = ", ".join(f"{p} covers {len(e)}" for p, e in sorted(self.by_profile.items()))
        return f"palette ({src}{'; ' + names if names else ''}): {len(self.elements)} elements: " + " ".join(_by_z(self.elements))


def _by_z(symbols) -> list[str]:
    from pymatgen.core.periodic_table import Element

    return sorted(symbols, key=lambda s: Element(s).Z)


def qe_profiles(spec: CampaignSpec) -> list[str]:
    """Names of the QE profiles that the chain's engine stages run."""
    out = []
    for d in spec.chain():
        if d.kind != "engine":
            continue
        name = spec.profile_name(d.name)
        if name and spec.manifest.profiles[name].kind == "qe" and name not in out:
            out.append(name)
    return out


def profile_folder(spec: CampaignSpec, name: str) -> Path:
    from aimmat.engines.qe.pseudos import family_dir

    pseudo = spec.manifest.profiles[name].pseudo
    if pseudo.family:
        return family_dir(pseudo.family)
    folder = Path(pseudo.dir).expanduser()
    return folder if folder.is_absolute() else spec.base / folder


def covered(folder: Path, files: dict[str, str], functional: str) -> frozenset[str]:
    """Elements for which ``find_pseudo`` finds a file in ``folder``."""
    entries = tuple((p.name, p.stat().st_mtime_ns) for p in sorted(folder.iterdir())) if folder.is_dir() else ()
    return _covered(folder, entries, tuple(sorted(files.items())), functional)


@lru_cache(maxsize=64)
def _covered(folder: Path, entries: tuple, files: tuple, functional: str) -> frozenset[str]:
    from pymatgen.core.periodic_table import Element

    from aimmat.engines.qe.pseudos import find_pseudo

    out = set()
    # only elements with a file whose name could match are probed
    stems = {name.split(".")[0].split("_")[0].split("-")[0].lower() for name, _ in entries}
    named = dict(files)
    for z in range(1, MAX_Z + 1):
        el = Element.from_Z(z).symbol
        if el not in named and el.lower() not in stems:
            continue
        try:
            find_pseudo(folder, el, named, functional)
        except (LookupError, OSError):
            continue
        out.add(el)
    return frozenset(out)


def campaign_palette(spec: CampaignSpec) -> Palette:
    """The palette of ``spec`` on this machine.

    Raises
    ------
    ManifestError
        When a declared element has no pseudopotential in a QE profile's
        folder, or a folder cannot be read (family not installed).
    """
    by_profile: dict[str, frozenset[str]] = {}
    for name in qe_profiles(spec):
        pseudo = spec.manifest.profiles[name].pseudo
        try:
            folder = profile_folder(spec, name)
        except LookupError as exc:
            raise ManifestError(f"{spec.path}: profiles.{name}.pseudo: {exc}",
                                fix="install the family's package or point `pseudo.dir` at a folder of UPF files") from None
        if not folder.is_dir():
            raise ManifestError(f"{spec.path}: profiles.{name}.pseudo: folder {folder} does not exist",
                                fix="point `pseudo.dir` at a folder of UPF files")
        by_profile[name] = covered(folder, dict(pseudo.files), pseudo.functional)
    declared = spec.manifest.campaign.palette
    if declared is not None:
        for name, cov in by_profile.items():
            missing = sorted(set(declared) - cov)
            if missing:
                folder = profile_folder(spec, name)
                raise ManifestError(
                    f"{spec.path}: campaign.palette: no pseudopotential for {', '.join(missing)} in profile {name}'s folder {folder}",
                    fix=f"remove {', '.join(missing)} from campaign.palette, add UPF files for them, or choose a family that covers them")
        pal = Palette(frozenset(declared), by_profile, True)
    elif not by_profile:
        return Palette(None, by_profile)
    else:
        pal = Palette(frozenset.intersection(*by_profile.values()), by_profile)
    from aimmat.manifest.models import GeneratorSource

    for i, cset in enumerate(spec.manifest.candidate_sets):
        if isinstance(cset.source, GeneratorSource) and cset.elements > len(pal.elements):
            raise ManifestError(
                f"{spec.path}: candidate_sets[{i}] ({cset.name}): {cset.elements} elements per candidate, but the palette has "
                f"{len(pal.elements)} ({' '.join(_by_z(pal.elements))})",
                fix="widen campaign.palette or the QE profiles' pseudopotential folders")
    return pal
