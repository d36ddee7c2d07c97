"""One active-learning cycle: ``aimmat model update MANIFEST`` (torch is imported only when a cycle runs).

The manifest's ``learning:`` block names a parent checkpoint (a key of
``models:``), which outcomes become training data, how the parent is
updated and a hashed holdout. From the campaign's records only:

- every candidate gets an outcome class (``pass_both``, ``fail_gates``:
  elastic-ready without pass_both, or its status: ``failed``,
  ``outputpresentnotconverged``, ``not_converged_settings``,
  ``screened_out``);
- fitted elastic tensors passing the selected gates fine-tune the elastic
  head (from the parent's weights, tensor error plus log10 K/G error, as
  in training);
- generated candidates' latents (recomputed from their provenance: seed,
  index and the generating checkpoint's own guidance) become the child's
  generation guidance: ``seek`` outcomes attract, ``avoid`` outcomes repel
  (``sample.draw_latents``);
- a candidate is held out when sha256(salt, set/candidate) falls below the
  holdout fraction: a function of the candidate alone, so a later cycle
  with the same salt holds out the same ones; the salt and fraction are
  inherited along a lineage (a change is refused), and every holdout the
  lineage recorded stays out. No holdout tensor and no holdout latent
  reaches the update; ``update`` checks it before training.

The child checkpoint and its record (parent sha256, what it learned from,
the holdout, before / after on the holdout) go to
``<campaign>/learning/<name>/``; the manifest pins the child like any other
checkpoint. Re-running with unchanged inputs writes nothing.
"""

from __future__ import annotations

import copy
import hashlib
import io
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from aimmat.errors import CampaignError, UsageError
from aimmat.identity import sha256_file, sha256_json

LEARNING_DIR = "learning"
RECORD = "record.json"
CHECKPOINT = "checkpoint.pt"


@dataclass
class Outcome:
    set_name: str
    cand_id: str
    cls: str  # pass_both, fail_gates or a candidate status
    structure: dict | None  # the structure the tensor belongs to (elastic input), else the imported one
    voigt: list | None  # fitted Voigt tensor (GPa) in the frame of ``structure``
    gates: dict  # pass_both, pass_pd, pass_fit_rms
    provenance: dict
    elastic_key: str | None

    @property
    def ident(self) -> str:
        return f"{self.set_name}/{self.cand_id}"


def held_out(ident: str, salt: str, fraction: float) -> bool:
    """Whether candidate ``ident`` (SET/CANDIDATE) is in the hashed holdout."""
    h = hashlib.sha256(f"{salt}\0{ident}".encode()).digest()
    return int.from_bytes(h[:8], "big") / 2 ** 64 < fraction


def outcomes(spec, observed) -> list[Outcome]:
    """One Outcome per imported candidate of the learning block's sets (records only)."""
    from aimmat.state.status import candidate_status

    sets = set(spec.manifest.learning.select.sets or spec.sets())
    out = []
    for src in spec.candidates:
        if src.set_name not in sets:
            continue
        cobs = observed.candidates.get((src.set_name, src.cand_id))
        if cobs is None or cobs.record is None:
            continue
        status, _ = candidate_status(cobs, spec.stages)
        cls, voigt, gates, structure, key = status, None, {}, cobs.record.structure, None
        el = cobs.stages.get("elastic")
        if status == "elasticready" and el is not None:
            o = el.outputs
            gates = {g: bool(o.get(g)) for g in ("pass_both", "pass_pd", "pass_fit_rms")}
            cls = "pass_both" if gates["pass_both"] else "fail_gates"
            voigt, key = o.get("tensor_voigt_gpa"), el.key
            for st in ("scf", "relax"):
                rec = cobs.stages.get(st)
                if rec is not None and rec.outputs.get("structure"):
                    structure = rec.outputs["structure"]
                    break
        if cls not in ("pass_both", "fail_gates", "outputpresentnotconverged", "not_converged_settings", "failed",
                       "screened_out"):
            continue  # pending, or stopped part-way: no outcome yet
        out.append(Outcome(src.set_name, src.cand_id, cls, structure, voigt, gates, dict(cobs.record.provenance), key))
    return out


