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
from aimmat.model.vae import MAX_ELEMENTS

# the elastic head's goals (issue 14, part 3) on the held-out split of elastic_tensor_2015
ELASTIC_GOALS = {"mae_log10_kvrh": 0.08, "mae_log10_gvrh": 0.10, "spearman": 0.4}
PUBLISHED = {"log10_kvrh_mean_predictor": 0.290, "log10_gvrh_mean_predictor": 0.293}


@torch.no_grad()
def predict_heads(model, structures, bs: int = 32) -> np.ndarray:
    """(H, B, 6, 6) Voigt tensors in GPa, one per ensemble head."""
    out = []
    for i in range(0, len(structures), bs):
        b = from_structures(structures[i:i + bs], model.gnn.cutoff)
        out.append(mandel_to_voigt(model(b)).double().numpy())
    return np.concatenate(out, axis=1)


@torch.no_grad()
def predict_error(model, structures, bs: int = 32) -> np.ndarray:
    """(B, 2) the error head's predicted typical |error| of log10 K_VRH and log10 G_VRH (dex)."""
    out = []
    for i in range(0, len(structures), bs):
        _, s = model.forward_with_error(from_structures(structures[i:i + bs], model.gnn.cutoff))
        out.append(torch.exp(s).double().numpy())
    return np.concatenate(out)


def vrh(voigt: np.ndarray) -> tuple[float, float]:
    et = ElasticTensor.from_voigt(voigt)
    return float(et.k_vrh), float(et.g_vrh)


def _log10(x: np.ndarray) -> np.ndarray:
    return np.log10(np.clip(x, 1e-2, None))


def calibration_bins(pred: np.ndarray, err: np.ndarray, n_bins: int = 5) -> list[dict]:
    """Test crystals in ``n_bins`` equal-count bins of predicted uncertainty: per bin the mean prediction and
    the mean observed |error| (dex), the data of a calibration plot."""
    order = np.argsort(pred, kind="stable")
    out = []
    for idx in np.array_split(order, n_bins):
        if len(idx):
            out.append({"n": int(len(idx)), "predicted": float(pred[idx].mean()), "observed_mae": float(err[idx].mean())})
    return out


