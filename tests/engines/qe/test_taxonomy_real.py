"""Every failure class produced by a real pw.x run with settings that provoke
it (or by a real output cut on disk), and classified correctly."""

from __future__ import annotations

import shutil

import pytest

from aimmat.engines.qe import execute as qe_execute
from aimmat.engines.qe.engine import QeEngine
from tests.engines.qe.conftest import al, needs_pw, profile, si

pytestmark = [needs_pw, pytest.mark.needs_qe]


def run(tmp_path, structure, task, **kw):
    return QeEngine().run(structure, profile(**kw), task, tmp_path / "run")


def test_success_scf(tmp_path):
    r = run(tmp_path, si(), "static")
    assert r.failure_code is None and r.converged
    assert r.stress_gpa[0][0] < 0  # a = 5.43 A is compressed for PBE: compressive, negative
    assert r.extra["memory_mb"] > 0 and r.extra["pw_version"]


def test_electronic_not_converged(tmp_path):
    r = run(tmp_path, si(), "static", electron_maxstep=2)
    assert r.failure_code == "electronic_not_converged" and r.output_present


def test_ionic_nstep_exceeded(tmp_path):
    r = run(tmp_path, si(0.03), "relax_ions", nstep=1)
    assert r.failure_code == "ionic_nstep_exceeded"
    assert r.structure is not None  # the last positions: the restart point


def test_bfgs_history_failure(tmp_path):
    # noisy forces (loose SCF) against a force threshold they cannot meet
    r = run(tmp_path, si(0.03), "relax_ions", conv_thr_per_atom=1e-4, forc_conv_thr_ry_per_bohr=1e-7, nstep=60)
    assert r.failure_code == "bfgs_history_failure"


def test_diagonalization_failure(tmp_path):
    # more bands than a 5 Ry basis can hold: Davidson's overlap matrix is singular.
    # pw.x stops in cdiaghg, or (some BLAS kernels, now and then) segfaults there
    r = run(tmp_path, al(), "static", ecutwfc_ry=5, ecutrho_ry=20, nbnd=40)
    assert r.failure_code == "diagonalization_failure"
    assert "S matrix not positive definite" in r.message or "crashed with SIGSEGV" in r.message


def test_charge_wrong(tmp_path):
    r = run(tmp_path, al(), "static", occupations="fixed")
    assert r.failure_code == "charge_wrong"


def test_out_of_walltime(tmp_path):
    r = run(tmp_path, si(), "static", kpoints=[16, 16, 16], ecutwfc_ry=40, walltime_s=1)
    assert r.failure_code == "out_of_walltime"


def test_output_truncated_by_kill(tmp_path, monkeypatch):
    # our hard timeout kills pw.x mid-run, before its own clean stop
    monkeypatch.setattr(qe_execute, "HARD_TIMEOUT_GRACE_S", -24.0)  # killed 6 s in: past MPI start-up on a loaded machine
    r = run(tmp_path, si(), "static", kpoints=[16, 16, 16], ecutwfc_ry=40, walltime_s=30)
    assert r.failure_code == "output_truncated"
    assert r.extra["returncode"] != 0


def test_output_missing(tmp_path):
    r = run(tmp_path, si(), "static", mpi_ranks=2, launcher="false {ranks}")
    assert r.failure_code == "output_missing" and not r.output_present


def test_nonzero_exit_names_the_error(tmp_path):
    r = run(tmp_path, si(), "static", ecutrho_ry=10)
    assert r.failure_code == "nonzero_exit"
    assert "Error in routine set_cutoff" in r.message and r.extra["returncode"] == 1


