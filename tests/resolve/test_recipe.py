"""What a recipe hands an engine: the manifest profile plus what resolving found."""

from __future__ import annotations

import pytest

from aimmat.engines.qe.pseudos import DEBIAN_DIR
from aimmat.manifest import load_manifest
from aimmat.resolve import resolve
from aimmat.state.summary import SEP
from tests.helpers import emt_manifest, make_emt_campaign


def test_emt_task_profile_is_the_manifest_profile_plus_retry_policy(tmp_path):
    res = resolve(load_manifest(make_emt_campaign(tmp_path, emt_manifest())))
    prof = res.recipes["relax"].task_profile("", None, res.retry_policy)
    assert prof["kind"] == "emt" and prof["fmax_ev_per_a"] == 0.05 and prof["retry_policy"]["mixing_beta_factor"] == 0.8
    assert res.recipes["screen"].task_profile("", None, {}) is None  # no pre-relaxation: no engine
    assert res.shortlist_stage == "relax" and res.chain == ["import", "screen", "relax", "scf", "elastic"]
    assert res.environment["engines"] == {"emt": res.recipes["relax"].engine}


@pytest.mark.skipif(not DEBIAN_DIR.is_dir(), reason="Debian quantum-espresso-data not installed")
def test_qe_task_profile_carries_files_cutoffs_and_metal_mesh(tmp_path, monkeypatch):
    monkeypatch.setattr("aimmat.resolve.environment.engine_version", lambda kind: "pw.x test")
    m = emt_manifest(stages=("relax", "scf"))
    m["profiles"] = {"q": {"kind": "qe", "pseudo": {"family": "debian", "files": {"Cu": "Cu.pbe-kjpaw.UPF"}},
                           "ecutwfc_ry": 40, "kspacing_per_a": 0.3, "kspacing_metal_per_a": 0.15}}
    m["stages"] = {"relax": {"profile": "q"}, "scf": {"profile": "q"}}
    res = resolve(load_manifest(make_emt_campaign(tmp_path, m)), ["Cu"])
    relax, scf = res.recipes["relax"], res.recipes["scf"]
    assert relax.qe and not relax.metal_mesh and scf.metal_mesh  # scf reads the relaxation's metallic flag
    prof = scf.task_profile("Cu", True, {})
    assert prof["pseudo_files"] == {"Cu": str(DEBIAN_DIR / "Cu.pbe-kjpaw.UPF")}
    assert prof["kspacing_per_a"] == 0.15 and scf.task_profile("Cu", False, {})["kspacing_per_a"] == 0.3
    assert prof["ecutwfc_ry"] == 40  # the manifest's cutoff: nothing from the family
    assert scf.inputs("a" * 64, "Cu", True)["metallic"] is True and "metallic" not in relax.inputs("a" * 64, "Cu")
    with pytest.raises(Exception, match="not resolved"):
        scf.task_profile(SEP.join(["Cu", "Si"]), False, {})
