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


FIGURES: dict[str, tuple[str, Callable]] = {
    "status_by_set": ("screening", _status),
    "failure_taxonomy": ("screening", _failures),
    "fit_rms": ("validated", _fit_rms),
    "uncertainty_triage": ("screening", _triage),
}
# drawn only when the snapshot has what they show (declared in the manifest)
OPTIONAL = {"uncertainty_triage": lambda scope: scope.get("triage") is not None}


def render_figures(snapshot: dict) -> dict[str, tuple[str, bytes]]:
    """name.ext -> (scope, bytes) for every figure in PNG and PDF."""
    out = {}
    with plt.rc_context({"svg.hashsalt": "aimmat", "font.size": 9}):
        for name, (scope, draw) in FIGURES.items():
            if name in OPTIONAL and not OPTIONAL[name](snapshot["scopes"][scope]):
                continue
            fig, ax = plt.subplots(figsize=(5, 3.2))
            draw(snapshot["scopes"][scope], ax)
            fig.tight_layout()
            for fmt in ("png", "pdf"):
                buf = io.BytesIO()
                fig.savefig(buf, format=fmt, dpi=150, metadata=_META[fmt])
                out[f"{name}.{fmt}"] = (scope, buf.getvalue())
            plt.close(fig)
    return out
