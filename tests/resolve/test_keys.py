"""The template-hashed keys (Recipe.key, import keys) equal the keys of the
full canonical inputs: a diff that hashes fewer bytes must not decide
differently."""

from __future__ import annotations

import hashlib
import random

import pytest

from aimmat.engines.qe.pseudos import DEBIAN_DIR
from aimmat.identity import sha256_canonical
from aimmat.manifest import load_manifest
from aimmat.resolve import resolve
from aimmat.resolve.imports import import_inputs, import_keys, predictor_sha256
from aimmat.resolve.keys import stage_key
from aimmat.state.summary import SEP
from tests.helpers import emt_manifest, make_emt_campaign


def _shas(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [hashlib.sha256(str(rng.random()).encode()).hexdigest() for _ in range(n)]


def test_emt_stage_keys_equal_full_inputs(tmp_path):
    m = emt_manifest()
    m["ablations"] = [{"name": "loose", "screen": {"min_distance_a": 0.3}}]
    res = resolve(load_manifest(make_emt_campaign(tmp_path, m)))
    stages = list(res.recipes)
    assert {"screen", "relax", "scf", "elastic", "ablation-loose"} <= set(stages)
    for sha in _shas(20):
        got = {st: res.recipes[st].key(sha) for st in stages}
        assert got == {st: stage_key(res.recipes[st].inputs(sha)) for st in stages}
        assert len(set(got.values())) == len(stages)  # the stage's own inputs are in its key
    # a hash the template cannot hold (not alphanumeric) takes the full path, same answer
    for odd in ('a"b', "x\\y", "é" * 4, None):
        assert res.recipes["relax"].key(odd) == stage_key(res.recipes["relax"].inputs(odd))


def test_file_import_keys_equal_full_inputs(tmp_path):
    spec = load_manifest(make_emt_campaign(tmp_path, emt_manifest()))
    assert spec.candidates
    keys = import_keys(spec, predictor_sha256(spec))
    for src in spec.candidates:
        assert keys[(src.set_name, src.cand_id)] == sha256_canonical(import_inputs(src))
    # a changed source hash is another key
    src = spec.candidates[0]
    other = type(src)(src.set_name, src.cand_id + "x", src.file, src.relpath, _shas(1)[0], src.fmt, src.frame)
    spec.candidates.append(other)
    keys = import_keys(spec, predictor_sha256(spec))
    assert keys[(other.set_name, other.cand_id)] == sha256_canonical(import_inputs(other)) != keys[(src.set_name, src.cand_id)]


@pytest.mark.skipif(not DEBIAN_DIR.is_dir(), reason="Debian quantum-espresso-data not installed")
def test_qe_stage_keys_follow_elements_and_metallic(tmp_path, monkeypatch):
    """qe keys hold each element's pseudopotential md5 and, for scf/elastic
    on a metal mesh, the relaxation's metallic flag: the template is per
    (elements, metallic) and still equals the full inputs."""
    monkeypatch.setattr("aimmat.resolve.environment.engine_version", lambda kind: "pw.x test")
    m = emt_manifest(stages=("relax", "scf", "elastic"))
    m["profiles"] = {"q": {"kind": "qe", "pseudo": {"family": "debian", "files": {"Si": "Si.pbe-rrkj.UPF",
                                                                                  "Cu": "Cu.pbe-kjpaw.UPF"}},
                           "ecutwfc_ry": 30, "kspacing_metal_per_a": 0.15}}
    for st in ("relax", "scf", "elastic"):
        m["stages"][st]["profile"] = "q"
    spec = load_manifest(make_emt_campaign(tmp_path, m))
    all_species = [SEP.join(s) for s in (["Si"], ["Cu"], ["Cu", "Si"])]
    res = resolve(spec, all_species)
    assert res.environment["engines"] == {"qe": "pw.x test"}
    assert set(res.environment["pseudopotentials_md5"]) == {"Si.pbe-rrkj.UPF", "Cu.pbe-kjpaw.UPF"}
    seen = {}
    for sha in _shas(3, seed=1):
        for species in all_species:
            for metallic in (None, 0, 1, True, False):
                for st in ("relax", "scf", "elastic"):
                    r = res.recipes[st]
                    fast = r.key(sha, species, metallic)
                    assert fast == stage_key(r.inputs(sha, species, metallic)), (st, species, metallic)
                    seen.setdefault((st, sha, species), set()).add(fast)
    for (st, _, _), ks in seen.items():
        assert len(ks) == (1 if st == "relax" else 2), st  # metallic matters for scf/elastic only
    assert len({k for (st, sha, sp), ks in seen.items() if st == "relax" for k in ks}) == 9  # 3 shas x 3 element sets
    # an element set resolve was not given is a bug of the caller, said as such
    with pytest.raises(Exception, match="not resolved"):
        res.recipes["relax"].key(_shas(1)[0], "Fe")
