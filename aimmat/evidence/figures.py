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


FIGURES: dict[str, tuple[str, Callable]] = {
    "status_by_set": ("screening", _status),
    "failure_taxonomy": ("screening", _failures),
    "fit_rms": ("validated", _fit_rms),
}


def render_figures(snapshot: dict) -> dict[str, tuple[str, bytes]]:
    """name.ext -> (scope, bytes) for every figure in PNG and PDF."""
    out = {}
    with plt.rc_context({"svg.hashsalt": "aimmat", "font.size": 9}):
        for name, (scope, draw) in FIGURES.items():
            fig, ax = plt.subplots(figsize=(5, 3.2))
            draw(snapshot["scopes"][scope], ax)
            fig.tight_layout()
            for fmt in ("png", "pdf"):
                buf = io.BytesIO()
                fig.savefig(buf, format=fmt, dpi=150, metadata=_META[fmt])
                out[f"{name}.{fmt}"] = (scope, buf.getvalue())
            plt.close(fig)
    return out