def calibration_figure(metrics: dict, path: Path) -> None:
    """PNG: observed MAE of log10 K and G per bin of predicted uncertainty, for each uncertainty the model has."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(8, 3.6))
    for ax, key, name in zip(axes, ("k", "g"), ("log10 K_VRH", "log10 G_VRH")):
        top = 0.0
        for label, marker in (("ensemble_spread", "o"), ("error_head", "s")):
            bins = metrics["calibration"].get(label, {}).get(key)
            if not bins:
                continue
            x = [b["predicted"] for b in bins]
            y = [b["observed_mae"] for b in bins]
            top = max(top, *x, *y)
            ax.plot(x, y, marker=marker, label=label.replace("_", " "))
        ax.plot([0, top], [0, top], color="grey", lw=0.8, ls="--", label="predicted = observed")
        ax.set_xlabel(f"predicted uncertainty of {name} (dex)")
        ax.set_ylabel("observed MAE (dex)")
        ax.set_title(f"{name}: {metrics['n_test']} held-out crystals, 5 bins", fontsize=9)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120, metadata={"Software": None})
    plt.close(fig)


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
    kg_heads = np.array([[vrh(c) for c in h] for h in heads])  # (H, B, 2)
    spread, spread_g = np.std(_log10(kg_heads), axis=0).T
    rho = spearmanr(spread[ok], err[:, 0]).statistic if ok.sum() > 2 else float("nan")
    calib = {"ensemble_spread": {"k": calibration_bins(spread[ok], err[:, 0]), "g": calibration_bins(spread_g[ok], err[:, 1])}}
    extra = {"spearman_spread_vs_error_g": float(spearmanr(spread_g[ok], err[:, 1]).statistic) if ok.sum() > 2 else None}
    if getattr(model, "error", None) is not None:  # the heteroscedastic error head, where the model has one
        pe = predict_error(model, [i.structure for i in test_items])
        extra.update({"spearman_error_head_vs_error_k": float(spearmanr(pe[ok, 0], err[:, 0]).statistic),
                      "spearman_error_head_vs_error_g": float(spearmanr(pe[ok, 1], err[:, 1]).statistic)})
        calib["error_head"] = {"k": calibration_bins(pe[ok, 0], err[:, 0]), "g": calibration_bins(pe[ok, 1], err[:, 1])}
    extra["calibration"] = calib
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
        **extra,
    }


# CDVAE's evaluation (scripts/compute_metrics.py): coverage cutoffs per data set (its COV_Cutoffs), 10,000
# generated crystals, coverage over all of them and the property metrics over 1,000 valid ones
PROTOCOL_SAMPLES = 10_000
PROTOCOL_VALID = 1_000
DATASETS = {  # folder of the data set's CSV files -> (name, COV_Cutoffs key in metrics)
    "cdvae_perov_5": ("perov_5", "perovskite"),
    "cdvae_carbon_24": ("carbon_24", "carbon"),
    "cdvae_mp_20": ("mp_20", "mp20"),
}
# published CDVAE figures under that protocol, as the shared data README lists them (CDVAE paper Table 3):
# struct / comp valid, COV-R, COV-P in %; None where the README has none
CDVAE_PUBLISHED = {"perov_5": (100.0, 98.59, 99.45, 98.46), "carbon_24": (None, None, None, None),
                   "mp_20": (100.0, 86.70, 99.15, 99.49)}
SPEED_MIN_SAMPLES = 100


def protocol_dataset(test_specs: list[dict]) -> tuple[str, tuple[float, float], Path]:
    """(data set name, (structure, composition) coverage cutoffs, test file) of a generator's test split.
    A test split that is not one CDVAE data set has no protocol to compare with: refused."""
    from aimmat.model import metrics

    if len(test_specs) != 1 or test_specs[0].get("kind") != "cdvae_csv":
        raise ValueError(f"the CDVAE protocol needs one CDVAE test split (cdvae_csv); the checkpoint's test data is {test_specs}")
    path = Path(test_specs[0]["path"])
    if path.parent.name not in DATASETS:
        raise ValueError(f"{path}: not a CDVAE data set this protocol knows ({', '.join(sorted(DATASETS))})")
    name, key = DATASETS[path.parent.name]
    return name, metrics.COV_CUTOFFS[key], path


def _gen_reference(ckpt, root: Path, test_path: Path):
    """Training structures (as the checkpoint recorded them) and the whole test split (the protocol's reference:
    no row limit, no atom-count filter; the checkpoint's ``limit`` on its test spec only shortened training-time
    checks)."""
    cfg = ckpt.meta["config"]["generator"]
    max_atoms = int(cfg.get("max_atoms", 12))
    train = data.load(cfg["data"], root, max_atoms)
    for name, digest in train.files.items():
        recorded = ckpt.meta["data_files"].get(name)
        if recorded is not None and recorded != digest:
            raise ValueError(f"data file {name} differs from the one the checkpoint was trained on "
                             f"(sha256 {digest[:12]} vs {recorded[:12]})")
    test = data.read_cdvae_csv(root / test_path, max_atoms=10**6)
    return train, [i.structure for i in test]


def reference_fingerprints(structures, test_file: Path, cache_dir: Path | None = None):
    """Fingerprints of the whole test split, cached by the file's sha256 (perov_5's 3,785 crystals take about
    ten minutes on 2 cores): ``$AIMMAT_CACHE`` or ``~/.cache/aimmat``."""
    import os

    from aimmat.identity import sha256_file
    from aimmat.model import metrics

    folder = Path(cache_dir or os.environ.get("AIMMAT_CACHE") or Path.home() / ".cache" / "aimmat")
    path = folder / f"cdvae-fingerprints-{sha256_file(test_file)}.npz"
    if path.exists():
        with np.load(path) as z:
            if len(z["struct"]) == len(structures):
                return z["struct"], z["comp"]
    _say(f"fingerprints of the {len(structures)} reference crystals (once; cached in {folder})")
    fps = metrics.fingerprints(structures)
    folder.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp.npz")
    np.savez(tmp, struct=fps[0], comp=fps[1])
    tmp.replace(path)
    return fps


def _say(msg: str) -> None:
    """Progress of a long evaluation, on stderr (the table goes to stdout)."""
    print(f"[model eval] {msg}", file=sys.stderr, flush=True)


def comparability(n_generated: int, n_valid: int, trained_on: list[str], dataset: str) -> list[str]:
    """Why a generation figure is not comparable with CDVAE's published one (empty: it is)."""
    why = []
    if n_generated < PROTOCOL_SAMPLES:
        why.append(f"{n_generated} samples, the protocol generates {PROTOCOL_SAMPLES:,}")
    if n_valid < PROTOCOL_VALID:
        why.append(f"{n_valid} valid samples, the protocol's property metrics need {PROTOCOL_VALID:,}")
    others = [t for t in trained_on if not t.startswith(f"cdvae_{dataset}/")]
    if others:
        why.append(f"trained on more than {dataset} ({', '.join(others)})")
    return why