def _lineage(parent_meta: dict) -> dict:
    return dict(parent_meta.get("learning") or {})


def _latents(models, spec, picked: list[Outcome], lineage_shas: set[str]) -> tuple[list[str], list[list[float]]]:
    """The latent each generated outcome was decoded from, recomputed from its provenance (seed, index) and
    the generating checkpoint's guidance; only checkpoints of this lineage (same VAE) count."""
    from aimmat.model.sample import _sample_generator, draw_latents

    by_sha = {}
    for name in spec.manifest.models:
        by_sha.setdefault(spec.manifest.models[name].sha256.lower(), name)
    idents, out = [], []
    for o in picked:
        p = o.provenance
        sha = str(p.get("checkpoint_sha256", "")).lower()
        if p.get("kind") != "generator" or sha not in lineage_shas or sha not in by_sha:
            continue  # not decoded by this lineage's VAE, or its checkpoint is not declared here
        ck = models.checkpoint(by_sha[sha])
        z = draw_latents(ck.vae.latent_dim, [_sample_generator(p["seed"], p["index"])], ck.meta.get("guidance"))
        out.append([round(float(x), 6) for x in z[0]])
        idents.append(o.ident)
    return idents, out


def _finetune(parent_elastic, items, cfg, seed: int):
    """The parent's elastic predictor fine-tuned on ``items`` (every item, bootstrap weights per head)."""
    import numpy as np
    import torch

    from aimmat.model.train import Graphs, batch_loss, targets

    model = copy.deepcopy(parent_elastic)
    torch.manual_seed(seed)
    graphs = Graphs(items, model.cutoff)
    target, log_t, ok = targets(items)
    rng = np.random.default_rng(seed)
    boot = torch.tensor(rng.poisson(1.0, (len(model.head.heads), len(items))), dtype=torch.float32)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=1e-5)
    bs = 16
    for _ in range(cfg.epochs):
        model.train()
        for chunk in np.array_split(rng.permutation(len(items)), max(1, len(items) // bs)):
            loss = batch_loss(model, graphs.batch(chunk), target[chunk], log_t[chunk], ok[chunk], boot[:, chunk],
                              cfg.log_moduli_weight, error_head=False)
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    return model


def holdout_figures(model, items) -> dict:
    """MAE of log10 K_VRH / G_VRH of the ensemble mean against the holdout's tensors, and the ensemble spread."""
    import numpy as np

    from aimmat.model.evaluate import predict_heads, vrh

    if not items:
        return {"n": 0, "mae_log10_kvrh": None, "mae_log10_gvrh": None}
    heads = predict_heads(model, [i.structure for i in items])
    mean = heads.mean(0)
    kp = np.array([vrh(c) for c in mean])
    kt = np.array([vrh(i.voigt) for i in items])
    err = np.abs(np.log10(np.clip(kp, 1e-2, None)) - np.log10(np.clip(kt, 1e-2, None)))
    return {"n": len(items), "mae_log10_kvrh": round(float(err[:, 0].mean()), 4),
            "mae_log10_gvrh": round(float(err[:, 1].mean()), 4)}


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def update(spec, observed, *, seed: int = 0, replace: bool = False) -> dict:
    """Run the manifest's learning cycle; returns its record (``status``: written or up_to_date)."""
    import numpy as np
    import torch
    from pymatgen.core import Structure

    from aimmat.candidates.models import Models
    from aimmat.model.data import Item

    lc = spec.manifest.learning
    if lc is None:
        raise UsageError(f"{spec.path}: no `learning:` block", fix="declare one (see `aimmat schema`, LearningSpec)")
    if os.path.realpath(spec.model_file(lc.parent)) == os.path.realpath(_folder(spec, lc.name) / CHECKPOINT):
        raise UsageError(f"learning.name '{lc.name}' would overwrite its own parent models.{lc.parent}",
                         fix="give the new cycle another name (e.g. cycle2)")
    models = Models(spec, progress=False)
    parent = models.checkpoint(lc.parent)
    lineage = _lineage(parent.meta)
    if lineage:
        inherited = lineage.get("holdout_policy", {})
        mine = lc.holdout.model_dump()
        if inherited and inherited != mine:
            raise UsageError(f"learning.holdout {mine} differs from the parent's lineage {inherited}",
                             fix="keep the lineage's holdout salt and fraction: a changed holdout lets an update "
                                 "train on crystals an earlier cycle held out")
    lineage_shas = set(lineage.get("lineage_sha256", [])) | {parent.sha256}
    # every holdout the lineage recorded stays held out, whatever this cycle's hashing says
    old_holdout = set(lineage.get("holdout", []))

    allo = outcomes(spec, observed)
    hold = sorted({o.ident for o in allo if held_out(o.ident, lc.holdout.salt, lc.holdout.fraction)} | old_holdout)
    holdset = set(hold)
    gates = set(lc.select.tensors)
    tensor_ok = [o for o in allo if o.voigt is not None and all(o.gates.get(g) for g in gates)]
    train_t = [o for o in tensor_ok if o.ident not in holdset]
    test_t = [o for o in tensor_ok if o.ident in holdset]
    seek = [o for o in allo if o.cls in lc.select.seek and o.ident not in holdset]
    avoid = [o for o in allo if o.cls in lc.select.avoid and o.ident not in holdset]
    learned = sorted({o.ident for o in train_t} | {o.ident for o in seek} | {o.ident for o in avoid})  # a superset
    touched = holdset & set(learned)
    if touched:  # cannot happen by construction; the guard is what the holdout test checks
        raise CampaignError(f"learning cycle {lc.name}: held-out candidates would be learned from: {sorted(touched)}")
    if not train_t and not seek and not avoid:
        raise UsageError(f"learning cycle {lc.name}: no outcome to learn from in {spec.campaign_dir} "
                         f"({len(allo)} candidates with an outcome, {len(hold)} held out)",
                         fix="apply the manifest first; tensors must pass " + ", ".join(sorted(gates)))

    policy = lc.model_dump()
    inputs = {"parent_sha256": parent.sha256, "policy": policy, "seed": seed,
              "tensors": [[o.ident, o.elastic_key] for o in train_t],
              "seek": [o.ident for o in seek], "avoid": [o.ident for o in avoid], "holdout": hold,
              "holdout_tensors": [[o.ident, o.elastic_key] for o in test_t]}
    inputs_sha = sha256_json(inputs)
    folder = _folder(spec, lc.name)
    rec_path, ck_path = folder / RECORD, folder / CHECKPOINT
    existing = _read_record(rec_path)
    if (existing and existing.get("inputs_sha256") == inputs_sha and ck_path.is_file()
            and sha256_file(ck_path) == existing.get("child_sha256")):
        return {**existing, "status": "up_to_date"}
    if existing and not replace:  # a pinned child must not change under its pin
        raise UsageError(f"learning cycle {lc.name} exists in {folder} with other inputs (child sha256 "
                         f"{str(existing.get('child_sha256'))[:12]}): the records or the policy changed since",
                         fix="name a new cycle (learning.name), or pass --replace to overwrite this one "
                             "(manifests that pin it then stop with a sha256 mismatch)")

    def item(o: Outcome) -> Item:
        return Item(Structure.from_dict(o.structure), "campaign", o.ident, np.array(o.voigt, float))

    train_items, test_items = [item(o) for o in train_t], [item(o) for o in test_t]
    t0 = time.perf_counter()
    seek_ids, seek_z = _latents(models, spec, seek, lineage_shas)
    avoid_ids, avoid_z = _latents(models, spec, avoid, lineage_shas)
    _say(f"learning {lc.name}: {len(train_items)} tensor(s) to fine-tune on, {len(seek_z)} seek / {len(avoid_z)} "
         f"avoid latent(s) of generated candidates, {len(hold)} held out ({len(test_items)} with a tensor)")
    child_elastic = _finetune(parent.elastic, train_items, lc.update, seed) if train_items else parent.elastic
    before, after = holdout_figures(parent.elastic, test_items), holdout_figures(child_elastic, test_items)
    fit_before, fit_after = holdout_figures(parent.elastic, train_items), holdout_figures(child_elastic, train_items)
    g_old = parent.meta.get("guidance") or {}
    guidance = {"proposals": lc.update.proposals, "bandwidth": lc.update.bandwidth,
                "seek": list(g_old.get("seek", [])) + seek_z, "avoid": list(g_old.get("avoid", [])) + avoid_z}
    learning = {
        "name": lc.name, "campaign": spec.manifest.campaign.name, "parent_sha256": parent.sha256,
        "lineage_sha256": sorted(lineage_shas), "policy": policy, "policy_sha256": sha256_json(policy),
        "holdout_policy": lc.holdout.model_dump(), "holdout": hold, "learned_from": {
            "tensors": [{"candidate": o.ident, "elastic_key": o.elastic_key, "class": o.cls} for o in train_t],
            "seek": seek_ids, "avoid": avoid_ids},
        "holdout_before": before, "holdout_after": after, "train_before": fit_before, "train_after": fit_after,
        "guidance_points": {"seek": len(guidance["seek"]), "avoid": len(guidance["avoid"])},
        "inputs_sha256": inputs_sha,
    }
    payload = torch.load(parent.path, map_location="cpu", weights_only=True)
    payload["elastic"] = {"hparams": payload["elastic"]["hparams"], "state": child_elastic.state_dict()}
    payload["guidance"] = guidance
    payload["learning"] = learning
    payload["parent_sha256"] = parent.sha256
    buf = io.BytesIO()
    torch.save(payload, buf)
    data = buf.getvalue()
    child_sha = hashlib.sha256(data).hexdigest()
    record = {**learning, "child_sha256": child_sha, "checkpoint": f"{LEARNING_DIR}/{lc.name}/{CHECKPOINT}",
              "seconds": round(time.perf_counter() - t0, 1), "written": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    _write(spec, folder, data, record)
    return {**record, "status": "written"}


def _folder(spec, name: str) -> Path:
    return spec.campaign_dir / LEARNING_DIR / name


def _confined(spec, folder: Path) -> None:
    """Refuse a learning folder that a symlink leads outside the campaign."""
    root = os.path.realpath(spec.campaign_dir)
    for p in (folder.parent, folder, folder / RECORD, folder / CHECKPOINT):
        if os.path.islink(p):
            raise CampaignError(f"{p} is a symlink to {os.readlink(p)}; learning writes only real folders and files "
                                "inside the campaign", fix=f"remove the symlink (rm {p}) and run the update again")
    real = os.path.realpath(folder)
    if not real.startswith(root + os.sep):
        raise CampaignError(f"{folder} resolves to {real}, outside the campaign folder {root}")


def _write(spec, folder: Path, data: bytes, record: dict) -> None:
    from aimmat.state.atomic import json_bytes, write_bytes_atomic
    from aimmat.state.lock import CampaignLock

    spec.campaign_dir.mkdir(parents=True, exist_ok=True)
    with CampaignLock(spec.campaign_dir):
        _confined(spec, folder)
        folder.mkdir(parents=True, exist_ok=True)
        _confined(spec, folder)
        write_bytes_atomic(folder / CHECKPOINT, data)
        write_bytes_atomic(folder / RECORD, json_bytes(record))  # the record last: it names the checkpoint's hash


def _read_record(path: Path) -> dict | None:
    import json

    if not path.is_file() or path.is_symlink():
        return None
    try:
        d = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return d if isinstance(d, dict) else None


def records(campaign_dir: Path) -> list[dict]:
    """The learning records of a campaign folder (for the evidence snapshot), by cycle name."""
    base = Path(campaign_dir) / LEARNING_DIR
    if not base.is_dir() or base.is_symlink():
        return []
    out = []
    for d in sorted(base.iterdir()):
        r = _read_record(d / RECORD) if d.is_dir() and not d.is_symlink() else None
        if r is not None:
            out.append(r)
    return out
