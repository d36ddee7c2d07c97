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
    assert pub == {"generated": 5, "structures": 5, "model_generated": 0, "contributions_prepared": 0, "contributions_uploaded": 0}
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
