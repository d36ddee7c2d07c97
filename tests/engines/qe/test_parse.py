"""Parser and taxonomy on text (no pw.x needed): units, signs, classes."""

from __future__ import annotations

import numpy as np
import pytest

from aimmat.engines.qe.parse import RY_PER_BOHR3_GPA, parse_pw_output
from aimmat.engines.qe.taxonomy import classify, remedy

STRESS = """
     Program PWSCF v.6.7MaX starts on 28Nov2026 at 14:41:33
!    total energy              =     -15.73961781 Ry
     convergence has been achieved in   7 iterations
     Forces acting on atoms (cartesian axes, Ry/au):

     atom    1 type  1   force =     0.00100000    0.00000000   -0.00200000
     atom    2 type  1   force =    -0.00100000    0.00000000    0.00200000

     Total force =     0.000000     Total SCF correction =     0.000000

          total   stress  (Ry/bohr**3)                   (kbar)     P=       23.40
   0.00015905  -0.00000000  -0.00000000           23.40       -0.00       -0.00
  -0.00000000   0.00015905   0.00000000           -0.00       23.40        0.00
  -0.00000000   0.00000000   0.00015905           -0.00        0.00       23.40

     PWSCF        :      0.78s CPU      1m 2.50s WALL

   JOB DONE.
"""


def test_stress_is_tensile_positive_gpa_and_forces_ev_per_a():
    out = parse_pw_output(STRESS)
    assert out.version == "6.7MaX" and out.job_done
    # pw.x prints positive pressure for a compressed cell; tensile-positive stress is negative
    assert out.stresses_gpa[0][0, 0] == pytest.approx(-0.00015905 * RY_PER_BOHR3_GPA)
    assert out.stresses_gpa[0][0, 0] == pytest.approx(-2.3397, abs=1e-3)  # = -23.40 kbar / 10
    assert out.forces_ev_per_a[0][0, 2] == pytest.approx(-0.002 * 13.605693122994 / 0.529177210903)
    assert out.last_energy_ev == pytest.approx(-15.73961781 * 13.605693122994)
    assert out.wall_s == pytest.approx(62.5)
    assert classify(out, 0, "scf") is None


def test_overflowed_fields_are_nan_not_a_crash():
    text = STRESS.replace("    0.00100000    0.00000000   -0.00200000", "**************    0.00000000   -0.00200000")
    out = parse_pw_output(text)
    assert np.isnan(out.forces_ev_per_a[0][0]).all()


def test_missing_and_truncated():
    assert classify(None, 1, "scf") == "output_missing"
    cut = STRESS.split("     PWSCF")[0]
    assert classify(parse_pw_output(cut), None, "scf", timed_out=True) == "output_truncated"
    assert classify(parse_pw_output(cut), -11, "scf") == "output_truncated"  # a crash (SIGSEGV)
    # SIGKILL not sent by our hard timeout: the kernel's OOM killer (was: output_truncated, rerun unchanged)
    assert classify(parse_pw_output(cut), -9, "scf") == "out_of_memory"
    assert classify(parse_pw_output(cut), -9, "scf", timed_out=True) == "output_truncated"


def test_ladder_rungs():
    prof = {"mixing_beta": 0.7, "diagonalization": "david", "occupations": "smearing"}
    r = remedy("electronic_not_converged", {}, prof)
    # the electronic ladder lowers mixing_beta and raises electron_maxstep together
    assert r.overrides == {"mixing_beta": 0.56, "electron_maxstep": 200} and "0.7 -> 0.56" in r.tag
    assert remedy("electronic_not_converged", {"mixing_beta": 0.11}, prof) is None  # bounded
    r1 = remedy("diagonalization_failure", {}, prof)
    r2 = remedy("diagonalization_failure", r1.overrides, prof)
    assert (r1.overrides["diagonalization"], r2.overrides["diagonalization"]) == ("ppcg", "cg")
    assert remedy("diagonalization_failure", r2.overrides, prof) is None
    b1 = remedy("bfgs_history_failure", {}, prof)
    b2 = remedy("bfgs_history_failure", b1.overrides, prof)
    assert b1.overrides == {"trust_radius_ini": 0.1} and b2.overrides["ion_dynamics"] == "damp" and b2.restart
    assert remedy("bfgs_history_failure", b2.overrides, prof) is None
    assert remedy("ionic_nstep_exceeded", {}, prof).restart
    assert remedy("charge_wrong", {}, {**prof, "occupations": "fixed"}).overrides == {"occupations": "smearing"}
    assert remedy("nonzero_exit", {}, prof) is None


def _bands(ne, blocks, fermi=None):
    text = f"     number of electrons       =         {ne:.2f}\n     End of self-consistent calculation\n"
    for b in blocks:
        text += "\n          k = 0.0000 0.0000 0.0000 (  100 PWs)   bands (ev):\n\n    " + "  ".join(f"{x:8.4f}" for x in b) + "\n"
    if fermi is not None:
        text += f"\n     the Fermi energy is {fermi:10.4f} ev\n"
    return parse_pw_output(text)


def test_metal_detection_by_band_gap_not_fermi_crossing():
    # a smeared semiconductor: E_F sits just below the valence-band top, yet there is a gap
    semi = _bands(8, [[-5.7, 5.99, 5.99, 5.99, 6.63, 7.1], [-3.0, 2.0, 4.0, 5.0, 7.0, 8.0]], fermi=5.96)
    assert semi.metallic is False
    overlap = _bands(8, [[-5.0, 1.0, 2.0, 6.5, 6.0, 9.0], [-5.0, 1.0, 2.0, 5.0, 7.0, 9.0]], fermi=6.2)
    assert overlap.metallic is True  # band 4 tops at 6.5, band 5 bottoms at 6.0
    assert _bands(3, [[-2.0, 5.0, 7.0]], fermi=4.0).metallic is True  # odd electron count
    assert _bands(8, [[-5.0, 1.0, 2.0, 3.0]]).metallic is None  # no empty band printed
