from __future__ import annotations

import json

from tests.helpers import emt_manifest, make_emt_campaign


def test_snapshot_scopes_from_records(tmp_path, cli):
    m = emt_manifest()
    m["stages"]["screen"] = {"density_max_g_cm3": 5.0}  # only Al passes screening
    path = make_emt_campaign(tmp_path, m)
    code, out, _ = cli("evidence", path)
    empty = json.loads(out)
    assert empty["scopes"]["validated"]["n"] == 0 and empty["scopes"]["validated"]["pass_both_wilson95"] is None
    assert cli("apply", path, "-q", "--jobs", 1)[0] == 0
    code, out, _ = cli("evidence", path)
    snap = json.loads(out)
    pub, scr, val = (snap["scopes"][k] for k in ("public", "screening", "validated"))
    assert pub == {"structures": 5, "generated": 0, "contributions_prepared": 0, "contributions_uploaded": 0,
                   "contributions_with_structures": 0, "project": None, "milestones": []}
    assert scr["overall"]["status"]["screened_out"] == 4 and scr["overall"]["status"]["elasticready"] == 1
    assert scr["sets"]["1-element"]["coverage"]["relax_rate"] == 1 / 3
    assert val["n"] == 1 and val["rows"][0]["formula"] == "Al"
    assert val["pass_both"] == int(val["rows"][0]["pass_both"])
    lo, hi = val["pass_both_wilson95"]
    assert 0 <= lo < hi <= 1
    # computed from records only: the same folder gives the same bytes
    assert cli("evidence", path)[1] == out
    assert snap["as_of"] and snap["as_of"].endswith("+00:00")


def test_structure_dedup_with_structure_matcher(tmp_path, cli):
    # the same Cu crystal twice (a copy of the file under another name): relpath keys keep both,
    # the structure key (StructureMatcher on relaxed cells) keeps one
    m = emt_manifest()
    path = make_emt_campaign(tmp_path, m)
    src = tmp_path / "structures/1-element/Cu.cif"
    (tmp_path / "structures/1-element/CuCopy.cif").write_text(src.read_text())
    assert cli("apply", path, "-q", "--jobs", 1)[0] == 0
    val = json.loads(cli("evidence", path)[1])["scopes"]["validated"]
    assert val["n"] == 6 and val["duplicates_removed"] == 0
    m["evidence"] = {"dedup_keys": ["campaign", "structure"]}
    import yaml

    path.write_text(yaml.safe_dump(m))
    val = json.loads(cli("evidence", path)[1])["scopes"]["validated"]
    assert val["n"] == 5 and val["duplicates_removed"] == 1
    assert "CuCopy" not in {r["candidate"] for r in val["rows"]}


def _elastic_record(camp, relpath):
    return camp / relpath / "elastic" / "record.json"


def test_gates_are_rederived_flags_shown_and_the_best_named_by_the_declared_ordering(tmp_path, cli):
    import yaml

    m = emt_manifest()
    path = make_emt_campaign(tmp_path, m)
    assert cli("apply", path, "-q", "--jobs", 1)[0] == 0
    val = json.loads(cli("evidence", path)[1])["scopes"]["validated"]
    rows = {r["relpath"]: r for r in val["rows"]}
    assert val["inconsistent"] == 0 and all(r["inconsistent_gates"] == [] for r in rows.values())
    assert val["fit_rms_max_gpa"] == 2.0 and val["pd_min_eigenvalue_gpa"] == 0.0
    # the best: largest G_H among pass_both rows without flags (default ordering)
    eligible = [r for r in rows.values() if r["pass_both"] and not r["flags"]]
    top = max(eligible, key=lambda r: r["g_h_gpa"])
    assert val["best"]["relpath"] == top["relpath"] and val["best"]["value"] == top["g_h_gpa"]
    assert val["best"]["by"] == "g_h_gpa" and val["best"]["candidates_considered"] == len(eligible)
    m["evidence"] = {"best": {"by": "b_h_gpa", "order": "asc"}}
    path.write_text(yaml.safe_dump(m, sort_keys=False))
    val2 = json.loads(cli("evidence", path)[1])["scopes"]["validated"]
    low = min(eligible, key=lambda r: r["b_h_gpa"])
    assert val2["best"]["relpath"] == low["relpath"] and low["relpath"] != top["relpath"]

    # a record whose stored pass flag disagrees with its own metric: reported, not counted as passing
    camp = tmp_path / "camp" / "c"
    rec_path = _elastic_record(camp, top["relpath"])
    rec = json.loads(rec_path.read_text())
    assert rec["outputs"]["pass_pd"] is True
    rec["outputs"]["min_eigenvalue_gpa"] = -3.0  # the metric says not PD; the flag still says PD
    rec_path.write_text(json.dumps(rec))
    val3 = json.loads(cli("evidence", path)[1])["scopes"]["validated"]
    bad = next(r for r in val3["rows"] if r["relpath"] == top["relpath"])
    assert bad["inconsistent_gates"] == ["pass_pd"] and bad["pass_pd"] is False and bad["pass_both"] is False
    assert val3["inconsistent"] == 1 and val3["pass_both"] == val2["pass_both"] - 1
    assert val3["pass_pd"] == val2["pass_pd"] - 1

    # an unphysical Poisson ratio and a negative modulus are flagged, and such a row is never best
    rec = json.loads(rec_path.read_text())
    rec["outputs"].update({"min_eigenvalue_gpa": 5.0, "poisson_h": 0.62, "g_h_gpa": -1.0})
    rec_path.write_text(json.dumps(rec))
    val4 = json.loads(cli("evidence", path)[1])["scopes"]["validated"]
    bad = next(r for r in val4["rows"] if r["relpath"] == top["relpath"])
    assert bad["flags"] == ["G_H <= 0", "nu outside (-1, 0.5)"] and val4["flagged"] == 1
    assert bad["inconsistent_gates"] == [] and bad["pass_both"] is True  # the gates themselves agree again
    m["evidence"] = {"best": {"by": "poisson_h", "order": "desc"}}
    path.write_text(yaml.safe_dump(m, sort_keys=False))
    val5 = json.loads(cli("evidence", path)[1])["scopes"]["validated"]
    assert val5["best"]["relpath"] != top["relpath"] and val5["best"]["value"] < 0.5
