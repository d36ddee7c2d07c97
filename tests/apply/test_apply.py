"""Apply end to end on EMT: idempotence, changed inputs, replace, prune, lock, retries."""

from __future__ import annotations

import json

import pytest
import yaml

from aimmat.state import journal
from aimmat.state.lock import CampaignLock
from aimmat.state.scan import scan
from tests.helpers import emt_manifest, final_records, make_emt_campaign, tree_digest


BOOKKEEPING = ("journal.jsonl", "campaign.json", ".aimmat.lock", ".aimmat-index.sqlite")  # change on every apply


def _records(campaign):
    obs = scan(campaign)
    return {(s, c, st): rec for (s, c), co in obs.candidates.items() for st, rec in co.stages.items()}


def test_apply_twice_second_does_nothing(emt_campaign, cli):
    code, out, _ = cli("apply", emt_campaign, "-q")
    assert code == 0
    assert "25 stage task(s) run" in out
    camp = emt_campaign.parent / "camp" / "c"
    before = {k: v for k, v in tree_digest(camp).items() if k not in BOOKKEEPING}
    code, out, _ = cli("apply", emt_campaign, "-q")
    assert code == 0
    assert out.startswith("Nothing to do: 25 stages up to date")
    after = {k: v for k, v in tree_digest(camp).items() if k not in BOOKKEEPING}
    assert after == before
    code, out, _ = cli("diff", emt_campaign, "--exit-code")
    assert code == 0 and "No changes" in out
    assert journal.verify(camp, _records(camp)) == []


def test_changed_parameter_names_field_and_drags_downstream(emt_campaign, cli):
    assert cli("apply", emt_campaign, "-q")[0] == 0
    m = yaml.safe_load(emt_campaign.read_text())
    m["profiles"]["emt"]["fmax_ev_per_a"] = 0.02
    emt_campaign.write_text(yaml.safe_dump(m))
    code, out, _ = cli("diff", emt_campaign, "--exit-code")
    assert code == 10
    assert "relax: " not in out  # grouped view
    assert "profile.fmax_ev_per_a 0.05 -> 0.02" in out
    assert "upstream relax will rerun" in out
    code, out, _ = cli("diff", emt_campaign, "--json")
    plan = json.loads(out)
    by = {(a["cand_id"], a["stage"]): a for a in plan["actions"]}
    assert by[("Cu", "relax")]["action"] == "rerun"
    assert by[("Cu", "relax")]["reasons"] == ["inputs changed: profile.fmax_ev_per_a 0.05 -> 0.02"]
    assert by[("Cu", "scf")]["action"] == "rerun" and by[("Cu", "elastic")]["action"] == "rerun"
    assert by[("Cu", "screen")]["action"] == "keep" and by[("Cu", "import")]["action"] == "keep"
    # the SCF key does not read the optimizer threshold: after the relax reruns,
    # an SCF of an identical relaxed structure would be kept
    assert cli("apply", emt_campaign, "-q")[0] == 0
    assert cli("diff", emt_campaign, "--exit-code")[0] == 0


def test_replace_forces_one_rerun(emt_campaign, cli):
    assert cli("apply", emt_campaign, "-q")[0] == 0
    code, out, _ = cli("apply", emt_campaign, "-q", "--replace", "scf", "--target", "1-element/Cu")
    assert code == 0
    assert "1 stage task(s) run (scf done 1)" in out
    rec = json.loads((emt_campaign.parent / "camp/c/1-element/Cu/scf/record.json").read_text())
    assert [a["n"] for a in rec["attempts"]] == [1, 2]
    assert cli("apply", emt_campaign, "-q")[1].startswith("Nothing to do")


def test_orphans_listed_and_pruned_only_with_flag(emt_campaign, cli):
    assert cli("apply", emt_campaign, "-q")[0] == 0
    (emt_campaign.parent / "structures/1-element/Ni.cif").unlink()
    m = yaml.safe_load(emt_campaign.read_text())
    del m["stages"]["elastic"]
    emt_campaign.write_text(yaml.safe_dump(m))
    code, out, _ = cli("diff", emt_campaign, "--exit-code")
    assert code == 10
    assert "orphan  candidate" in out and "[Ni]" in out
    assert "stage 'elastic' is not in the manifest" in out
    camp = emt_campaign.parent / "camp/c"
    code, out, err = cli("apply", emt_campaign, "-q")
    assert (camp / "1-element/Ni").is_dir() and (camp / "1-element/Cu/elastic").is_dir()
    assert "orphan(s) left in place" in err
    code, out, _ = cli("apply", emt_campaign, "-q", "--prune")
    assert code == 0
    assert not (camp / "1-element/Ni").exists() and not (camp / "1-element/Cu/elastic").exists()
    assert "pruned 1-element/Ni" in out
    assert cli("diff", emt_campaign, "--exit-code")[0] == 0


def test_second_apply_refused_while_locked(emt_campaign, cli):
    camp = emt_campaign.parent / "camp/c"
    with CampaignLock(camp):
        before = tree_digest(camp)
        code, _, err = cli("apply", emt_campaign, "-q")
        assert code == 4
        assert "another `aimmat apply` holds the campaign lock" in err
        assert f"pid {__import__('os').getpid()}" in err
        assert tree_digest(camp) == before
    assert cli("apply", emt_campaign, "-q")[0] == 0