def generation_eval(ckpt, root: Path, n_samples: int, seed: int, speed_count: int = SPEED_MIN_SAMPLES) -> dict:
    """The generator under CDVAE's protocol on its test split's data set: raw samples (no post-processing, as the
    protocol), validity also after the sampler's separation step on the same samples, the conditioning
    disclosed, and the speed against CDVAE's 5,000-step schedule like for like."""
    try:
        import matminer  # noqa: F401  (coverage fingerprints)
    except ImportError:
        from aimmat.errors import EnvironmentProblem

        raise EnvironmentProblem("generation metrics need matminer (CrystalNN and Magpie fingerprints)",
                                 fix="pip install 'aimmat[eval]', or pass --no-generation") from None
    from aimmat.model import metrics
    from aimmat.model.sample import DEFAULT_SCHEDULE, sample, separate_structures

    dataset, (s_cut, c_cut), test_path = protocol_dataset(ckpt.meta["config"]["generator"]["test"])
    train, test = _gen_reference(ckpt, root, test_path)
    train_structs = [i.structure for i in train.items]
    # the model needs an element count per sample: drawn from the training data's histogram (CDVAE samples
    # the count from its prior); disclosed beside the figures
    by_k = Counter(min(len(s.composition.elements), MAX_ELEMENTS) for s in train_structs)  # top class: 5 or more
    total = sum(by_k.values())
    counts = {k: int(round(c / total * n_samples)) for k, c in sorted(by_k.items())}
    counts[max(counts, key=counts.get)] += n_samples - sum(counts.values())
    sampler = {**DEFAULT_SCHEDULE, **ckpt.sampler}
    raw_schedule = {**sampler, "min_separation": 0.0}
    guidance = ckpt.meta.get("guidance")  # a learning cycle's latent re-weighting: the checkpoint's own generator
    gen, t0 = [], time.perf_counter()
    _say(f"sampling {n_samples} structures ({dataset} protocol, raw: no separation step)")
    for k, n in counts.items():
        if n > 0:
            gen += [s.structure for s in sample(ckpt.vae, n, k, seed + k, raw_schedule, guidance=guidance)]
    sampling_s = time.perf_counter() - t0
    _say(f"sampled {len(gen)} structures in {sampling_s:.0f} s; fingerprints and metrics (about 0.1-0.2 s per crystal)")
    out = metrics.generation_metrics(gen, test, train_structs, n_eval=PROTOCOL_VALID, seed=seed,
                                     struct_cutoff=s_cut, comp_cutoff=c_cut,
                                     reference_fingerprints=reference_fingerprints(test, root / test_path))
    post = separate_structures(gen, float(sampler.get("min_separation", 0.0)))
    out.update({
        "dataset": dataset, "test_split": str(test_path), "cutoffs": {"struct": s_cut, "comp": c_cut},
        "trained_on": sorted(train.files), "schedule": raw_schedule,
        "conditioning": {"n_elements_from": "training data histogram", "counts": {str(k): n for k, n in counts.items()},
                         "latent_guidance": None if not guidance else {
                             "proposals": guidance["proposals"], "seek": len(guidance["seek"]),
                             "avoid": len(guidance["avoid"])}},
        "post_processing": {"min_separation": sampler.get("min_separation", 0.0),
                            "struct_valid": float(np.mean(metrics.structural_validity(post))),
                            "comp_valid": float(np.mean(metrics.compositional_validity(post)))},
        "sampling_structures_per_s": len(gen) / sampling_s,
        "published_cdvae": dict(zip(("struct_valid", "comp_valid", "cov_recall", "cov_precision"), CDVAE_PUBLISHED[dataset])),
    })
    out["not_comparable"] = comparability(len(gen), out["n_valid"] or 0, out["trained_on"], dataset)
    _say(f"speed: {speed_count} samples at our schedule and at CDVAE's 5,000 steps")
    out["speed_vs_cdvae_schedule"] = speed_eval(ckpt, max(1, speed_count), max(by_k, key=by_k.get), seed, raw_schedule)
    return out


