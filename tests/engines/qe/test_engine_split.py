"""QeEngine.run is write_inputs -> execute -> read_results, with the profile
split once into physics and a RunProfile (no pw.x: execution is faked with a
golden output)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from aimmat.engines.base import Remedy
from aimmat.engines.qe import execute as qe_execute
from aimmat.engines.qe.engine import QeEngine
from aimmat.engines.qe.pseudos import DEBIAN_DIR
from aimmat.engines.qe.taxonomy import remedy
from aimmat.engines.run_profile import RunProfile
from aimmat.runtime import slots
from tests.engines.qe.conftest import profile, si

GOLDEN = Path(__file__).resolve().parents[2] / "data" / "qe" / "si_scf_converged"
debian = pytest.mark.skipif(not DEBIAN_DIR.is_dir(), reason="Debian quantum-espresso-data not installed")


@debian
def test_run_is_write_execute_read(tmp_path, monkeypatch):
    seen = {}

    def fake_execute(run, directory):
        seen["run"], seen["input"] = run, (directory / "pw.in").read_text()
        shutil.copy(GOLDEN / "outputs/pw.out", directory / "pw.out")
        return 0, False

    held = []
    real_hold = slots.hold
    monkeypatch.setattr(qe_execute, "_execute", fake_execute)
    monkeypatch.setattr(slots, "hold", lambda ranks, mem: (held.append((ranks, mem)), real_hold(1, 0.0))[1])
    params = profile(walltime_s=200, mpi_ranks=3, min_free_mem_mb=10.0, pw_command="/opt/pw.x")
    res = QeEngine().run(si(), params, "static", tmp_path / "run")
    assert seen["run"] == RunProfile("/opt/pw.x", 3, params["launcher"], 200.0, 10.0)
    assert held == [(3, 10.0)]
    assert "max_seconds      = 190.0" in seen["input"]  # 0.95 x the run profile's walltime
    assert res.failure_code is None and res.extra["kpoints"] == [2, 2, 2]
    assert res.energy_ev == pytest.approx(json.loads((GOLDEN / "case.json").read_text())["expected"]["last_energy_ev"])


def test_engine_refuses_unresolved_pseudopotentials(tmp_path):
    params = {k: v for k, v in profile().items() if k != "pseudo_files"}
    with pytest.raises(ValueError, match="pseudopotentials must be resolved before the engine runs"):
        QeEngine().run(si(), params, "static", tmp_path / "run")
    assert not (tmp_path / "run" / "pw.out").exists()


def test_remedy_takes_the_policy_from_params_once():
    prof = {"mixing_beta": 0.7, "diagonalization": "david", "occupations": "smearing"}
    pol = {"mixing_beta_factor": 0.5}
    assert isinstance(QeEngine().remedy("electronic_not_converged", {}, prof), Remedy)
    assert QeEngine().remedy("electronic_not_converged", {}, {**prof, "retry_policy": pol}).overrides["mixing_beta"] == 0.35
    # the taxonomy itself no longer digs the policy out of the profile dict
    assert remedy("electronic_not_converged", {}, {**prof, "retry_policy": pol}).overrides["mixing_beta"] == 0.56
    assert remedy("electronic_not_converged", {}, prof, pol).overrides["mixing_beta"] == 0.35
