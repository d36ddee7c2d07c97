"""Candidate status from stage summaries, walking the chain the stage table declares."""

from aimmat.state.records import Attempt, StageRecord
from aimmat.state.scan import CandidateObs
from aimmat.state.status import candidate_status
from aimmat.state.summary import CandidateSummary, StageSummary

CHAIN = ["screen", "relax", "scf", "elastic"]


def _obs(**stages) -> CandidateObs:
    obs = CandidateObs("s", "c")
    obs.summary = CandidateSummary("k", "a" * 64, "Cu", 1, "Cu", 1)
    for name, (status, extra) in stages.items():
        rec = StageRecord(stage=name, key="k", key_inputs={}, status=status, attempts=[Attempt(n=1, key="k", started="t", status="done")],
                          **extra)
        obs.summaries[name] = StageSummary.of(rec)
    return obs


def test_statuses_along_the_chain():
    ok = ("done", {"outputs": {"strict_pass": True}})
    assert candidate_status(None, CHAIN) == ("pending", "not imported")
    assert candidate_status(_obs(), CHAIN)[0] == "pending"
    assert candidate_status(_obs(screen=ok), CHAIN)[0] == "pending"
    assert candidate_status(_obs(screen=ok, relax=("done", {})), CHAIN)[0] == "relaxdone"
    assert candidate_status(_obs(screen=ok, relax=("done", {}), scf=("done", {})), CHAIN)[0] == "scfdone"
    assert candidate_status(_obs(screen=ok, relax=("done", {}), scf=("done", {}), elastic=("done", {})), CHAIN)[0] == "elasticready"
    assert candidate_status(_obs(screen=ok, relax=("running", {})), CHAIN)[0] == "pending"


def test_screened_out_failed_and_not_converged():
    bad = ("done", {"outputs": {"strict_pass": False, "criteria": {"density": {"pass": False}}}})
    assert candidate_status(_obs(screen=bad), CHAIN) == ("screened_out", "density")
    ok = ("done", {"outputs": {"strict_pass": True}})
    failed = ("failed", {"failure_code": "crash"})
    assert candidate_status(_obs(screen=ok, relax=failed), CHAIN) == ("failed", "relax: crash")
    partial = ("failed", {"failure_code": "ionic_not_converged", "output_present": True})
    assert candidate_status(_obs(screen=ok, relax=partial), CHAIN) == ("outputpresentnotconverged", "relax: ionic_not_converged")


def test_reserved_set_names_are_folders_the_scan_skips():
    # a set with one of these names would be skipped by the scan and look empty: the manifest refuses them
    from aimmat.manifest.models import RESERVED_FOLDERS
    from aimmat.state.layout import RESERVED

    assert set(RESERVED_FOLDERS) <= RESERVED
    assert {r for r in RESERVED if not r.startswith(".") and "." not in r} <= set(RESERVED_FOLDERS)
