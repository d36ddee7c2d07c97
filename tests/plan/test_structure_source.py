"""Where each stage's input structure comes from: the DFT chain starts from
the screen's ML pre-relaxed cell when the screen has one (a generated cell
arrives far from equilibrium), else from the candidate as imported."""

from __future__ import annotations

import json

import pytest
import yaml
from pymatgen.core import Structure

from aimmat.identity import structure_sha256
from aimmat.manifest.load import load_manifest
from tests.helpers import emt_manifest, make_emt_campaign


def _rec(tmp_path, where):
    return json.loads((tmp_path / "camp/c" / where / "record.json").read_text())


@pytest.mark.parametrize("stages, prerelax, expected", [
    (("screen", "relax", "scf"), True, {"screen": "import", "relax": "screen", "scf": "relax"}),
    (("screen", "relax", "scf"), False, {"screen": "import", "relax": "import", "scf": "relax"}),
    (("relax", "scf"), False, {"relax": "import", "scf": "relax"}),
])
def test_structure_source_passes_over_a_screen_without_prerelaxation(tmp_path, stages, prerelax, expected):
    m = emt_manifest(stages=stages)
    if prerelax:
        m["stages"]["screen"]["prerelax_profile"] = "emt"
    spec = load_manifest(make_emt_campaign(tmp_path, m))
    assert {s: spec.structure_source(s) for s in stages} == expected


def test_relax_starts_from_the_prerelaxed_cell(tmp_path, cli):
    m = emt_manifest(stages=("screen", "relax"))
    m["stages"]["screen"].update(prerelax_profile="emt", charge_neutral=False)
    path = make_emt_campaign(tmp_path, m)
    assert cli("apply", path, "-q", "--jobs", 1)[0] == 0
    scr = _rec(tmp_path, "1-element/Cu/screen")["outputs"]["prerelax"]
    cand = json.loads((tmp_path / "camp/c/1-element/Cu/candidate.json").read_text())
    assert scr["structure_sha256"] != cand["structure_sha256"]  # EMT moved the cell
    relax = _rec(tmp_path, "1-element/Cu/relax")
    assert relax["key_inputs"]["structure_sha256"] == scr["structure_sha256"]
    # the relaxation began at the pre-relaxed cell: it is already at EMT's equilibrium, so it
    # stops at once, where one from the imported cell takes steps
    assert relax["outputs"]["n_steps"] <= 1
    pre = Structure.from_dict(scr["structure"])
    out = Structure.from_dict(relax["outputs"]["structure"])
    assert out.volume == pytest.approx(pre.volume, rel=1e-3)
    # without the pre-relaxation the same relax reads the imported cell: a new key, a rerun
    del m["stages"]["screen"]["prerelax_profile"]
    path.write_text(yaml.safe_dump(m))
    code, out_text, _ = cli("diff", path)
    assert "rerun   relax" in out_text or "rerun relax" in " ".join(out_text.split())
    assert cli("apply", path, "-q", "--jobs", 1)[0] == 0
    relax = _rec(tmp_path, "1-element/Cu/relax")
    assert relax["key_inputs"]["structure_sha256"] == cand["structure_sha256"] == structure_sha256(
        Structure.from_dict(cand["structure"]))
    assert relax["outputs"]["n_steps"] > 1