def test_source_change_reruns_candidate_chain(emt_campaign, cli):
    assert cli("apply", emt_campaign, "-q", "--target", "1-element")[0] == 0
    cif = emt_campaign.parent / "structures/1-element/Cu.cif"
    cif.write_text(cif.read_text().replace("2.5455844", "2.5500000"))
    code, out, _ = cli("diff", emt_campaign, "--json", "--target", "1-element/Cu")
    acts = {a["stage"]: a for a in json.loads(out)["actions"]}
    assert acts["import"]["action"] == "rerun"
    assert "source file sha256" in acts["import"]["reasons"][0]
    assert acts["relax"]["action"] == "rerun" and acts["relax"]["reasons"] == ["upstream import will rerun"]


def test_screen_failure_blocks_downstream(tmp_path, cli):
    m = emt_manifest()
    m["stages"]["screen"] = {"density_max_g_cm3": 5.0}  # only Al (2.7 g/cm3) passes
    path = make_emt_campaign(tmp_path, m)
    code, out, _ = cli("apply", path, "-q")
    assert code == 0
    code, out, _ = cli("status", path, "--json")
    rows = {r["candidate"]: r for r in json.loads(out)["candidates"]}
    assert rows["Ni"]["status"] == "screened_out" and rows["Ni"]["detail"] == "density"
    assert rows["Al"]["status"] == "elasticready"
    assert not (tmp_path / "camp/c/1-element/Ni/relax").exists()
    code, out, _ = cli("diff", path)
    assert "screened out: density" in out


def test_unconverged_relax_retries_from_last_structure(tmp_path, cli):
    m = emt_manifest(stages=("relax",), profile={"max_steps": 2, "fmax_ev_per_a": 0.001})
    m["retry"] = {"max_attempts": 2}
    path = make_emt_campaign(tmp_path, m)
    code, out, err = cli("apply", path, "-q", "--target", "2-element/CuAu")
    assert code == 1
    rec = json.loads((tmp_path / "camp/c/2-element/CuAu/relax/record.json").read_text())
    assert rec["status"] == "failed" and rec["failure_code"] == "ionic_not_converged"
    assert [a["intervention"] for a in rec["attempts"]] == [None, "restart from last structure"]
    assert all((tmp_path / f"camp/c/2-element/CuAu/relax/attempt-{n}/outcome.json").exists() for n in (1, 2))
    code, out, _ = cli("status", path, "--json")
    row = [r for r in json.loads(out)["candidates"] if r["candidate"] == "CuAu"][0]
    assert row["status"] == "outputpresentnotconverged"
    # exhausted: kept as failed, not retried on every apply
    code, out, _ = cli("diff", path, "--target", "2-element/CuAu")
    assert "failed: ionic_not_converged after 2 attempt(s)" in out
    # a bigger budget makes the failed stage retryable again
    m["retry"] = {"max_attempts": 3}
    path.write_text(yaml.safe_dump(m))
    _, out, _ = cli("diff", path, "--target", "2-element/CuAu")
    assert "retry after ionic_not_converged (attempt 3 of 3)" in out


def test_engine_error_is_failed_without_output(tmp_path, cli):
    m = emt_manifest(stages=("relax",))
    m["candidate_sets"] = [{"name": "x", "elements": 1, "source": {"kind": "files", "glob": "si/*.cif"}}]
    path = make_emt_campaign(tmp_path, m)
    (tmp_path / "si").mkdir()
    from pymatgen.core import Lattice, Structure

    Structure(Lattice.cubic(5.43), ["Si", "Si"], [[0, 0, 0], [0.25, 0.25, 0.25]]).to(filename=str(tmp_path / "si/Si.cif"))
    code, _, err = cli("apply", path, "-q")
    assert code == 1
    assert "engine_error" in err
    code, out, _ = cli("status", path, "--json")
    assert json.loads(out)["total"]["failed"] == 1


@pytest.mark.parametrize("jobs", [1, 2])
def test_same_records_with_pool_and_inline(tmp_path, cli, jobs):
    path = make_emt_campaign(tmp_path)
    assert cli("apply", path, "-q", "--jobs", jobs)[0] == 0
    recs = final_records(tmp_path / "camp/c")
    assert len(recs) == 25 and all(r.get("status", "done") == "done" for r in recs.values())


def test_replace_import_reparses_and_keeps_identical_downstream(tmp_path, cli):
    path = make_emt_campaign(tmp_path, emt_manifest(stages=("screen", "relax")))
    assert cli("apply", path, "-q", "--jobs", 1)[0] == 0
    code, out, _ = cli("apply", path, "-q", "--jobs", 1, "--replace", "import", "--target", "1-element/Al")
    assert code == 0
    # same bytes in, same structure hash out: screen and relax keys still match
    assert "1 stage task(s) run (import done 1)" in out


def test_half_written_files_of_a_killed_apply_are_swept(tmp_path, cli):
    path = make_emt_campaign(tmp_path, emt_manifest(stages=("relax",)))
    assert cli("apply", path, "-q", "--jobs", 1)[0] == 0
    camp = tmp_path / "camp/c"
    planted = [camp / ".tmp-a", camp / "1-element/Cu/.tmp-b", camp / "1-element/Cu/relax/.tmp-c",
               camp / "1-element/Cu/relax/attempt-1/.tmp-d"]
    for p in planted:
        p.write_text("{half")
    code, out, _ = cli("apply", path, "-q", "--jobs", 1)
    assert code == 0 and out.startswith("Nothing to do")
    assert not any(p.exists() for p in planted)