def speed_eval(ckpt, count: int, n_elements: int, seed: int, schedule: dict) -> dict:
    """Our schedule against CDVAE's 5,000 steps: the same model, seeds and post-processing (none), ``count``
    samples each; fewer than SPEED_MIN_SAMPLES is labelled not comparable."""
    from aimmat.model import metrics
    from aimmat.model.sample import CDVAE_SCHEDULE, sample

    steps = lambda s: int(s.get("levels", 10)) * int(s.get("steps", 5))  # noqa: E731
    res = {"count": count, "post_processing": "none (both)", "steps_ours": steps(schedule), "steps_cdvae": steps(CDVAE_SCHEDULE)}
    for label, sch in (("ours", schedule), ("cdvae", {**CDVAE_SCHEDULE, "min_separation": 0.0})):
        t = time.perf_counter()
        got = sample(ckpt.vae, count, n_elements, seed, sch)
        res[f"seconds_{label}"] = time.perf_counter() - t
        res[f"struct_valid_{label}"] = float(np.mean(metrics.structural_validity([g.structure for g in got])))
    res["speedup"] = res["seconds_cdvae"] / res["seconds_ours"]
    res["not_comparable"] = [] if count >= SPEED_MIN_SAMPLES else [f"{count} samples, fewer than {SPEED_MIN_SAMPLES}"]
    return res


def run(path: Path, *, data_root: Path | None, n_samples: int, seed: int, out: Path | None,
        skip_generation: bool = False, speed_count: int = SPEED_MIN_SAMPLES) -> dict:
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
        if "elastic" in result:
            fig = out.with_name(out.name.removesuffix(".json").removesuffix(".eval") + ".calibration.png")
            calibration_figure(result["elastic"], fig)
            result["calibration_figure"] = str(fig)
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
    for key in ("spearman_spread_vs_error_g", "spearman_error_head_vs_error_k", "spearman_error_head_vs_error_g"):
        if e.get(key) is not None:
            lines.append(f"  {key:36s} {e[key]:8.3f}")
    best = max((e.get(k) for k in ("spearman_spread_vs_error", "spearman_error_head_vs_error_k") if e.get(k) is not None),
               default=float("nan"))
    lines.append(f"  goals: MAE log10 K <= {ELASTIC_GOALS['mae_log10_kvrh']} ({'met' if e['mae_log10_kvrh'] <= ELASTIC_GOALS['mae_log10_kvrh'] else 'not met'}), "
                 f"log10 G <= {ELASTIC_GOALS['mae_log10_gvrh']} ({'met' if e['mae_log10_gvrh'] <= ELASTIC_GOALS['mae_log10_gvrh'] else 'not met'}), "
                 f"Spearman of uncertainty vs log10 K error >= {ELASTIC_GOALS['spearman']} ({'met' if best >= ELASTIC_GOALS['spearman'] else 'not met'})")
    if r.get("calibration_figure"):
        lines.append(f"  calibration plot: {r['calibration_figure']}")
    g = r.get("generation")
    if g:
        lines += generation_table(g)
    return "\n".join(lines)


