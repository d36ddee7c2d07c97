"""A stage is one entry in the stage table: registering it is all it takes
for the manifest to accept its block and for diff, apply and status to run,
key, explain and count it."""

from __future__ import annotations

import json

import pytest
import yaml
from pydantic import Field

from aimmat.manifest import stage_table
from aimmat.manifest.models_base import SafeId, Strict
from aimmat.manifest.stage_table import StageDef
from aimmat.stages.base import StageOutcome
from tests.helpers import emt_manifest, make_emt_campaign


class ProbeStage(Strict):
    """A test stage: the relaxed cell's volume times a factor."""

    profile: SafeId
    factor: float = Field(2.0, gt=0)


def run_probe(structure, cfg, profile, directory, previous):
    return StageOutcome(ok=True, outputs={"scaled_volume_a3": structure.volume * cfg["factor"]}, output_present=True)


@pytest.fixture
def probe():
    stage_table.register(StageDef("probe", "engine", 1, structure_source="relax", run=f"{__name__}:run_probe",
                                  config=ProbeStage, profile_field="profile", requires=("relax",)), after="scf")
    yield
    stage_table.unregister("probe")


def test_registered_stage_runs_keys_and_explains(tmp_path, cli, probe):
    m = emt_manifest(stages=("screen", "relax"))
    m["stages"]["probe"] = {"profile": "emt", "factor": 2.0}
    path = make_emt_campaign(tmp_path, m)
    code, out, err = cli("apply", path, "-q", "--jobs", "1")
    assert code == 0, err
    recs = sorted((tmp_path / "camp/c").glob("*/*/probe/record.json"))
    assert recs
    rec = json.loads(recs[0].read_text())
    relaxed = json.loads((recs[0].parent.parent / "relax/record.json").read_text())["outputs"]
    assert rec["key_inputs"]["probe"] == {"factor": 2.0}  # the stage's own settings are in its key
    assert rec["key_inputs"]["structure_sha256"] == relaxed["structure_sha256"]  # it reads the relaxed cell
    assert rec["outputs"]["scaled_volume_a3"] == pytest.approx(2.0 * relaxed["volume_a3"])
    assert cli("diff", path, "--exit-code")[0] == 0
    m["stages"]["probe"]["factor"] = 3.0
    path.write_text(yaml.safe_dump(m))
    code, out, _ = cli("diff", path)
    assert code == 0 and "~ rerun   probe" in out and "inputs changed: probe.factor 2.0 -> 3.0" in out
    assert "relax" not in out.split("probe")[0].split("\n")[-1]  # relax is kept
    code, out, _ = cli("status", path, "--json")
    assert code == 0 and json.loads(out)["stages"] == ["screen", "relax", "probe"]


def test_registered_stage_block_is_validated(tmp_path, cli, probe):
    m = emt_manifest(stages=("screen",))
    m["stages"]["probe"] = {"profile": "emt", "factor": -1}
    code, _, err = cli("diff", make_emt_campaign(tmp_path, m))
    assert code == 3 and "stages.probe.factor" in err
    m["stages"]["probe"]["factor"] = 1.0
    code, _, err = cli("diff", make_emt_campaign(tmp_path, m))
    assert code == 3 and "stages.probe: needs stages.relax" in err


def test_unregistered_stage_is_an_unknown_key(tmp_path, cli):
    m = emt_manifest(stages=("screen", "relax"))
    m["stages"]["probe"] = {"profile": "emt"}
    code, _, err = cli("diff", make_emt_campaign(tmp_path, m))
    assert code == 3 and "stages.probe: unknown key" in err
