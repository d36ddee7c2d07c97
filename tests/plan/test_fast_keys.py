"""The template-hashed keys (plan.keys.stage_key_for, import_key) equal the
keys of the full canonical inputs: a diff that hashes fewer bytes must not
decide differently."""

from __future__ import annotations

import hashlib
import random

import pytest
import yaml

from aimmat.engines.qe.pseudos import DEBIAN_DIR
from aimmat.manifest import load_manifest
from aimmat.manifest.identity import sha256_canonical
from aimmat.plan import keys
from aimmat.plan.keys import import_inputs, import_key, stage_inputs, stage_key, stage_key_for
from aimmat.state.summary import SEP
from tests.helpers import emt_manifest, make_emt_campaign


def _shas(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [hashlib.sha256(str(rng.random()).encode()).hexdigest() for _ in range(n)]


def test_emt_stage_keys_equal_full_inputs(tmp_path):
    m = emt_manifest()
    m["ablations"] = [{"name": "loose", "screen": {"min_distance_a": 0.3}}]
    spec = load_manifest(make_emt_campaign(tmp_path, m))
    stages = spec.stages + spec.ablation_stages
    assert {"screen", "relax", "scf", "elastic", "ablation-loose"} <= set(stages)
    for sha in _shas(20):
        got = {st: stage_key_for(spec, st, sha) for st in stages}
        assert got == {st: stage_key(stage_inputs(spec, st, sha)) for st in stages}
        assert len(set(got.values())) == len(stages)  # the stage's own inputs are in its key
    # a hash the template cannot hold (not alphanumeric) takes the full path, same answer
    for odd in ('a"b', "x\\y", "é" * 4, None):
        assert stage_key_for(spec, "relax", odd) == stage_key(stage_inputs(spec, "relax", odd))


def test_file_import_keys_equal_full_inputs(tmp_path):
    spec = load_manifest(make_emt_campaign(tmp_path, emt_manifest()))
    assert spec.candidates
    for src in spec.candidates:
        assert import_key(src, spec) == sha256_canonical(import_inputs(src, spec))
        assert import_key(src, spec) == import_key(src)  # no ranking model: the same inputs
    # the memo answers the second time; a changed source hash is another key
    src = spec.candidates[0]
    other = type(src)(src.set_name, src.cand_id + "x", src.file, src.relpath, _shas(1)[0], src.fmt, src.frame)
    assert import_key(other, spec) == sha256_canonical(import_inputs(other, spec)) != import_key(src, spec)


@pytest.mark.skipif(not DEBIAN_DIR.is_dir(), reason="Debian quantum-espresso-data not installed")
def test_qe_stage_keys_follow_elements_and_metallic(tmp_path, monkeypatch):
    """qe keys hold each element's pseudopotential md5 and, for scf/elastic
    on a metal mesh, the relaxation's metallic flag: the template is per
    (elements, metallic) and still equals the full inputs."""
    monkeypatch.setattr(keys, "engine_version", lambda kind: "pw.x test")
    m = emt_manifest(stages=("relax", "scf", "elastic"))
    m["profiles"] = {"q": {"kind": "qe", "pseudo": {"family": "debian", "files": {"Si": "Si.pbe-rrkj.UPF",
                                                                                  "Cu": "Cu.pbe-kjpaw.UPF"}},
                           "ecutwfc_ry": 30, "kspacing_metal_per_a": 0.15}}
    for st in ("relax", "scf", "elastic"):
        m["stages"][st]["profile"] = "q"
    path = make_emt_campaign(tmp_path, m)
    spec = load_manifest(path)
    seen = {}
    for sha in _shas(3, seed=1):
        for species in (["Si"], ["Cu"], ["Cu", "Si"]):
            for metallic in (None, 0, 1, True, False):
                for st in ("relax", "scf", "elastic"):
                    fast = stage_key_for(spec, st, sha, SEP.join(species), metallic)
                    assert fast == stage_key(stage_inputs(spec, st, sha, species, metallic)), (st, species, metallic)
                    seen.setdefault((st, sha, tuple(species)), set()).add(fast)
    for (st, _, _), ks in seen.items():
        assert len(ks) == (1 if st == "relax" else 2), st  # metallic matters for scf/elastic only
    assert len({k for (st, sha, sp), ks in seen.items() if st == "relax" for k in ks}) == 9  # 3 shas x 3 element sets
    assert yaml.safe_load(path.read_text())["profiles"]["q"]["kind"] == "qe"