def test_crash_is_output_truncated(tmp_path):
    bad = tmp_path / "pseudo"
    bad.mkdir()
    src = open("/usr/share/espresso/pseudo/Si.pbe-rrkj.UPF").read()
    (bad / "Si.bad.UPF").write_text(src[: len(src) // 3])  # header intact, data cut: pw.x segfaults
    r = run(tmp_path, si(), "static", pseudo={"dir": str(bad), "files": {"Si": "Si.bad.UPF"}})
    assert r.failure_code == "output_truncated" and r.extra["returncode"] != 0


def test_converged_except_final_scf_from_cut_output(tmp_path):
    eng = QeEngine()
    r = eng.run(si(), profile(), "relax", tmp_path / "vc")
    assert r.failure_code is None
    out = tmp_path / "vc" / "pw.out"
    text = out.read_text()
    start = text.index("Final scf calculation at the relaxed structure")
    out.write_text(text[: start + 400])  # the job died during the final SCF
    r2 = eng.read_results(tmp_path / "vc", si(), "relax", None, False, 1.0, (2, 2, 2))
    assert r2.failure_code == "converged_except_final_scf"
    assert r2.structure is not None


def test_ionic_not_converged_from_cut_output(tmp_path):
    # pw.x 6.7 ends a relax only converged, at nstep, or after a BFGS reset; a
    # relax that ends with JOB DONE but no convergence line (other codes'
    # versions, damped dynamics variants) is cut here from a real output.
    eng = QeEngine()
    r = eng.run(si(0.03), profile(), "relax_ions", tmp_path / "rx")
    assert r.failure_code is None
    out = tmp_path / "rx" / "pw.out"
    out.write_text("\n".join(l for l in out.read_text().splitlines() if "bfgs converged" not in l))
    assert eng.read_results(tmp_path / "rx", si(), "relax_ions", 0, False, 1.0, (2, 2, 2)).failure_code == "ionic_not_converged"


def test_damped_dynamics_convergence_is_success(tmp_path):
    r = run(tmp_path, si(0.03), "relax_ions", ion_dynamics="damp", nstep=80)
    assert r.failure_code is None


def test_damped_cell_dynamics_at_step_cap_is_nstep_exceeded(tmp_path):
    # the ladder's last rung for a vc-relax (damp + damp-w) words its step cap differently
    r = run(tmp_path, si(0.02), "relax", ion_dynamics="damp", nstep=3)
    assert r.failure_code == "ionic_nstep_exceeded"


@pytest.mark.slow
def test_walltime_stop_restarts_from_saved_state(tmp_path):
    # pw.x stops at max_seconds and writes out/pw.save; the next rung copies that
    # folder and asks for restart_mode='restart' (never a rerun from scratch)
    eng = QeEngine()
    prof = profile(kpoints=[12, 12, 12], ecutwfc_ry=40, walltime_s=2)
    r1 = eng.run(si(), prof, "static", tmp_path / "a1")
    assert r1.failure_code == "out_of_walltime" and r1.extra["restart_dir"] == str((tmp_path / "a1/out").resolve())
    rem = eng.remedy(r1.failure_code, {}, prof, result=r1)
    assert rem.overrides["restart_dir"] == r1.extra["restart_dir"] and "saved state" in rem.tag
    r2 = eng.run(si(), {**prof, **rem.overrides, "walltime_s": 120}, "static", tmp_path / "a2")
    assert "restart_mode     = 'restart'" in (tmp_path / "a2/pw.in").read_text()
    assert "Calculation restarted" in (tmp_path / "a2/pw.out").read_text()
    assert r2.failure_code is None and r2.extra["metallic"] is False
    assert not (tmp_path / "a2/out").exists() and (tmp_path / "a1/out").exists()  # success: no restart files kept


def test_sigterm_from_outside_is_interrupted(tmp_path):
    # killed once its first SCF iteration is printed (not after a fixed time: a quiet machine finishes first)
    launch = ("sh -c 'pw.x \"$@\" & p=$!; until grep -q \"total energy\" pw.out 2>/dev/null; do sleep 0.05; done; "
              "kill -TERM $p; wait $p' sh")
    r = run(tmp_path, si(), "static", kpoints=[12, 12, 12], ecutwfc_ry=40, pw_command=launch)
    assert r.failure_code == "interrupted" and "SIGTERM" in r.message
    rem = QeEngine().remedy(r.failure_code, {}, profile(), result=r)
    assert rem is not None and "external" in rem.tag
