"""Manifest blocks of the stages (``stages.<name>:``), declared in the stage table."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, Field, model_validator

from aimmat.manifest.models_base import FieldError, SafeId, Strict, bounded


class ScreenStage(Strict):
    min_distance_a: float = bounded(0.5, gt=0, le=5, description="Smallest allowed interatomic distance (A).")
    density_min_g_cm3: float = bounded(0.5, ge=0, le=30, description="Smallest allowed density (g/cm3).")
    density_max_g_cm3: float = bounded(25.0, gt=0, le=30, description="Largest allowed density (g/cm3; osmium: 22.6).")
    charge_neutral: bool = Field(True, description="SMACT charge neutrality + electronegativity test.")
    prerelax_profile: SafeId | None = Field(
        None, description="Relax with this (emt/chgnet) profile before the checks: ML pre-relaxation."
    )

    @model_validator(mode="after")
    def _bounds(self) -> "ScreenStage":
        if self.density_min_g_cm3 >= self.density_max_g_cm3:
            raise FieldError(("density_min_g_cm3",), f"{self.density_min_g_cm3} must be below "
                             f"density_max_g_cm3 ({self.density_max_g_cm3})")
        return self


class RelaxStage(Strict):
    profile: SafeId


class ScfStage(Strict):
    profile: SafeId


def _magnitudes(values: list[float]) -> list[float]:
    for v in values:
        if not 0 < abs(v) <= 0.1:  # written so that NaN fails too
            raise ValueError(f"strain magnitude {v} must be non-zero and at most 0.1 in size")
    if len(set(values)) != len(values):
        raise ValueError("strain magnitudes must be distinct")
    return values


class ElasticStage(Strict):
    profile: SafeId
    magnitudes: Annotated[list[Annotated[float, Field(ge=-0.1, le=0.1)]], AfterValidator(_magnitudes)] = Field(
        default_factory=lambda: [-0.01, -0.005, 0.005, 0.01], min_length=2, max_length=20,
        description="Lagrangian strain magnitudes applied along each deformation type (largest component); "
                    "2 to 20 distinct values, each non-zero and in [-0.1, 0.1].",
    )
    strain_set: Literal["auto", "pure"] = Field(
        "auto", description="auto: fewest coupled deformation types for the Laue class (noise within 1.5x of the pure set); pure: the six pure states."
    )
    symprec: float = bounded(0.01, gt=0, le=0.5, description="spglib tolerance for the Laue class (A).")
    fit_rms_max_gpa: float = bounded(2.0, gt=0, le=1000, description="pass_fit_rms gate: residual RMS of the fit below this (GPa).")
    pd_min_eigenvalue_gpa: float = bounded(
        0.0, ge=-1000, le=1000, description="pass_pd gate: smallest eigenvalue of the symmetric 6x6 above this (GPa).")
