from __future__ import annotations

import json

import yaml


def test_schema_is_json_schema_with_units(cli):
    code, out, _ = cli("schema")
    assert code == 0
    schema = json.loads(out)
    assert schema["additionalProperties"] is False
    assert "fmax_ev_per_a" in json.dumps(schema)
    assert set(schema["required"]) == {"campaign", "candidate_sets"}


def test_status_counts_by_set(emt_campaign, cli):
    code, out, _ = cli("status", emt_campaign, "--json")
    assert code == 0
    table = json.loads(out)
    assert table["total"]["pending"] == 5
    m = yaml.safe_load(emt_campaign.read_text())
    assert set(table["sets"]) == {s["name"] for s in m["candidate_sets"]}
    assert cli("apply", emt_campaign, "-q", "--target", "2-element")[0] == 0
    code, out, _ = cli("status", emt_campaign)
    lines = {l.split()[0]: l.split()[1:] for l in out.splitlines()[2:]}
    # columns: pending relaxdone scfdone elasticready ... all
    assert lines["2-element"][0] == "0" and lines["2-element"][3] == "2"
    assert lines["1-element"][0] == "3"


def test_bad_target_is_usage_error(emt_campaign, cli):
    code, _, err = cli("diff", emt_campaign, "--target", "9-element")
    assert code == 2 and "no candidate set '9-element'" in err
    code, _, err = cli("apply", emt_campaign, "--replace", "phonon")
    assert code == 2 and "--replace phonon" in err


def test_diff_on_fresh_campaign_creates_nothing(emt_campaign, cli):
    code, out, _ = cli("diff", emt_campaign, "--exit-code")
    assert code == 10
    assert "Plan: 25 to create" in out
    assert not (emt_campaign.parent / "camp").exists()
