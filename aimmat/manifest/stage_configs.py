"""Manifest blocks of the stages (``stages.<name>:``), declared in the stage table."""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

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
    # synthesis-oriented criteria: off unless set (and then part of the screen's key)
    hhi_production_max: float | None = bounded(
        None, gt=0, le=10000, description="Elemental supply: largest allowed Herfindahl-Hirschman index of production "
        "(pymatgen's HHI data, Gaillard et al., Chem. Mater. 2013; US DOJ: above 2500 is highly concentrated).")
    toxic_list: Literal["rohs", "epa_priority_metals"] | None = Field(
        None, description="Reject compositions with an element of this list (aimmat/stages/toxic_elements.json names "
                          "each list's source: EU RoHS 2011/65/EU Annex II; US EPA priority pollutants, 40 CFR 423 App. A).")
    no_radioactive: bool = Field(False, description="Reject compositions with an element that has no stable isotope.")

    KEY_OMIT_DEFAULT: ClassVar[tuple[str, ...]] = ("hhi_production_max", "toxic_list", "no_radioactive")

    def key_criteria(self) -> dict:
        """The criteria in the screen's key: the synthesis-oriented ones only when set, so a campaign screened
        before they existed keeps its keys."""
        d = self.model_dump()
        for k in self.KEY_OMIT_DEFAULT:
            if d[k] in (None, False):
                d.pop(k)
        return d

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
    residual_stress_max_gpa: float = bounded(
        1.0, gt=0, le=1000, description="The unstrained cell's largest principal stress above this (GPa) fails the stage "
                                        "(residual_stress): a cell that is not at equilibrium gives no tensor to fit.")
    standard_setting: bool = Field(True, description="Compute in the spglib standard orientation (pw.x finds every symmetry); "
                                                     "the tensor is rotated back to the structure's frame.")
    strain_set_by: Literal["cost", "n_cells"] = Field(
        "cost", description="auto strain set: cheapest by predicted k-points x cells (cost), or fewest cells.")


class ConvergeStage(Strict):
    """Converged settings per candidate, judged on what elastic constants need.

    On the candidate's cell (the screen's ML pre-relaxed one when the screen
    has a ``prerelax_profile``, else as imported): a cutoff ladder on one
    coarse mesh; then, on that
    cell vc-relaxed at the chosen cutoff (``probe_relax``), a k-spacing ladder
    (for metals at each smearing width of ``degauss_ladder_ry``), each step
    computing the unstrained cell and one sheared cell (engineering shear
    ``shear_strain``; on the k ladder the sheared cells only for a step whose
    unstrained cell has settled: they cost several times more).
    A step is converged when the energy per atom, every stress component of
    the unstrained cell and the shear stress of the sheared cell move by less
    than the tolerances to the next step. SCF and elastic then run with the
    chosen cutoff, k-spacing and smearing (they enter their keys).
    """

    profile: SafeId
    stress_tol_kbar: float = bounded(0.5, gt=0, le=100, description="Largest change of any stress component to the next step (kbar).")
    energy_tol_mev_per_atom: float = bounded(1.0, gt=0, le=1000, description="Largest change of the energy per atom to the next step (meV/atom).")
    shear_strain: float = bounded(0.01, gt=0, le=0.05, description="Shear of the probe cell (engineering strain of the xy component).")
    shear_tol_rel: float = bounded(
        0.05, gt=0, le=1, description="The shear-stress tolerance is the smaller of stress_tol_kbar and this fraction of the shear "
                                      "response (sheared minus unstrained xy stress): fcc Al's 1% shear gives ~3 kbar, where 0.5 kbar "
                                      "alone lets C44 move 15%.")
    shear_tol_min_kbar: float = bounded(
        0.05, gt=0, le=100, description="Floor of the relative shear tolerance (kbar): pw.x prints stresses to 0.01 kbar, and an "
                                        "under-sampled metal's shear response can be near zero.")
    ecutwfc_kspacing_per_a: float = bounded(
        0.5, gt=0, le=5, description="k-spacing of the cutoff ladder (1/A) where it is coarser than the profile's: the cutoff's effect "
                                     "on stress (basis incompleteness, Pulay stress) does not depend on the Brillouin-zone sampling, "
                                     "and every point of the ladder shares one mesh; the k ladder then runs at the chosen cutoff.")
    probe_relax: bool = Field(
        True, description="Before the k and smearing ladders, vc-relax the cell at the chosen cutoff on the cutoff ladder's mesh, "
                          "and run those ladders on it: a generated cell is typically 10-200 kbar from equilibrium, where the "
                          "1% shear probe's response mixes in the residual stress (one generated metal's probe answered 1 kbar "
                          "to 1% under a 31 kbar residual shear) and says little about the C44 the elastic stage will fit.")
    ecutwfc_step_ry: float = bounded(10.0, gt=0, le=200, description="Cutoff ladder step (Ry); ecutrho keeps its ratio to ecutwfc.")
    ecutwfc_start_ry: float = bounded(
        30.0, gt=0, le=1000, description="First cutoff when neither the profile nor the pseudopotential family gives one (Ry).")
    ecutwfc_max_ry: float = bounded(160.0, gt=0, le=1000, description="Largest cutoff tried (Ry): no convergence below it ends not_converged_settings.")
    kspacing_start_per_a: float = bounded(
        0.5, gt=0, le=5, description="First spacing of the k ladder for a cell with a gap (1/A) where it is coarser than the profile's "
                                     "kspacing_per_a: the ladder walks denser until a step moves nothing beyond the tolerances, so "
                                     "a gapped cell that settles on a coarse mesh (a molecular crystal's flat bands) is not "
                                     "computed on the profile's mesh in every strained cell; metals start at kspacing_metal_per_a.")
    kspacing_factor: float = bounded(0.75, gt=0.3, lt=1, description="Each k-ladder step multiplies the spacing by this.")
    kspacing_min_per_a: float = bounded(0.03, gt=0, le=5, description="Densest spacing tried (1/A): fcc Al at degauss 0.01 Ry settles only when 43^3 is confirmed by 58^3 (0.047/A).")
    degauss_ladder_ry: list[Annotated[float, Field(gt=0, le=1)]] = Field(
        default_factory=lambda: [0.02, 0.01], max_length=6,
        description="Smearing widths tried for metals (Ry, each in (0, 1]), widest first: the first whose converged result "
                    "agrees with the next one's within the tolerances is chosen (empty: the profile's degauss_ry only).")
    conv_thr_per_atom: float = bounded(
        1e-12, gt=0, le=1e-6,
        description="SCF threshold per atom (Ry) of every ladder point and of the stages that run with the chosen settings "
                    "(the profile's when that is tighter). The stress error of an SCF stopped at threshold t is first order "
                    "in the density error, ~sqrt(t): ferromagnetic fcc Ni (18^3, 90 Ry) gave 17.70 / 18.01 / 18.50 kbar for "
                    "one cell at 1e-9 depending on where the SCF started, 18.21 / 18.21 at 1e-12 (two more iterations): at "
                    "the profile's 1e-9 the ladder would judge 0.5 kbar steps on 0.5 kbar of noise.")
    max_steps: int = bounded(8, ge=2, le=30, description="Ladder steps per ladder at most.")
    max_kpoints: int = bounded(
        40000, ge=1, le=40000, description="Most irreducible k-points of the sheared probe cell per k-ladder point: a denser mesh "
                                           "ends the ladder (not_converged_settings, naming the mesh). 40,000 is pw.x's npk; lower "
                                           "it to cap what one candidate may cost.")
