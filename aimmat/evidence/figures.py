"""Figures from the snapshot (matplotlib, PNG and PDF, byte-reproducible).

Each figure reads one scope, like a template: status distribution and
failure taxonomy read `screening`, the fit-RMS distribution `validated`.
"""

from __future__ import annotations

import io
from collections.abc import Callable

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from aimmat.state.status import STATUSES  # noqa: E402

_META = {"png": {"Software": None}, "pdf": {"CreationDate": None, "ModDate": None, "Producer": None, "Creator": None}}


def _status(screening: dict, ax) -> None:
    sets = list(screening["sets"])
    bottom = [0] * len(sets)
    for st in STATUSES:
        vals = [screening["sets"][s]["status"][st] for s in sets]
        if any(vals):
            ax.bar(sets, vals, bottom=bottom, label=st)
            bottom = [b + v for b, v in zip(bottom, vals)]
    ax.set_ylabel("candidates")
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.tick_params(axis="x", labelrotation=30, labelsize=7)  # set names are long
    for label in ax.get_xticklabels():
        label.set_horizontalalignment("right")
    ax.set_title("Candidate status by set")
    ax.legend(fontsize=7)


def _failures(screening: dict, ax) -> None:
    fails = screening["overall"]["failures"]
    ax.set_title("Failure taxonomy")
    if not fails:
        ax.text(0.5, 0.5, "no failed stages", ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
        return
    names = sorted(fails)
    ax.barh(names, [fails[n] for n in names], color="tab:red")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("failed stages")


def _fit_rms(validated: dict, ax) -> None:
    ok = [r["fit_rms_gpa"] for r in validated["rows"] if r["pass_fit_rms"] and r["fit_rms_gpa"] is not None]
    bad = [r["fit_rms_gpa"] for r in validated["rows"] if not r["pass_fit_rms"] and r["fit_rms_gpa"] is not None]
    ax.hist([ok, bad], bins=20, stacked=True, label=["pass_fit_rms", "fail"], color=["tab:green", "tab:red"])
    threshold = validated.get("fit_rms_max_gpa")  # the manifest's gate, as the snapshot recorded it
    if threshold is not None:
        ax.axvline(threshold, color="k", ls="--", lw=1, label=f"gate {threshold:g} GPa")
    ax.set_xlabel("fit RMS (GPa)")
    ax.set_ylabel("candidates")
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_title(f"Elastic fit residuals (n = {validated['n']})")
    ax.legend(fontsize=7)


def _triage(screening: dict, ax) -> None:
    """Shortlist conversion per uncertainty bin and ranking checkpoint, Wilson 95% intervals (evidence.triage)."""
    models = screening["triage"]["models"]
    labels = [b["label"] for b in models[0]["bins"]] if models else []
    series = [(m, key) for m in models for key in ("elasticready", "pass_both")]
    width = 0.8 / max(len(series), 1)
    colors = plt.get_cmap("tab20").colors
    for k, (m, key) in enumerate(series):
        bins = m["bins"]
        rates = [b[f"{key}_rate"] if b[f"{key}_rate"] is not None else 0.0 for b in bins]
        lo = [r - b[f"{key}_wilson95"][0] if b[f"{key}_wilson95"] else 0.0 for r, b in zip(rates, bins)]
        hi = [b[f"{key}_wilson95"][1] - r if b[f"{key}_wilson95"] else 0.0 for r, b in zip(rates, bins)]
        xs = [i - 0.4 + width * (k + 0.5) for i in range(len(bins))]
        ax.bar(xs, rates, width=width, color=colors[k % len(colors)], yerr=[lo, hi], capsize=2,
               label=f"{m['model']}:\n{key}")
    ns = [" / ".join(str(m["bins"][i]["shortlisted"]) for m in models) for i in range(len(labels))]
    ax.set_xticks(range(len(labels)), [f"{lab}\nn = {n}" for lab, n in zip(labels, ns)], fontsize=7)
    ax.set_ylim(0, 1.05)
    ax.set_xlabel("predicted uncertainty (dex)")
    ax.set_ylabel("fraction of shortlisted")
    ax.set_title("Uncertainty triage: shortlist conversion (Wilson 95%)", fontsize=9)
    if series:  # outside the axes: rates reach 1.0 and would sit under it
        ax.legend(fontsize=6, ncol=1, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)


def _box(ax, x, y, w, h, text, color="#e8eef7", edge="#2b5797", size=7):
    from matplotlib.patches import FancyBboxPatch

    ax.add_patch(FancyBboxPatch((x - w / 2, y - h / 2), w, h, boxstyle="round,pad=0.02", fc=color, ec=edge, lw=1))
    ax.text(x, y, text, ha="center", va="center", fontsize=size, wrap=True)


def _arrow(ax, x0, y0, x1, y1, label=None, size=7):
    ax.annotate("", xy=(x1, y1), xytext=(x0, y0), arrowprops={"arrowstyle": "->", "color": "#333", "lw": 1})
    if label is not None:
        ax.text((x0 + x1) / 2, (y0 + y1) / 2 + 0.03, label, ha="center", va="bottom", fontsize=size, color="#b22")


def _workflow(screening: dict, ax, protocol: dict) -> None:
    """Figure 1: the campaign's chain as the manifest declares it; on each arrow the screening cohort's count
    leaving that step (declared, passing the screen, shortlisted, with the stage's output). Gates and their
    thresholds from the protocol; the validated subset itself is another scope and is not counted here."""
    import textwrap

    stages = list(protocol["stages"])
    ov = screening["overall"]
    st, cov = ov["status"], ov["coverage"]
    n = ov["candidates"]
    steps = [(f"{len(screening['sets'])} candidate\nsets", n)]
    if "screen" in stages:  # passing it: everyone not screened out
        steps.append(("screen", n - st["screened_out"]))
    if screening.get("ranking"):
        steps.append(("shortlist\n(model rank,\ntop_k)", n - st["screened_out"] - st["not_shortlisted"]))
    for name in stages:
        if name != "screen" and not name.startswith("ablation"):
            steps.append((name, cov.get(f"{name}_outputs")))
    el = protocol["stages"].get("elastic")
    gate = (f"gates\nfit RMS < {el['fit_rms_max_gpa']:g} GPa\nmin eig > {el['pd_min_eigenvalue_gpa']:g} GPa"
            if el else "gates")
    steps.append((f"{gate}\n\nelastic-ready:\n{st['elasticready']}", None))
    k = len(steps)
    ax.set_xlim(0, k)
    ax.set_ylim(0, 1)
    ax.set_axis_off()
    for i, (label, count) in enumerate(steps):
        _box(ax, i + 0.5, 0.55, 0.74, 0.5, label, size=6)
        if i + 1 < k:
            _arrow(ax, i + 0.87, 0.55, i + 1.13, 0.55, "-" if count is None else str(count))
    sets = ", ".join(f"{name} ({b['candidates']})" for name, b in screening["sets"].items())
    ax.text(0.0, 0.08, "\n".join(textwrap.wrap(f"sets: {sets}. Arrows: candidates leaving each step (screening scope).", 150)),
            fontsize=6, transform=ax.transAxes, va="bottom")
    ax.set_title("Figure 1: campaign workflow (from the manifest) with snapshot counts", fontsize=9)


def _architecture(protocol: dict, ax) -> None:
    """Figure 2: the generator and the elastic predictor as the ranking / generating checkpoint stores them."""
    ax.set_xlim(0, 10)
    ax.set_ylim(0, 4)
    ax.set_axis_off()
    models = protocol.get("models") or {}
    usable = [(v.get("first_set", 1 << 30), k, v) for k, v in models.items() if "error" not in (v.get("hyperparameters") or {"error": 1})]
    _, name, m = min(usable, default=(None, None, None))  # the model of the earliest set that uses one
    if m is None:
        ax.text(0.5, 0.5, "no model checkpoint in this campaign", ha="center", va="center", transform=ax.transAxes)
        return
    h = m["hyperparameters"]
    vae, el, smp = h["vae"]["hparams"], h["elastic"]["hparams"], h["sampler"]
    _box(ax, 1.0, 3.0, 1.7, 1.0, f"crystal graph\ncutoff {vae['cutoff']:g} A\n<= {vae['max_atoms']} atoms", size=6)
    _box(ax, 3.3, 3.0, 2.2, 1.0, f"E(3)-equivariant encoder\n{vae['n_layers']} conv layer(s), lmax {vae['lmax']}\n{vae['hidden']}", size=6)
    _box(ax, 5.5, 3.0, 1.4, 1.0, f"latent z\ndim {vae['latent_dim']}", size=6)
    _box(ax, 7.8, 3.0, 2.6, 1.0, f"decoder + score network\n{vae['score_layers']} layers, {vae['score_hidden']}\n"
                                 f"annealed Langevin {smp.get('levels')} x {smp.get('steps')}", size=6)
    for x0, x1 in ((1.85, 2.2), (4.4, 4.8), (6.2, 6.5)):
        _arrow(ax, x0, 3.0, x1, 3.0)
    _box(ax, 3.3, 1.0, 2.2, 1.0, f"equivariant GNN\n{el['n_layers']} layer(s), lmax {el['lmax']}\n{el['hidden']}", size=6)
    _box(ax, 5.9, 1.0, 2.2, 1.0, f"{el['n_heads']} heads -> {el['out']}\n-> 6x6 tensor (PD: {'yes' if el.get('pd', True) else 'no'})"
                                 f"{chr(10) + 'error head' if el.get('error_head') else ''}", size=6)
    _box(ax, 8.4, 1.0, 2.0, 1.0, "K_VRH, G_VRH,\nuncertainty\n-> ranking score", size=6)
    _arrow(ax, 1.0, 2.5, 2.2, 1.2)
    _arrow(ax, 4.4, 1.0, 4.8, 1.0)
    _arrow(ax, 7.0, 1.0, 7.4, 1.0)
    ax.text(5.0, 3.75, f"generator: {h['vae']['parameters']:,} parameters", ha="center", fontsize=7)
    ax.text(5.0, 1.75, f"elastic predictor: {h['elastic']['parameters']:,} parameters", ha="center", fontsize=7)
    ax.set_title(f"Figure 2: model '{name}' ({m['sha256'][:12]})", fontsize=9)


FIGURES: dict[str, tuple[str, Callable]] = {
    "status_by_set": ("screening", _status),
    "failure_taxonomy": ("screening", _failures),
    "fit_rms": ("validated", _fit_rms),
    "uncertainty_triage": ("screening", _triage),
    "campaign_workflow": ("screening", _workflow),
    "model_architecture": ("protocol", _architecture),
}
# drawn with the protocol (meta) beside their scope: the chain and gates the manifest declared
WITH_PROTOCOL = {"campaign_workflow"}
SIZES = {"campaign_workflow": (9, 2.6), "model_architecture": (8, 3.4)}
# drawn only when the snapshot has what they show (declared in the manifest)
OPTIONAL = {"uncertainty_triage": lambda scope: scope.get("triage") is not None,
            "model_architecture": lambda protocol: bool(protocol.get("models"))}


def render_figures(snapshot: dict) -> dict[str, tuple[str, bytes]]:
    """name.ext -> (scope, bytes) for every figure in PNG and PDF."""
    out = {}
    with plt.rc_context({"svg.hashsalt": "aimmat", "font.size": 9}):
        for name, (scope, draw) in FIGURES.items():
            source = snapshot["protocol"] if scope == "protocol" else snapshot["scopes"][scope]
            if name in OPTIONAL and not OPTIONAL[name](source):
                continue
            fig, ax = plt.subplots(figsize=SIZES.get(name, (5, 3.2)))
            if name in WITH_PROTOCOL:
                draw(source, ax, snapshot["protocol"])
            else:
                draw(source, ax)
            fig.tight_layout()
            for fmt in ("png", "pdf"):
                buf = io.BytesIO()
                fig.savefig(buf, format=fmt, dpi=150, metadata=_META[fmt])
                out[f"{name}.{fmt}"] = (scope, buf.getvalue())
            plt.close(fig)
    return out
