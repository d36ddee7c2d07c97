"""Checkpoint files: exact round trip, refusal of corrupted or mismatched files."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch
from pymatgen.core import Lattice, Structure

from aimmat.model import checkpoint
from aimmat.model.checkpoint import CheckpointError
from aimmat.model.evaluate import predict_heads
from aimmat.model.sample import sample
from tests.model.tiny import tiny_models, write_tiny_checkpoint


@pytest.fixture
def ckpt_path(tmp_path):
    p = tmp_path / "tiny.pt"
    write_tiny_checkpoint(p, seed=5)
    return p


def _structures():
    return [Structure.from_spacegroup("Fm-3m", Lattice.cubic(4.2), ["Mg", "O"], [[0, 0, 0], [0.5, 0.5, 0.5]]),
            Structure(Lattice.from_parameters(3, 4, 5, 85, 95, 100), ["Ga", "N", "N"],
                      [[0, 0, 0], [0.3, 0.4, 0.5], [0.7, 0.1, 0.2]])]


def test_round_trip_reproduces_predictions_and_samples_exactly(ckpt_path):
    el, vae, _ = tiny_models(5)
    el.eval(), vae.eval()
    loaded = checkpoint.load(ckpt_path, hashlib.sha256(ckpt_path.read_bytes()).hexdigest())
    a = predict_heads(el, _structures())
    b = predict_heads(loaded.elastic, _structures())
    assert np.array_equal(a, b)
    s1 = sample(vae, 4, 2, seed=9, schedule=loaded.sampler)
    s2 = sample(loaded.vae, 4, 2, seed=9, schedule=loaded.sampler)
    assert [x.structure.as_dict() for x in s1] == [x.structure.as_dict() for x in s2]
    assert all(len(x.structure.composition.elements) == 2 for x in s2)


def test_sample_depends_only_on_seed_and_index(ckpt_path):
    ck = checkpoint.load(ckpt_path)
    whole = sample(ck.vae, 20, 3, seed=4, schedule=ck.sampler)
    part = sample(ck.vae, 3, 3, seed=4, schedule=ck.sampler, indices=[17, 2, 18])
    assert [p.structure.as_dict() for p in part] == [whole[i].structure.as_dict() for i in (17, 2, 18)]
    other = sample(ck.vae, 3, 3, seed=5, schedule=ck.sampler)
    assert [o.structure.as_dict() for o in other] != [w.structure.as_dict() for w in whole[:3]]


def test_sha256_mismatch_is_refused_with_both_hashes(ckpt_path):
    with pytest.raises(CheckpointError) as e:
        checkpoint.load(ckpt_path, "0" * 64, where="models.m")
    assert "0" * 64 in str(e.value) and "models.m" in str(e.value) and e.value.exit_code == 3


@pytest.mark.parametrize("damage", ["truncate", "garbage", "foreign", "missing_key", "wrong_shape"])
def test_corrupted_checkpoint_is_refused(ckpt_path, damage):
    if damage == "truncate":
        ckpt_path.write_bytes(ckpt_path.read_bytes()[:5000])
        expect = "cannot be read"
    elif damage == "garbage":
        ckpt_path.write_bytes(b"not a checkpoint at all")
        expect = "cannot be read"
    else:
        payload = torch.load(ckpt_path, weights_only=True)
        if damage == "foreign":
            payload = {"state_dict": payload["elastic"]["state"]}
            expect = "not an aimmat model checkpoint"
        elif damage == "missing_key":
            del payload["vae"]
            expect = "lacks vae"
        else:
            payload["elastic"]["hparams"]["hidden"] = "4x0e + 1x2e"
            expect = "part 'elastic' does not match"
        torch.save(payload, ckpt_path)
    with pytest.raises(CheckpointError) as e:
        checkpoint.load(ckpt_path)
    assert expect in str(e.value) and str(ckpt_path) in str(e.value)


def test_cli_eval_of_a_corrupted_checkpoint_exits_3(cli, tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"\x00" * 100)
    code, out, err = cli("model", "eval", bad, "--no-generation")
    assert code == 3 and "cannot be read" in err and str(bad) in err


def test_separation_step_pushes_collapsed_atoms_apart_and_leaves_good_ones():
    from pymatgen.analysis.molecule_structure_comparator import CovalentRadius

    from aimmat.model.sample import separate

    lattice = torch.eye(3)[None] * 5.0
    species = torch.tensor([14, 8, 8])  # Si, O, O: the O pair 0.1 A apart, across the cell boundary
    frac = torch.tensor([[0.5, 0.5, 0.5], [0.99, 0.1, 0.1], [0.01, 0.1, 0.1]])
    out = separate(frac, lattice, species, torch.tensor([3]), factor=0.5)
    s = Structure(Lattice(5.0 * np.eye(3)), ["Si", "O", "O"], out.numpy())
    bound = 0.5 * 2 * CovalentRadius.radius["O"]
    assert s.get_distance(1, 2) >= bound - 1e-3
    assert np.allclose(out[0].numpy(), [0.5, 0.5, 0.5])  # the Si atom was far from both: untouched
    assert not torch.allclose(out, frac)
