"""Every pw.x failure class walks its retry ladder to the end: each rung
changes the effective input, and every ladder stops.

The effective input of an attempt is what pw.x would see: the physics
dict (the profile with the overrides, without ladder bookkeeping), the
source it restarts from (pw.x's saved state, the last structure, or the
input structure) and the run resources (walltime, ranks, command).
"""

from __future__ import annotations

import json

import pytest

from aimmat.engines.base import EngineResult
from aimmat.engines.qe.engine import QeEngine
from aimmat.engines.qe.ladders import DEFAULT_POLICY, LADDER_KEY, RESTART_DIR_KEY
from aimmat.engines.qe.taxonomy import CODES
from aimmat.engines.run_profile import split_profile
from aimmat.manifest.qe_profile import QeProfile

MAX_RUNGS = 50
PROFILE_VARIANTS = {
    "serial": {},
    "parallel": {"mpi_ranks": 4, "pw_command": "pw.x -nk 2"},
    "fixed_occupations": {"occupations": "fixed"},
}
POLICIES = {"default": {}, "walltime_ladder": {"walltime_max_s": 4 * 3600}}
SAVED_STATE = {"none": False, "restart_files": True}


def profile(preset: str, **kw) -> dict:
    d = QeProfile.model_validate({"kind": "qe", "preset": preset, "pseudo": {"family": "debian"}, **kw}).model_dump(mode="json")
    return d


def effective(prof: dict, overrides: dict, source) -> str:
    """The attempt's input as pw.x sees it, as canonical JSON."""
    physics, run = split_profile({**prof, **overrides})
    physics = {k: v for k, v in physics.items() if k not in (LADDER_KEY, RESTART_DIR_KEY, "retry_policy")}
    return json.dumps([physics, source, run.walltime_s, run.ranks, run.command], sort_keys=True, default=str)


def walk(code: str, prof: dict, policy: dict, saved: bool, calculation: str = "scf") -> list:
    """Attempts of the ladder for ``code``: (effective input, tag) each, first attempt included."""
    eng = QeEngine()
    params = {**prof, "retry_policy": {**DEFAULT_POLICY, **policy}}
    overrides, source = {}, "input structure"
    attempts = [(effective(prof, overrides, source), None)]
    for i in range(MAX_RUNGS):
        # every failed attempt printed a structure of its own and, if asked, left restart files
        res = EngineResult(failure_code=code)
        res.extra = {"new_structure": True, "restart_dir": f"/campaign/attempt{i}/out" if saved else None,
                     "calculation": calculation}
        rem = eng.remedy(code, overrides, params, result=res)
        if rem is None:
            return attempts
        overrides = rem.overrides
        if overrides.get(RESTART_DIR_KEY):
            source = ("saved state", overrides[RESTART_DIR_KEY])
        elif rem.restart:
            source = ("last structure of attempt", i)
        attempts.append((effective(prof, overrides, source), rem.tag))
    raise AssertionError(f"{code}: the ladder did not stop within {MAX_RUNGS} rungs")


@pytest.mark.parametrize("preset", ["fast", "balanced", "stringent"])
@pytest.mark.parametrize("variant", sorted(PROFILE_VARIANTS))
@pytest.mark.parametrize("policy", sorted(POLICIES))
@pytest.mark.parametrize("saved", sorted(SAVED_STATE))
@pytest.mark.parametrize("code", CODES)
def test_every_rung_changes_the_input_and_the_ladder_ends(code, preset, variant, policy, saved):
    prof = profile(preset, **PROFILE_VARIANTS[variant])
    attempts = walk(code, prof, POLICIES[policy], SAVED_STATE[saved])
    for (before, _), (after, tag) in zip(attempts, attempts[1:]):
        if before == after:
            # the one allowed exception: an outside SIGTERM was not the input's fault
            assert code == "interrupted" and "cause was external" in tag, f"{code}: '{tag}' reruns identical inputs"


def test_ladders_that_must_exist():
    """The rungs the issue names, from the balanced preset."""
    prof = profile("balanced", mpi_ranks=4)
    tags = {code: [t for _, t in walk(code, prof, POLICIES["walltime_ladder"], True)[1:]] for code in CODES}
    assert [t.split(" -> ")[1] for t in tags["diagonalization_failure"]] == ["ppcg", "cg"]
    assert any("electron_maxstep 150 -> 300" in t for t in tags["electronic_not_converged"])
    assert tags["cell_factor_too_small"][:2] == ["cell_factor 2.0 -> 3.0; restart from last cell", "cell_factor 3.0 -> 4.0; restart from last cell"]
    assert len(tags["final_scf_pressure"]) == 1
    assert tags["out_of_memory"] == ["out of memory: MPI ranks 4 -> 2", "out of memory: MPI ranks 2 -> 1"]
    assert tags["out_of_walltime"][0] == "walltime: restart from pw.x's saved state"
    assert "walltime 3600 s -> 7200 s" in tags["out_of_walltime"][-2]
    assert tags["interrupted"][0].startswith("external interruption")
    for code in ("output_missing", "nonzero_exit", "non_finite_output"):
        assert tags[code] == []


def test_no_restart_from_a_structure_that_was_never_written():
    eng = QeEngine()
    params = {**profile("fast"), "retry_policy": DEFAULT_POLICY}
    res = EngineResult(failure_code="out_of_walltime")
    res.extra = {"new_structure": False, "restart_dir": None}
    assert eng.remedy("out_of_walltime", {}, params, result=res) is None  # no saved state, no walltime ladder
    assert eng.remedy("output_truncated", {}, params, result=res) is None
    rem = eng.remedy("out_of_walltime", {}, {**params, "retry_policy": {**DEFAULT_POLICY, "walltime_max_s": 7200}}, result=res)
    assert rem.overrides["walltime_s"] == 7200 and not rem.restart


@pytest.mark.parametrize("code", CODES)
def test_vc_relax_ladders_change_the_input_and_end(code):
    prof = profile("balanced")
    attempts = walk(code, prof, POLICIES["walltime_ladder"], True, calculation="vc-relax")
    for (before, _), (after, tag) in zip(attempts, attempts[1:]):
        if before == after:
            assert code == "interrupted" and "cause was external" in tag, f"{code}: '{tag}' reruns identical inputs"


def test_a_vc_relax_that_moved_the_cell_continues_from_its_last_cell_not_its_saved_state():
    """pw.x 6.7 continuing a vc-relax from its saved state after the cell moved
    stops with 'charge is wrong' (integrated 0.27 of 25 electrons; a generated
    BCO3 after 14 BFGS steps): the rung restarts from the last cell instead.
    A fixed-cell run (or a vc-relax that never moved) keeps the saved state."""
    eng = QeEngine()
    params = {**profile("balanced"), "retry_policy": DEFAULT_POLICY}
    moved = EngineResult(failure_code="out_of_walltime")
    moved.extra = {"new_structure": True, "restart_dir": "/c/a1/out", "calculation": "vc-relax"}
    rem = eng.remedy("out_of_walltime", {}, params, result=moved)
    assert rem.restart and RESTART_DIR_KEY not in rem.overrides and "vc-relax moved the cell" in rem.tag
    for calc, new in (("scf", True), ("relax", True), ("vc-relax", False)):
        res = EngineResult(failure_code="out_of_walltime")
        res.extra = {"new_structure": new, "restart_dir": "/c/a1/out", "calculation": calc}
        rem = eng.remedy("out_of_walltime", {}, params, result=res)
        assert rem.overrides[RESTART_DIR_KEY] == "/c/a1/out" and "saved state" in rem.tag, calc
