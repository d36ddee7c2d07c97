"""The typed run profile: read from a manifest profile dict, split from the physics."""

from __future__ import annotations

import dataclasses

import pytest

from aimmat.engines.qe.execute import command
from aimmat.engines.run_profile import RunProfile, split_profile


def test_defaults_when_absent():
    run = RunProfile.from_profile({"kind": "qe", "ecutwfc_ry": 30})
    assert run == RunProfile()
    assert (run.command, run.ranks, run.walltime_s, run.min_free_mem_mb) == ("pw.x", 1, 3600, 0.0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        run.ranks = 2


def test_from_profile_reads_the_manifest_fields():
    d = {"pw_command": "/opt/qe/pw.x -nk 2", "mpi_ranks": "4", "launcher": "srun -n {ranks}", "walltime_s": 120,
         "min_free_mem_mb": 500, "nstep": 7}
    run = RunProfile.from_profile(d)
    assert run == RunProfile("/opt/qe/pw.x -nk 2", 4, "srun -n {ranks}", 120.0, 500.0)
    assert isinstance(run.ranks, int) and isinstance(run.walltime_s, float)


def test_split_keeps_physics_and_nstep():
    d = {"kind": "qe", "ecutwfc_ry": 30, "nstep": 5, "mixing_beta": 0.7, "pseudo_files": {"Si": "/x/Si.UPF"},
         "pw_command": "pw.x", "mpi_ranks": 2, "launcher": "mpirun -np {ranks}", "walltime_s": 60, "min_free_mem_mb": 0}
    physics, run = split_profile(d)
    assert physics == {"kind": "qe", "ecutwfc_ry": 30, "nstep": 5, "mixing_beta": 0.7, "pseudo_files": {"Si": "/x/Si.UPF"}}
    assert run.ranks == 2 and run.walltime_s == 60
    assert "mpi_ranks" in d  # the caller's dict is not changed


def test_command_substitutes_the_launcher_only_for_several_ranks():
    assert command(RunProfile()) == ["pw.x", "-in", "pw.in"]
    assert command(RunProfile(ranks=1, launcher="srun -n {ranks}")) == ["pw.x", "-in", "pw.in"]
    four = RunProfile(command="pw.x -nk 2", ranks=4)
    assert command(four) == ["mpirun", "--allow-run-as-root", "-np", "4", "pw.x", "-nk", "2", "-in", "pw.in"]
    assert command(RunProfile(ranks=4, launcher="srun -n {ranks} --exclusive")) == ["srun", "-n", "4", "--exclusive", "pw.x", "-in", "pw.in"]
