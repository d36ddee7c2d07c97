"""Synthesis-oriented screen criteria and ranking term: supply concentration (HHI), toxic-element lists with
their sources, radioactive elements. Off by default, and then not in the screen's key."""

from __future__ import annotations

import json

import pytest
from pymatgen.analysis.hhi import HHIModel
from pymatgen.core import Composition, Element

from aimmat.manifest.stage_configs import ScreenStage
from aimmat.model.rank import _hhi_fraction, score
from aimmat.stages.screen import synthesis_criteria, toxic_lists
from tests.helpers import emt_manifest, make_emt_campaign


def test_each_toxic_list_names_its_source_and_real_elements():
    lists = toxic_lists()
    assert set(lists) == {"rohs", "epa_priority_metals"}
    for name, entry in lists.items():
        assert len(entry["source"]) > 40 and ("Directive" in entry["source"] or "CFR" in entry["source"])
        assert entry["elements"] == sorted(entry["elements"]) and all(Element(e) for e in entry["elements"])
    assert lists["rohs"]["elements"] == ["Cd", "Hg", "Pb"] and len(lists["epa_priority_metals"]["elements"]) == 13


def test_criteria_values_against_pymatgen_data():
    hhi = HHIModel().get_hhi(Composition("PbTiO3"))[0]
    c = synthesis_criteria(Composition("PbTiO3"), {"hhi_production_max": hhi + 1, "toxic_list": "rohs", "no_radioactive": True})
    assert c["hhi_production"]["pass"] and c["hhi_production"]["value"] == pytest.approx(hhi, abs=0.05)
    assert synthesis_criteria(Composition("PbTiO3"), {"hhi_production_max": hhi - 1})["hhi_production"]["pass"] is False
    assert c["toxic_elements"] == {"pass": False, "value": ["Pb"], "threshold": "rohs", "unit": None}
    assert c["radioactive"]["pass"] and synthesis_criteria(Composition("TcO2"), {"no_radioactive": True})["radioactive"]["value"] == ["Tc"]
    assert synthesis_criteria(Composition("MgO"), {}) == {}  # nothing asked, nothing recorded


def test_off_by_default_and_then_out_of_the_key():
    # a campaign screened before these criteria existed keeps its screen keys
    assert set(ScreenStage().key_criteria()) == {"min_distance_a", "density_min_g_cm3", "density_max_g_cm3",
                                                  "charge_neutral", "prerelax_profile"}
    assert ScreenStage(toxic_list="rohs").key_criteria()["toxic_list"] == "rohs"


def test_hhi_ranking_term():
    assert _hhi_fraction(Composition("MgO")) == pytest.approx(HHIModel().get_hhi(Composition("MgO"))[0] / 1e4, abs=1e-6)
    pred = {"terms": {"log10_k_vrh": 2.0, "hhi_production": 0.5}}
    assert score(pred, {"log10_k_vrh": 1.0, "hhi_production": -2.0}) == pytest.approx(1.0)
    from aimmat.errors import CampaignError

    with pytest.raises(CampaignError, match="no ranking term hhi_production"):
        score({"terms": {"log10_k_vrh": 2.0}}, {"hhi_production": -1.0})


@pytest.mark.slow
def test_a_screen_with_a_toxic_list_records_the_criterion(tmp_path, cli):
    m = emt_manifest(stages=("screen",))
    m["stages"]["screen"] = {"toxic_list": "epa_priority_metals", "hhi_production_max": 9000}
    path = make_emt_campaign(tmp_path, m)
    assert cli("apply", path, "-q", "--jobs", 1)[0] == 0
    out = {}
    for rec in (tmp_path / "camp/c").glob("*/*/screen/record.json"):
        r = json.loads(rec.read_text())
        out[rec.parts[-3]] = r["outputs"]["criteria"]
    assert out["Al"]["toxic_elements"]["pass"] and out["Cu"]["toxic_elements"]["value"] == ["Cu"]
    assert out["NiAl"]["toxic_elements"]["value"] == ["Ni"] and "hhi_production" in out["Al"]
    code, text, _ = cli("status", path, "-v")
    assert "toxic_elements" in text
