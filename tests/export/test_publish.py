"""`aimmat publish` against a local stand-in of the MPContribs API (tests/mpcontribs_standin.py, which serves the
API description the official client loads): payloads from records, validated; nothing uploaded twice; a
changed record re-uploads exactly its candidate; a server error leaves every other record as it was; the
public scope counts come from the publish records. The real service cannot be reached from here."""

from __future__ import annotations

import json

import pytest
import yaml

from aimmat.export.publish import Payload, validate
from tests.helpers import emt_manifest, make_emt_campaign, tree_digest
from tests.mpcontribs_standin import StandIn

PROJECT = "aimmat_test"


@pytest.fixture
def server():
    with StandIn(project=PROJECT) as s:
        yield s


def _campaign(tmp_path, cli, host):
    m = emt_manifest()
    m["publish"] = {"project": PROJECT, "host": host, "scope": "validated", "api_key_env": "AIMMAT_TEST_MPC_KEY"}
    path = make_emt_campaign(tmp_path, m)
    assert cli("apply", path, "-q", "--jobs", 1)[0] == 0
    return m, path, tmp_path / "camp" / "c"


def _records(camp):
    return {p.parent.name + "/" + p.stem: json.loads(p.read_text()) for p in (camp / "publish" / "records").glob("*/*.json")}


@pytest.mark.slow
def test_publish_round_trip(tmp_path, cli, server, monkeypatch):
    m, path, camp = _campaign(tmp_path, cli, server.host)
    val = json.loads(cli("evidence", path)[1])["scopes"]["validated"]
    n = val["n"]

    # dry run: payloads written and validated, nothing uploaded
    code, out, err = cli("publish", path, "--dry-run")
    assert code == 0 and f"{n} payload(s) written" in out and f"{n} to create" in out, err
    assert server.upload_count == 0 and len(list((camp / "publish/payloads").glob("*/*.json"))) == n
    pub = json.loads(cli("evidence", path)[1])["scopes"]["public"]
    assert pub["contributions_prepared"] == n and pub["contributions_uploaded"] == 0 and pub["generated"] == 0

    # the payload folder holds what the last run prepared: fewer sets, fewer payloads counted
    m2 = dict(m, publish=dict(m["publish"], sets=["1-element"]))
    path.write_text(yaml.safe_dump(m2, sort_keys=False))
    n1 = sum(1 for r in val["rows"] if r["set"] == "1-element")
    assert cli("publish", path, "--dry-run")[0] == 0
    assert json.loads(cli("evidence", path)[1])["scopes"]["public"]["contributions_prepared"] == n1 < n
    path.write_text(yaml.safe_dump(m, sort_keys=False))
    assert cli("publish", path, "--dry-run")[0] == 0

    # no key: refused before any upload, and before anything is written
    monkeypatch.delenv("AIMMAT_TEST_MPC_KEY", raising=False)
    before = tree_digest(camp)
    code, _, err = cli("publish", path)
    assert code == 5 and "AIMMAT_TEST_MPC_KEY" in err and server.upload_count == 0
    assert tree_digest(camp) == before

    monkeypatch.setenv("AIMMAT_TEST_MPC_KEY", "k" * 32)
    code, out, err = cli("publish", path)
    assert code == 0 and f"published {n} of {n}" in out, err
    recs = _records(camp)
    assert len(recs) == n and {r["remote_id"] for r in recs.values()} == {c["id"] for c in server.contributions}
    al = server.contribution("c:1-element/Al")
    row = next(r for r in val["rows"] if r["relpath"] == "1-element/Al")
    assert al["data"]["G|H"]["value"] == pytest.approx(row["g_h_gpa"], abs=0.006) and al["data"]["G|H"]["unit"] == "GPa"
    assert al["data"]["pass"]["both"] == ("Yes" if row["pass_both"] else "No")
    assert len(al["structures"]) == 1 and len(al["tables"]) == 1 and al["formula"] == "Al"
    assert al["data"]["provenance"]["manifest"]  # campaign, manifest and record hashes travel with it
    pub = json.loads(cli("evidence", path)[1])["scopes"]["public"]
    assert pub["contributions_uploaded"] == n and pub["contributions_with_structures"] == n

    # nothing changed: nothing uploaded
    uploads = server.upload_count
    code, out, _ = cli("publish", path)
    assert code == 0 and "nothing to upload" in out and server.upload_count == uploads
    assert "0 to create, 0 to rerun (payload changed), " + str(n) + " to keep" in cli("diff", path)[1]

    # one record changes: diff says rerun, publish re-uploads exactly that candidate (an update of its contribution)
    el = camp / "1-element/Al/elastic/record.json"
    rec = json.loads(el.read_text())
    rec["outputs"]["g_h_gpa"] += 1.0
    el.write_text(json.dumps(rec))
    assert "1 to rerun (payload changed)" in cli("diff", path)[1]
    before = _records(camp)
    code, out, err = cli("publish", path)
    assert code == 0 and "published 1 of 1" in out and server.upload_count == uploads + 1, err
    after = _records(camp)
    changed = [k for k in after if after[k] != before[k]]
    assert changed == ["1-element/Al"] and after["1-element/Al"]["remote_id"] == before["1-element/Al"]["remote_id"]
    assert server.contribution("c:1-element/Al")["data"]["G|H"]["value"] == pytest.approx(row["g_h_gpa"] + 1.0, abs=0.006)
    # an upload the client skips without a word (as it does for duplicates) is not recorded as published:
    # the content hash read back must be this payload's
    from mpcontribs.client import Client

    rec["outputs"]["g_h_gpa"] += 1.0
    el.write_text(json.dumps(rec))
    stored = server.contribution("c:1-element/Al")["data"]["provenance"]["payload"]
    monkeypatch.setattr(Client, "submit_contributions", lambda self, contribs, **kw: None)
    code, _, err = cli("publish", path)
    assert code == 1 and "holds another version" in err and stored[:12] in err, err
    assert _records(camp)["1-element/Al"] == after["1-element/Al"]  # the old record stays
    assert len(server.contributions) == n


