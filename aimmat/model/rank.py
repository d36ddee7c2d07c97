"""Prediction and ranking (pure; campaigns call them through
``aimmat.candidates.models``).

- ``predict``: the ensemble's mean tensor, its spread, VRH moduli and the
  ranking terms, stored with each candidate at import;
- ``shortlist``: the set's ranking once every candidate is imported and
  screened; only screen passes are eligible, ties broken by candidate id.

torch and the checkpoint are loaded only when a campaign needs them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np


def predict(ckpt, structures) -> list[dict]:
    """Per structure: mean Voigt tensor (GPa), per-component spread, VRH moduli, ranking terms."""
    from aimmat.model.evaluate import predict_error, predict_heads, vrh

    structures = list(structures)
    heads = predict_heads(ckpt.elastic, structures)  # (H, B, 6, 6)
    # the uncertainty term: the error head's predicted |error| of log10 K where the checkpoint has one (it
    # ranks held-out errors better than the spread of heads that share a trunk), else the ensemble spread
    err_head = predict_error(ckpt.elastic, structures) if getattr(ckpt.elastic, "error", None) is not None else None
    out = []
    for b in range(heads.shape[1]):
        mean = heads[:, b].mean(0)
        k, g = vrh(mean)
        k_heads = np.array([vrh(h)[0] for h in heads[:, b]])
        margin = float(np.linalg.eigvalsh((mean + mean.T) / 2).min())
        out.append({
            "checkpoint_sha256": ckpt.sha256,
            "voigt_gpa": np.round(mean, 3).tolist(),
            "voigt_std_gpa": np.round(heads[:, b].std(0), 3).tolist(),
            "k_vrh_gpa": round(k, 3),
            "g_vrh_gpa": round(g, 3),
            "pd_margin_gpa": round(margin, 4),
            "pd": margin > 0,
            "terms": {
                "log10_k_vrh": math.log10(max(k, 1e-2)),
                "log10_g_vrh": math.log10(max(g, 1e-2)),
                "log10_pd_margin": math.log10(max(margin, 1e-3)),
                "uncertainty": (float(err_head[b, 0]) if err_head is not None
                                else float(np.std(np.log10(np.clip(k_heads, 1e-2, None))))),
                "hhi_production": _hhi_fraction(structures[b].composition),
            },
            "uncertainty_source": "error_head" if err_head is not None else "ensemble_spread",
        })
    return out


def _hhi_fraction(composition) -> float:
    """Production HHI of the composition / 10,000 (pymatgen's HHI data): 0 spread supply, 1 a single source.
    An element without data counts as 1 (the conservative end), so a negative weight never favours it."""
    from pymatgen.analysis.hhi import HHIModel

    hhi, _ = HHIModel().get_hhi(composition)
    return 1.0 if hhi is None else round(float(hhi) / 1e4, 6)


def score(prediction: dict, weights: dict[str, float]) -> float:
    terms = prediction["terms"]
    missing = [t for t in weights if t not in terms]
    if missing:
        from aimmat.errors import CampaignError

        raise CampaignError(f"a stored prediction has no ranking term {', '.join(missing)} (imported by an earlier aimmat)",
                            fix="re-import the set's candidates: aimmat apply MANIFEST --target SET --replace import")
    return float(sum(w * terms[t] for t, w in weights.items()))


@dataclass
class Shortlist:
    top_k: int
    waiting: list[str] = field(default_factory=list)  # candidates not yet imported / screened
    ranks: dict[str, tuple[int, float]] = field(default_factory=dict)  # eligible cand -> (rank, score)

    @property
    def members(self) -> set[str]:
        return {c for c, (r, _) in self.ranks.items() if r <= self.top_k}

    def reason(self, cand: str) -> str | None:
        """None when ``cand`` may go on; else why it waits or stops."""
        if self.waiting:
            return f"waiting for the shortlist: {len(self.waiting)} candidate(s) of the set not yet imported and screened"
        if cand not in self.ranks:
            return "not shortlisted: did not pass the screen"
        r, s = self.ranks[cand]
        if r > self.top_k:
            return f"not shortlisted: rank {r} of {len(self.ranks)} eligible (score {s:.3f}), top_k {self.top_k}"
        return None


def build_shortlist(top_k: int, weights: dict, entries: list[tuple[str, str, dict | None]]) -> Shortlist:
    """``entries``: (cand_id, state, prediction) with state 'eligible', 'ineligible' or 'waiting'."""
    sl = Shortlist(top_k)
    scored = []
    for cand, state, pred in entries:
        if state == "waiting":
            sl.waiting.append(cand)
        elif state == "eligible" and pred is not None:
            scored.append((-score(pred, weights), cand))
    for r, (neg, cand) in enumerate(sorted(scored), start=1):
        sl.ranks[cand] = (r, -neg)
    return sl
