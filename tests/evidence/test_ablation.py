"""Pipeline variants over the same candidates: strict-pass rates and deltas."""

from __future__ import annotations

import json

from tests.helpers import emt_manifest, make_emt_campaign


def test_prerelax_variant_changes_strict_pass_and_reports_deltas(tmp_path, cli):
    m = emt_manifest(stages=("screen", "relax"))
    # raw cells: density threshold between the unrelaxed and the EMT-relaxed Cu (a 3.60 -> ~3.59 A);
    # the variant pre-relaxes with EMT first, so the same checks see moved structures
    m["ablations"] = [
        {"name": "raw", "screen": {"density_max_g_cm3": 9.06}},
        {"name": "emt-prerelax", "screen": {"density_max_g_cm3": 9.06, "prerelax_profile": "emt"}},
    ]
    path = make_emt_campaign(tmp_path, m)
    code, out, _ = cli("diff", path)
    assert "ablation-raw" in out and "ablation-emt-prerelax" in out
    assert cli("apply", path, "-q", "--jobs", 1)[0] == 0
    rec = json.loads((tmp_path / "camp/c/1-element/Cu/ablation-emt-prerelax/record.json").read_text())
    assert "prerelax" in rec["outputs"] and rec["key_inputs"]["prerelax"]["engine"].startswith("ase")
    abl = json.loads(cli("evidence", path)[1])["scopes"]["screening"]["ablations"]
    raw, pre = abl["variants"]
    assert raw["n"] == pre["n"] == 5
    d = abl["deltas"][0]
    assert d["variant"] == "emt-prerelax" and d["n_common"] == 5
    assert d["delta_rate"] == (pre["strict_pass"] - raw["strict_pass"]) / 5
    flipped = set(d["gained"]) | set(d["lost"])
    assert flipped  # the pre-relaxation moved at least one candidate across the density threshold
    # ablation screens gate nothing: the main chain ran for every candidate the main screen passed
    status = json.loads(cli("status", path, "--json")[1])
    assert status["total"]["relaxdone"] == 5
    assert cli("diff", path, "--exit-code")[0] == 0
