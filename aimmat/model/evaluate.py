"""``aimmat model eval CHECKPOINT``: the elastic heads on the held-out split
and the generator under the CDVAE protocol, printed and written as JSON."""

from __future__ import annotations

import json
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import torch
from pymatgen.analysis.elasticity import ElasticTensor
from scipy.stats import spearmanr

from aimmat.model import data
from aimmat.model.elastic_head import mandel_to_voigt
from aimmat.model.graph import from_structures

PUBLISHED = {"cdvae_comp_valid_mp20": 86.70, "cdvae_struct_valid_mp20": 100.0,
             "log10_kvrh_mean_predictor": 0.290, "log10_gvrh_mean_predictor": 0.293}


@torch.no_grad()
def predict_heads(model, structures, bs: int = 32) -> np.ndarray:
    """(H, B, 6, 6) Voigt tensors in GPa, one per ensemble head."""
    out = []
    for i in range(0, len(structures), bs):
        b = from_structures(structures[i:i + bs], model.gnn.cutoff)
        out.append(mandel_to_voigt(model(b)).double().numpy())
    return np.concatenate(out, axis=1)


def vrh(voigt: np.ndarray) -> tuple[float, float]:
    et = ElasticTensor.from_voigt(voigt)
    return float(et.k_vrh), float(et.g_vrh)


def _log10(x: np.ndarray) -> np.ndarray:
    return np.log10(np.clip(x, 1e-2, None))


def elastic_metrics(model, test_items, train_items) -> dict:
    heads = predict_heads(model, [i.structure for i in test_items])
    mean = heads.mean(0)
    true = np.array([i.voigt for i in test_items])
    comps = {f"C{i + 1}{j + 1}": float(np.mean(np.abs(mean[:, i, j] - true[:, i, j])))
             for i in range(6) for j in range(i, 6)}
    kg_p = np.array([vrh(c) for c in mean])
    kg_t = np.array([vrh(c) for c in true])
    kg_train = np.array([vrh(i.voigt) for i in train_items])
    ok = (kg_t > 0).all(1)
    err = np.abs(_log10(kg_p[ok]) - _log10(kg_t[ok]))
    base = [float(np.mean(np.abs(_log10(kg_t[ok, k]) - np.mean(_log10(kg_train[(kg_train > 0).all(1), k])))))
            for k in (0, 1)]
    eig_mean = np.linalg.eigvalsh(mean)
    eig_heads = np.linalg.eigvalsh(heads)
    spread = np.std(_log10(np.array([[vrh(c)[0] for c in h] for h in heads])), axis=0)
    rho = spearmanr(spread[ok], err[:, 0]).statistic if ok.sum() > 2 else float("nan")
    return {
        "n_test": len(test_items),
        "mae_voigt_gpa": comps,
        "mae_voigt_mean_gpa": float(np.mean(list(comps.values()))),
        "mae_log10_kvrh": float(err[:, 0].mean()),
        "mae_log10_gvrh": float(err[:, 1].mean()),
        "mean_predictor_mae_log10_kvrh": base[0],
        "mean_predictor_mae_log10_gvrh": base[1],
        "pd_fraction": float((eig_mean.min(-1) > 0).mean()),
        "pd_fraction_all_heads": float((eig_heads.min(-1) > 0).mean()),
        "nonpositive_kvrh": int((kg_p[:, 0] <= 0).sum()),
        "spearman_spread_vs_error": float(rho),
        "n_heads": int(heads.shape[0]),
    }


def _gen_reference(ckpt, root: Path, seed: int):
    cfg = ckpt.meta["config"]["generator"]
    max_atoms = int(cfg.get("max_atoms", 12))
    train = data.load(cfg["data"], root, max_atoms)
    test = data.load(cfg["test"], root, max_atoms)
    for name, digest in {**train.files, **test.files}.items():
        recorded = ckpt.meta["data_files"].get(name)
        if recorded is not None and recorded != digest:
            raise ValueError(f"data file {name} differs from the one the checkpoint was trained on "
                             f"(sha256 {digest[:12]} vs {recorded[:12]})")
    return [i.structure for i in train.items], [i.structure for i in test.items]


