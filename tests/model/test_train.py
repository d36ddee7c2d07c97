"""`aimmat model train` end to end on a few rows of the shared data: the log-moduli loss and the error
head train, and `--generator-from` reuses a VAE only when the generator recipe is the same."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
import yaml

from aimmat.model import checkpoint

SHARED = Path(os.environ.get("AIMMAT_SHARED_DATA") or Path(__file__).resolve().parents[3] / "shared" / "data")
ELASTIC = SHARED / "elastic_tensor_2015" / "elastic_tensor_2015.json.gz"
PEROV = SHARED / "cdvae_perov_5" / "val.csv.gz"
TINY_EL = dict(cutoff=4.0, n_layers=1, hidden="8x0e + 2x1o + 2x2e + 1x3o + 1x4e", out="8x0e + 2x2e + 2x4e", lmax=4,
               n_heads=2, avg_neighbours=15.0)
TINY_VAE = dict(latent_dim=8, cutoff=4.0, n_layers=1, lmax=2, hidden="8x0e + 2x1o + 2x2e", enc_out="8x0e + 2x1o + 2x2e",
                score_hidden="8x0e + 2x1o + 2x2e", score_layers=1, max_atoms=6, avg_neighbours=15.0)


def _config(tmp: Path, **elastic) -> Path:
    cfg = {"data_root": str(SHARED), "seed": 0, "split_seed": 1, "threads": 1,
           "elastic": {"data": [{"kind": "elastic_tensor_2015", "path": "elastic_tensor_2015/elastic_tensor_2015.json.gz",
                                 "limit": 40}], "max_atoms": 8, "epochs": 1, "batch_size": 16, "ablation": False,
                       "model": dict(TINY_EL), **elastic},
           "generator": {"data": [{"kind": "cdvae_csv", "path": "cdvae_perov_5/val.csv.gz", "limit": 48}],
                         "test": [{"kind": "cdvae_csv", "path": "cdvae_perov_5/test.csv.gz"}], "max_atoms": 6,
                         "epochs": 1, "batch_size": 16, "model": dict(TINY_VAE)}}
    p = tmp / f"cfg-{len(list(tmp.glob('cfg-*')))}.yaml"
    p.write_text(yaml.safe_dump(cfg))
    return p


@pytest.mark.slow
@pytest.mark.skipif(not (ELASTIC.exists() and PEROV.exists()), reason=f"shared data not found under {SHARED}")
def test_train_with_error_head_and_reuse_the_generator(cli, tmp_path):
    cfg = _config(tmp_path, log_moduli_weight=1.0)
    code, out, err = cli("model", "train", cfg, "--out", tmp_path / "a.pt")
    assert code == 0, err
    a = checkpoint.load(tmp_path / "a.pt")
    assert a.elastic.error is None and "spearman_error_head_vs_error_k" not in a.meta["metrics"]["elastic"]

    # the elastic heads change (error head on), the generator recipe does not: its VAE is reused as is
    cfg2 = _config(tmp_path, log_moduli_weight=1.0)
    c2 = yaml.safe_load(cfg2.read_text())
    c2["elastic"]["model"]["error_head"] = True
    cfg2.write_text(yaml.safe_dump(c2))
    code, out, err = cli("model", "train", cfg2, "--out", tmp_path / "b.pt", "--generator-from", tmp_path / "a.pt")
    assert code == 0, err
    assert "not retrained" in err and "vae epoch" not in err
    b = checkpoint.load(tmp_path / "b.pt")
    assert b.meta["generator_from_sha256"] == a.sha256
    assert all(torch.equal(x, y) for x, y in zip(a.vae.state_dict().values(), b.vae.state_dict().values()))
    assert b.elastic.error is not None
    m = b.meta["metrics"]["elastic"]
    assert -1 <= m["spearman_error_head_vs_error_k"] <= 1 and m["pd_fraction"] == 1.0

    # another generator recipe: refused, nothing written
    c3 = yaml.safe_load(cfg2.read_text())
    c3["generator"]["epochs"] = 2
    cfg3 = tmp_path / "cfg-other.yaml"
    cfg3.write_text(yaml.safe_dump(c3))
    code, out, err = cli("model", "train", cfg3, "--out", tmp_path / "c.pt", "--generator-from", tmp_path / "a.pt")
    assert code == 2 and "generator section or seed differs" in err
    assert not (tmp_path / "c.pt").exists()
