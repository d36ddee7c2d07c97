"""Checkpoint files: one torch file holding hyperparameters, weights, data
file hashes, split seed, metrics and the aimmat version.

Loaded with ``weights_only=True`` (no pickled code runs). Its sha256 is what
a manifest pins; ``load`` checks a pin when given one.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from pathlib import Path

import torch

import aimmat
from aimmat.errors import ManifestError
from aimmat.identity import sha256_file
from aimmat.model.vae import CrystalVAE, ElasticPredictor

FORMAT = "aimmat-model-checkpoint"
FORMAT_VERSION = 1
REQUIRED = ("format", "format_version", "aimmat_version", "config", "data_files", "split_seed", "metrics",
            "elastic", "vae", "sampler")


class CheckpointError(ManifestError):
    """A checkpoint file is missing, corrupted, or not the one the manifest pins."""


@dataclass
class Checkpoint:
    path: Path
    sha256: str
    meta: dict
    elastic: ElasticPredictor
    vae: CrystalVAE
    elastic_ablation: ElasticPredictor | None

    @property
    def sampler(self) -> dict:
        return dict(self.meta["sampler"])


def _module(kind, part: dict, path: Path, name: str):
    try:
        m = kind(**part["hparams"])
        m.load_state_dict(part["state"], strict=True)
    except (TypeError, KeyError, RuntimeError) as e:
        raise CheckpointError(f"checkpoint {path}: part {name!r} does not match this aimmat's model: "
                              f"{str(e).splitlines()[0]}",
                              fix="retrain with `aimmat model train`, or use the aimmat version that wrote it "
                                  "(recorded in the file)") from None
    m.eval()
    return m


def pack(*, config: dict, data_files: dict, split_seed: int, metrics: dict, sampler: dict,
         elastic: ElasticPredictor, elastic_hparams: dict, vae: CrystalVAE, vae_hparams: dict,
         ablation: ElasticPredictor | None = None, ablation_hparams: dict | None = None, extra: dict | None = None) -> dict:
    payload = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "aimmat_version": aimmat.__version__,
        "config": config, "data_files": data_files, "split_seed": split_seed, "metrics": metrics,
        "sampler": sampler,
        "elastic": {"hparams": elastic_hparams, "state": elastic.state_dict()},
        "vae": {"hparams": vae_hparams, "state": vae.state_dict()},
    }
    if ablation is not None:
        payload["elastic_ablation"] = {"hparams": ablation_hparams, "state": ablation.state_dict()}
    payload.update(extra or {})
    return payload


def save(payload: dict, path: Path) -> str:
    """Write atomically; returns the file's sha256."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    torch.save(payload, buf)
    tmp = path.with_name(f".tmp-{path.name}")
    tmp.write_bytes(buf.getvalue())
    tmp.replace(path)
    return hashlib.sha256(buf.getvalue()).hexdigest()


def load(path: Path, expected_sha256: str | None = None, where: str = "") -> Checkpoint:
    path = Path(path)
    at = f" ({where})" if where else ""
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path}{at} not found")
    digest = sha256_file(path)
    if expected_sha256 is not None and digest != expected_sha256.lower():
        raise CheckpointError(
            f"checkpoint {path}{at}: sha256 is {digest}, the manifest pins {expected_sha256}",
            fix="the file changed since it was pinned: restore it, or pin the new hash if the change is intended")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for truncated or foreign files
        raise CheckpointError(f"checkpoint {path}{at} cannot be read: {type(e).__name__}: "
                              f"{str(e).splitlines()[0] if str(e) else ''}",
                              fix="the file is truncated or not an aimmat checkpoint") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"checkpoint {path}{at} is not an aimmat model checkpoint (format tag missing)")
    missing = [k for k in REQUIRED if k not in payload]
    if missing:
        raise CheckpointError(f"checkpoint {path}{at} lacks {', '.join(missing)}")
    if payload["format_version"] > FORMAT_VERSION:
        raise CheckpointError(f"checkpoint {path}{at} has format version {payload['format_version']}; "
                              f"this aimmat reads up to {FORMAT_VERSION}", fix="upgrade aimmat")
    elastic = _module(ElasticPredictor, payload["elastic"], path, "elastic")
    vae = _module(CrystalVAE, payload["vae"], path, "vae")
    ablation = (_module(ElasticPredictor, payload["elastic_ablation"], path, "elastic_ablation")
                if "elastic_ablation" in payload else None)
    meta = {k: v for k, v in payload.items() if k not in ("elastic", "vae", "elastic_ablation")}
    return Checkpoint(path=path, sha256=digest, meta=meta, elastic=elastic, vae=vae, elastic_ablation=ablation)


def describe(path: Path) -> dict:
    """What a methods section needs from a checkpoint, without building its modules: hyperparameters of each
    part and their parameter counts, sampler, training settings, data files with sha256, split seed and the
    held-out figures it was saved with (Figure 2 and Table 1 of the manuscript are drawn from this)."""
    try:
        payload = torch.load(Path(path), map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - as in load()
        raise CheckpointError(f"checkpoint {path} cannot be read: {type(e).__name__}") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"checkpoint {path} is not an aimmat model checkpoint (format tag missing)")
    cfg = payload.get("config", {})

    def part(name: str, kind) -> dict | None:
        p = payload.get(name)
        if not isinstance(p, dict):
            return None
        # the hyperparameters the module is built with: those stored, over the constructor's defaults
        import inspect

        defaults = {k: v.default for k, v in inspect.signature(kind.__init__).parameters.items()
                    if k != "self" and v.default is not inspect.Parameter.empty}
        return {"hparams": {**defaults, **dict(p.get("hparams", {}))},
                "parameters": int(sum(t.numel() for t in p.get("state", {}).values()))}

    train = {}
    for key in ("elastic", "generator"):
        c = cfg.get(key) or {}
        train[key] = {k: c[k] for k in ("epochs", "batch_size", "lr", "beta", "log_moduli_weight", "max_atoms") if k in c}
        train[key]["data"] = [d.get("path") for d in c.get("data", [])]
    em = (payload.get("metrics") or {}).get("elastic") or {}
    held = {k: em[k] for k in ("n_test", "mae_log10_kvrh", "mae_log10_gvrh", "mae_voigt_mean_gpa", "pd_fraction",
                               "spearman_spread_vs_error", "spearman_error_head_vs_error_k", "spearman_error_head_vs_error_g")
            if k in em}
    learned = payload.get("learning")
    if isinstance(learned, dict):  # a learning cycle's child carries its parent's metrics: they are not its own
        held = {"note": f"fine-tuned in learning cycle {learned.get('name')!r} from {str(learned.get('parent_sha256'))[:12]}; "
                        "held-out figures not re-evaluated (aimmat model eval CHECKPOINT)"}
    return {"aimmat_version": payload.get("aimmat_version"), "vae": part("vae", CrystalVAE),
            "elastic": part("elastic", ElasticPredictor), "elastic_ablation": part("elastic_ablation", ElasticPredictor), "sampler": dict(payload.get("sampler", {})),
            "training": train, "data_files": dict(payload.get("data_files", {})), "split_seed": payload.get("split_seed"),
            "seed": payload.get("seed"), "elastic_held_out": held, "recipe": payload.get("recipe"),
            "learning_cycle": learned.get("name") if isinstance(learned, dict) else None,
            "parent_sha256": payload.get("parent_sha256"),
            "generator_from_sha256": payload.get("generator_from_sha256")}