def generation_eval(ckpt, root: Path, n_samples: int, seed: int, speed_count: int = 8) -> dict:
    try:
        import matminer  # noqa: F401  (coverage fingerprints)
    except ImportError:
        from aimmat.errors import EnvironmentProblem

        raise EnvironmentProblem("generation metrics need matminer (CrystalNN and Magpie fingerprints)",
                                 fix="pip install 'aimmat[eval]', or pass --no-generation") from None
    from aimmat.model import metrics
    from aimmat.model.sample import CDVAE_SCHEDULE, sample

    train, test = _gen_reference(ckpt, root, seed)
    rng = np.random.default_rng(seed)
    test = [test[i] for i in np.sort(rng.permutation(len(test))[: max(n_samples, 1)])]
    by_k = Counter(min(len(s.composition.elements), 4) for s in test)
    gen, t0 = [], time.perf_counter()
    for k, c in sorted(by_k.items()):
        n = int(round(c / len(test) * n_samples))
        gen += [s.structure for s in sample(ckpt.vae, n, k, seed + k, ckpt.sampler)]
    sampling_s = time.perf_counter() - t0
    out = metrics.generation_metrics(gen, test, train, seed=seed)
    out["sampling_structures_per_s"] = len(gen) / sampling_s
    # speed and validity against CDVAE's 5,000-step schedule, same model, same seeds
    k = by_k.most_common(1)[0][0]
    t = time.perf_counter()
    ours = sample(ckpt.vae, speed_count, k, seed, ckpt.sampler)
    t_ours = time.perf_counter() - t
    raw = sample(ckpt.vae, speed_count, k, seed, {**ckpt.sampler, "min_separation": 0.0})
    t = time.perf_counter()
    slow = sample(ckpt.vae, speed_count, k, seed, CDVAE_SCHEDULE)
    t_slow = time.perf_counter() - t
    steps = lambda s: int(s.get("levels", 10)) * int(s.get("steps", 5))  # noqa: E731
    out["speed_vs_cdvae_schedule"] = {
        "count": speed_count, "steps_ours": steps(ckpt.sampler), "steps_cdvae": steps(CDVAE_SCHEDULE),
        "seconds_ours": t_ours, "seconds_cdvae": t_slow, "speedup": t_slow / t_ours,
        "struct_valid_ours": float(np.mean(metrics.structural_validity([s.structure for s in ours]))),
        "struct_valid_ours_without_separation": float(np.mean(metrics.structural_validity([s.structure for s in raw]))),
        "struct_valid_cdvae": float(np.mean(metrics.structural_validity([s.structure for s in slow]))),
    }
    return out


def run(path: Path, *, data_root: Path | None, n_samples: int, seed: int, out: Path | None,
        skip_generation: bool = False, speed_count: int = 8) -> dict:
    from aimmat.model import checkpoint

    ckpt = checkpoint.load(path)
    result = {"checkpoint": str(path), "sha256": ckpt.sha256, "aimmat_version": ckpt.meta["aimmat_version"],
              "published": PUBLISHED, "trained_metrics": ckpt.meta["metrics"]}
    root = Path(data_root) if data_root else None
    if root is not None and root.exists():
        cfg = ckpt.meta["config"]["elastic"]
        eds = data.load(cfg["data"], root, int(cfg.get("max_atoms", 24)))
        sp = data.split(len(eds.items), int(ckpt.meta["split_seed"]))
        test = [eds.items[i] for i in sp["test"]]
        train = [eds.items[i] for i in sp["train"]]
        result["elastic"] = elastic_metrics(ckpt.elastic, test, train)
        if ckpt.elastic_ablation is not None:
            result["elastic_ablation"] = elastic_metrics(ckpt.elastic_ablation, test, train)
        if not skip_generation:
            result["generation"] = generation_eval(ckpt, root, n_samples, seed, speed_count)
    else:
        print(f"data root {root} not found: reporting the metrics recorded at training", file=sys.stderr)
    if out is not None:
        out.write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
    return result


def report(r: dict) -> str:
    lines = [f"checkpoint {r['checkpoint']}  sha256 {r['sha256'][:16]}  (aimmat {r['aimmat_version']})"]
    e = r.get("elastic") or r["trained_metrics"]["elastic"]
    a = r.get("elastic_ablation") or r["trained_metrics"].get("elastic_ablation")
    lines.append("elastic head, held-out split"
                 f" ({e['n_test']} crystals, {e['n_heads']} heads)    PD map   no PD map   mean predictor")
    for key, base in (("mae_log10_kvrh", "mean_predictor_mae_log10_kvrh"),
                      ("mae_log10_gvrh", "mean_predictor_mae_log10_gvrh")):
        lines.append(f"  {key:36s} {e[key]:8.3f} {a[key] if a else float('nan'):10.3f} {e[base]:14.3f}")
    for key in ("mae_voigt_mean_gpa", "pd_fraction", "pd_fraction_all_heads", "spearman_spread_vs_error"):
        lines.append(f"  {key:36s} {e[key]:8.3f} {a[key] if a else float('nan'):10.3f}")
    g = r.get("generation")
    if g:
        lines.append(f"generation ({g.get('n_generated')} samples)   ours    CDVAE (MP-20)")
        lines.append(f"  structural validity %   {100 * g['struct_valid']:6.1f}   {PUBLISHED['cdvae_struct_valid_mp20']:6.1f}")
        lines.append(f"  compositional valid. %  {100 * g['comp_valid']:6.1f}   {PUBLISHED['cdvae_comp_valid_mp20']:6.1f}")
        for key in ("uniqueness", "novelty", "cov_recall", "cov_precision", "wdist_density", "wdist_n_elements",
                    "sampling_structures_per_s"):
            if key in g:
                lines.append(f"  {key:24s} {g[key]:8.3f}")
        s = g["speed_vs_cdvae_schedule"]
        lines.append(f"  sampling {s['steps_ours']} steps vs CDVAE's {s['steps_cdvae']}: {s['speedup']:.1f}x faster "
                     f"(struct. valid {100 * s['struct_valid_ours']:.0f}% vs {100 * s['struct_valid_cdvae']:.0f}%; "
                     f"ours without the separation step {100 * s['struct_valid_ours_without_separation']:.0f}%; "
                     f"{s['count']} samples)")
    return "\n".join(lines)
