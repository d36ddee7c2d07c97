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
    # the ranking's uncertainty is the error head's, and the ablation's recipe is recorded beside its figures
    assert ckpt.elastic.error is not None and ckpt.elastic_ablation is not None
    assert "tensor loss only" in meta["metrics"]["elastic_ablation"]["recipe"]


def test_ranking_uses_the_error_head(ckpt):
    from pymatgen.core import Lattice, Structure

    from aimmat.model.evaluate import predict_error
    from aimmat.model.rank import predict

    s = [Structure(Lattice.cubic(4.2), ["Mg", "O"], [[0, 0, 0], [0.5, 0.5, 0.5]]),
         Structure(Lattice.cubic(5.64), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])]
    preds = predict(ckpt, s)
    err = predict_error(ckpt.elastic, s)
    assert [p["uncertainty_source"] for p in preds] == ["error_head"] * 2
    assert [p["terms"]["uncertainty"] for p in preds] == [float(e) for e in err[:, 0]]
    assert all(e > 0 for e in err.ravel())


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
