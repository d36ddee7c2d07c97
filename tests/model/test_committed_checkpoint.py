"""The checkpoint committed for the demo: pinned, loadable, PD on real
crystals, better than the mean predictor on its held-out split."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import yaml

from aimmat.identity import sha256_file
from aimmat.model import checkpoint, data
from aimmat.model.evaluate import elastic_metrics, predict_heads

ROOT = Path(__file__).resolve().parents[2]
CKPT = ROOT / "manifests" / "checkpoints" / "aimmat-small.pt"
DATA = Path(os.environ.get("AIMMAT_SHARED_DATA", ROOT.parent / "shared" / "data"))


@pytest.fixture(scope="module")
def ckpt():
    return checkpoint.load(CKPT)


def test_demo_manifest_pins_the_committed_checkpoint(ckpt):
    demo = yaml.safe_load((ROOT / "manifests" / "demo.yaml").read_text())
    assert demo["models"]["small"]["sha256"] == sha256_file(CKPT) == ckpt.sha256
    meta = ckpt.meta
    assert meta["aimmat_version"] and isinstance(meta["split_seed"], int)
    assert all(len(h) == 64 for h in meta["data_files"].values()) and meta["data_files"]
    assert meta["metrics"]["elastic"]["pd_fraction_all_heads"] == 1.0
    assert CKPT.stat().st_size < 20e6  # "a few MB"


@pytest.mark.slow
def test_predictions_on_the_held_out_split_are_pd_and_beat_the_mean(ckpt):
    path = DATA / "elastic_tensor_2015" / "elastic_tensor_2015.json.gz"
    if not path.exists():
        pytest.skip(f"shared data not found at {path} (set AIMMAT_SHARED_DATA)")
    cfg = ckpt.meta["config"]["elastic"]
    ds = data.load(cfg["data"], DATA, int(cfg["max_atoms"]))
    assert ds.files == {k: v for k, v in ckpt.meta["data_files"].items() if k in ds.files}
    sp = data.split(len(ds.items), ckpt.meta["split_seed"])
    test = [ds.items[i] for i in sp["test"]]
    heads = predict_heads(ckpt.elastic, [i.structure for i in test])
    assert (np.linalg.eigvalsh(heads).min(-1) > 0).all()
    m = elastic_metrics(ckpt.elastic, test, [ds.items[i] for i in sp["train"]])
    assert m["mae_log10_kvrh"] < m["mean_predictor_mae_log10_kvrh"]
    assert m["mae_log10_gvrh"] < m["mean_predictor_mae_log10_gvrh"]
    # the unconstrained ablation, same data and seed, is not PD everywhere
    abl = predict_heads(ckpt.elastic_ablation, [i.structure for i in test])
    assert (np.linalg.eigvalsh(abl).min(-1) <= 0).any()