@pytest.mark.slow
def test_a_server_error_leaves_every_other_record_as_it_was(tmp_path, cli, server, monkeypatch):
    m, path, camp = _campaign(tmp_path, cli, server.host)
    monkeypatch.setenv("AIMMAT_TEST_MPC_KEY", "k" * 32)
    server.fail_next(identifier="c:1-element/Cu", status=500, times=None, error="database unavailable")
    code, out, err = cli("publish", path)
    assert code == 1 and "1-element/Cu: upload failed" in err and "database unavailable" in err
    recs = _records(camp)
    assert "1-element/Cu" not in recs and len(recs) >= 2
    assert "c:1-element/Cu" not in server.identifiers
    pub = json.loads(cli("evidence", path)[1])["scopes"]["public"]
    assert pub["contributions_uploaded"] == len(recs)
    # the failed one goes up on the next run; the others are not uploaded again
    server.clear_failures()
    kept = tree_digest(camp / "publish" / "records")
    uploads = server.upload_count
    code, out, err = cli("publish", path)
    assert code == 0 and "published 1 of 1" in out and server.upload_count == uploads + 1, err
    after = tree_digest(camp / "publish" / "records")
    assert {k: v for k, v in after.items() if k != "1-element/Cu.json"} == kept


def test_payload_checks_are_the_clients_and_the_platforms():
    body = {"project": PROJECT, "identifier": "c:s/x", "formula": "MgO", "structures": [], "tables": [],
            "data": {"bulk_modulus": "1 GPa", "E": "3 blorbs", "ok": "2.0 GPa", "bad": [1, 2]}}
    problems = validate(Payload("s", "x", body))
    assert any("bulk_modulus" in p for p in problems) and any("blorbs" in p for p in problems)
    assert any("not supported" in p for p in problems)  # the client's own _is_serializable_dict: lists refused
    assert not any("'ok'" in p or "data.ok" in p for p in problems)


def test_publish_sets_must_exist_and_the_key_never_sits_in_the_manifest(tmp_path, cli):
    m = emt_manifest()
    m["publish"] = {"project": PROJECT, "sets": ["nope"]}
    path = make_emt_campaign(tmp_path, m)
    code, _, err = cli("diff", path)
    assert code == 3 and "publish.sets" in err
    m["publish"] = {"project": PROJECT, "api_key": "secret"}
    path.write_text(yaml.safe_dump(m))
    code, _, err = cli("diff", path)
    assert code == 3 and "publish.api_key" in err
