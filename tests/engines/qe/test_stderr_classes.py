"""Classes read from stderr and the exit status, and the parser gaps of the
issue (FIRE, spin-resolved Fermi levels, noncollinear bands, Cartesian
positions), on text (no pw.x needed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from aimmat.engines.qe.parse import BOHR_A, parse_pw_output
from aimmat.engines.qe.taxonomy import classify, diagnose

DATA = Path(__file__).resolve().parents[2] / "data" / "qe"
SCF = (DATA / "si_scf_converged/outputs/pw.out").read_text()
CUT = SCF[: len(SCF) // 2]


@pytest.mark.parametrize("err, rc, code", [
    (" ** On entry to ZHEGVX parameter number 13 had an illegal value\n", 13, "diagonalization_failure"),
    ("Error in routine cdiaghg (21):\n problems computing cholesky\n", 1, "diagonalization_failure"),
    ("terminate called after throwing an instance of 'std::bad_alloc'\n", 134, "out_of_memory"),
    ("Killed\n", 137, "out_of_memory"),
    ("", -9, "out_of_memory"),
    ("", -15, "interrupted"),
    ("", 143, "interrupted"),  # mpirun's 128+15
    ("", -2, "interrupted"),
    ("MPI_ABORT was invoked on rank 0 in communicator MPI_COMM_WORLD\nwith errorcode 130.\n", 130, "output_truncated"),
])
def test_stderr_and_exit_status_decide(err, rc, code):
    assert classify(parse_pw_output(CUT), rc, "scf", False, err) == code


def test_lapack_abort_without_any_stdout():
    assert classify(None, 13, "scf", False, " ** On entry to ZHEGVX parameter number 13 had an illegal value") == "diagonalization_failure"
    assert classify(None, 1, "scf", False, "") == "output_missing"


def test_oom_message_compares_estimate_with_free_memory():
    code, msg = diagnose(parse_pw_output(SCF[: SCF.index("End of self-consistent")]), -9, "scf", False, "", mem_available_mb=12.0)
    assert code == "out_of_memory" and "MB per process" in msg and "12 MB were available" in msg


def test_finished_run_timing_lines_are_not_a_lapack_error():
    assert "cdiaghg" in SCF and classify(parse_pw_output(SCF), 0, "scf") is None


def test_fire_convergence_is_ionic_convergence():
    text = (DATA / "si_relax_nstep_exceeded/outputs/pw.out").read_text()
    # pw.x 7.x FIRE prints this instead of BFGS's lines (PW/src/dynamics_module.f90)
    text = text.replace("The maximum number of steps has been reached.", "FIRE: convergence achieved in   1 steps\n\n     End of FIRE minimization")
    out = parse_pw_output(text)
    assert out.ionic_converged and not out.nstep_reached
    assert classify(out, 0, "relax") is None


def _positions_as(text: str, unit: str) -> str:
    """The real relax output with its last ATOMIC_POSITIONS written in ``unit``."""
    out = parse_pw_output(text)
    cell = out.cell_a_initial
    head, _, tail = text.rpartition("ATOMIC_POSITIONS (crystal)")
    lines = tail.splitlines()
    rows = []
    for frac, line in zip(out.positions_frac, lines[1:]):
        cart = frac @ cell
        alat = np.linalg.norm(cell[0])  # ibrav=0 with CELL_PARAMETERS: pw.x takes alat = |a1|
        v = {"angstrom": cart, "bohr": cart / BOHR_A, "alat": cart / alat}[unit]
        rows.append(f"{line.split()[0]}  {v[0]:.9f}  {v[1]:.9f}  {v[2]:.9f}")
    return head + f"ATOMIC_POSITIONS ({unit})\n" + "\n".join(rows) + "\n" + "\n".join(lines[1 + len(rows):])


@pytest.mark.parametrize("unit", ["angstrom", "bohr", "alat"])
def test_cartesian_positions_become_fractional(unit):
    text = (DATA / "si_relax_nstep_exceeded/outputs/pw.out").read_text()
    ref = parse_pw_output(text).positions_frac
    got = parse_pw_output(_positions_as(text, unit)).positions_frac
    assert got is not None and np.allclose(got, ref, atol=1e-6)


def _bands(ne, up, dw=None, fermi=None, fermi_up_dw=None, mag=None, noncolin=False):
    text = "     Noncollinear calculation without spin-orbit\n" if noncolin else ""
    text += f"     number of electrons       =         {ne:.2f}\n     End of self-consistent calculation\n"
    if dw is not None:
        text += "\n ------ SPIN UP ------------\n\n"
    for b in up:
        text += "\n          k = 0.0000 0.0000 0.0000 (  100 PWs)   bands (ev):\n\n    " + "  ".join(f"{x:8.4f}" for x in b) + "\n"
    if dw is not None:
        text += "\n ------ SPIN DOWN ----------\n\n"
        for b in dw:
            text += "\n          k = 0.0000 0.0000 0.0000 (  100 PWs)   bands (ev):\n\n    " + "  ".join(f"{x:8.4f}" for x in b) + "\n"
    if fermi is not None:
        text += f"\n     the Fermi energy is {fermi:10.4f} ev\n"
    if fermi_up_dw is not None:
        text += f"\n     the spin up/dw Fermi energies are {fermi_up_dw[0]:10.4f}{fermi_up_dw[1]:10.4f} ev\n"
    if mag is not None:
        text += f"\n     total magnetization       =     {mag:.2f} Bohr mag/cell\n"
    return parse_pw_output(text)


def test_spin_polarised_metallicity():
    gap = [[-5.0, 1.0, 5.0, 6.0]]
    overlap = [[-5.0, 1.0, 3.0, 6.0], [-5.0, 2.5, 2.0, 6.0]]
    # 4 electrons, M = 0: two per channel; both channels gapped -> insulator
    assert _bands(4, gap, gap, fermi=3.0, mag=0.0).metallic is False
    # a half-metal: the down channel has overlapping bands 2 and 3
    assert _bands(4, gap, overlap, fermi=2.2, mag=0.0).metallic is True
    # fractional moment: partly filled bands in both channels (a ferromagnetic metal)
    assert _bands(4, gap, gap, fermi=3.0, mag=0.6).metallic is True
    # two Fermi levels (fixed moment): M = 2 -> 3 up, 1 down, each gapped
    assert _bands(4, [[-5.0, 1.0, 2.0, 6.0]], [[-5.0, 1.0, 2.0, 6.0]], fermi_up_dw=(4.0, -2.0), mag=2.0).metallic is False


def test_noncollinear_bands_hold_one_electron_each():
    # 4 electrons in one-electron bands: bands 1-4 filled, gap to band 5
    bands = [[-6.0, 1.0, 1.02, 1.1, 5.0, 5.1]]
    assert _bands(4, bands, noncolin=True, fermi=3.0).metallic is False
    # read as nspin=1 (2 per band: 2 filled) bands 2 and 3 would touch: a metal
    assert _bands(4, bands, fermi=3.0).metallic is True