def _pct(x) -> str:
    return "   n/a" if x is None else f"{100 * x:6.1f}"


def generation_table(g: dict) -> list[str]:
    """The CDVAE protocol table: our row and CDVAE's published row on the same data set, the protocol's
    columns named, and every reason the comparison does not hold."""
    cut = g["cutoffs"]
    lines = [f"generation, CDVAE protocol on {g['dataset']} (reference: the whole test split {g['test_split']}, "
             f"{g['n_reference']} crystals; COV cutoffs struct {cut['struct']} / comp {cut['comp']}; "
             f"{g['n_generated']} samples, property metrics over {g['n_eval']} valid)",
             f"  {'model':28s} {'struct. valid %':>15s} {'comp. valid %':>13s} {'COV-R %':>8s} {'COV-P %':>8s}",
             f"  {'aimmat (raw samples)':28s} {_pct(g['struct_valid']):>15s} {_pct(g['comp_valid']):>13s} "
             f"{_pct(g['cov_recall']):>8s} {_pct(g['cov_precision']):>8s}"]
    pub = g["published_cdvae"]
    pct = lambda v: "   n/a" if v is None else f"{v:6.2f}"  # noqa: E731
    lines.append(f"  {'CDVAE (published)':28s} {pct(pub['struct_valid']):>15s} {pct(pub['comp_valid']):>13s} "
                 f"{pct(pub['cov_recall']):>8s} {pct(pub['cov_precision']):>8s}")
    pp = g["post_processing"]
    lines.append(f"  after aimmat's separation step (min_separation {pp['min_separation']}; not in the protocol): "
                 f"struct. valid {100 * pp['struct_valid']:.1f}%, comp. valid {100 * pp['comp_valid']:.1f}%")
    cond = g["conditioning"]
    lines.append(f"  conditioning: element count per sample from the {cond['n_elements_from']} "
                 f"({', '.join(f'{k}: {n}' for k, n in cond['counts'].items())})")
    lg = cond.get("latent_guidance")
    if lg:
        lines.append(f"  latent guidance of a learning cycle: best of {lg['proposals']} prior draws per sample by "
                     f"{lg['seek']} seek / {lg['avoid']} avoid latents (not CDVAE's prior)")
    for key in ("uniqueness", "novelty", "wdist_density", "wdist_n_elements", "sampling_structures_per_s"):
        if g.get(key) is not None:
            lines.append(f"  {key:28s} {g[key]:8.3f}")
    lines.append("  comparable with the published row: " + ("yes" if not g["not_comparable"] else
                                                              "NO: " + "; ".join(g["not_comparable"])))
    s = g["speed_vs_cdvae_schedule"]
    lines.append(f"  sampling {s['steps_ours']} steps vs CDVAE's {s['steps_cdvae']} (same model and seeds, no post-processing, "
                 f"{s['count']} samples each): {s['speedup']:.1f}x faster; struct. valid {100 * s['struct_valid_ours']:.0f}% vs "
                 f"{100 * s['struct_valid_cdvae']:.0f}%" + (f" (NOT comparable: {'; '.join(s['not_comparable'])})" if s["not_comparable"] else ""))
    return lines
