"""Screening: cheap checks before any engine runs. Each criterion is recorded
with its value and threshold; "strict pass" means every criterion passed."""

from __future__ import annotations

from pathlib import Path

from aimmat.stages.base import StageOutcome


def min_distance_a(structure, search_a: float) -> float:
    """Smallest interatomic distance including periodic images (A).

    Returns ``search_a`` when no pair is closer than that."""
    _, _, _, dist = structure.get_neighbor_list(r=search_a)
    dist = dist[dist > 1e-8]
    return float(dist.min()) if dist.size else float(search_a)


def charge_neutral(structure) -> bool:
    from smact.screening import smact_validity

    return bool(smact_validity(structure.composition.reduced_formula))


def toxic_lists() -> dict:
    """The element lists of ``toxic_elements.json`` (each with its source)."""
    import json

    data = json.loads((Path(__file__).parent / "toxic_elements.json").read_text())
    return {k: v for k, v in data.items() if not k.startswith("_")}


def synthesis_criteria(composition, cfg: dict) -> dict[str, dict]:
    """The synthesis-oriented criteria the screen config sets (none by default): elemental supply
    concentration (pymatgen's HHI data: production-weighted Herfindahl-Hirschman index), a toxic-element list,
    elements without a stable isotope. Each recorded like the other criteria, with its value and threshold."""
    out = {}
    symbols = sorted(el.symbol for el in composition.elements)
    if cfg.get("hhi_production_max") is not None:
        from pymatgen.analysis.hhi import HHIModel

        hhi, _ = HHIModel().get_hhi(composition)
        ok = hhi is not None and hhi <= cfg["hhi_production_max"]
        out["hhi_production"] = {"pass": bool(ok), "value": None if hhi is None else round(float(hhi), 1),
                                 "threshold": cfg["hhi_production_max"], "unit": "HHI",
                                 **({} if hhi is not None else {"reason": "no HHI data for an element"})}
    if cfg.get("toxic_list"):
        listed = set(toxic_lists()[cfg["toxic_list"]]["elements"])
        found = [e for e in symbols if e in listed]
        out["toxic_elements"] = {"pass": not found, "value": found, "threshold": cfg["toxic_list"], "unit": None}
    if cfg.get("no_radioactive"):
        from pymatgen.core import Element

        found = [e for e in symbols if Element(e).is_radioactive]
        out["radioactive"] = {"pass": not found, "value": found, "threshold": "no element without a stable isotope", "unit": None}
    return out


def run_screen(structure, cfg: dict, profile: dict | None, directory: Path | None, previous: StageOutcome | None = None) -> StageOutcome:
    """Screen ``structure`` against ``cfg``'s criteria.

    Parameters
    ----------
    structure : pymatgen.core.Structure
    cfg : dict
        Thresholds: ``min_distance_a``, ``density_min_g_cm3``,
        ``density_max_g_cm3``, ``charge_neutral``; ``palette`` (added by
        resolve when the campaign has one): a structure with another
        element fails ``pseudopotentials`` (reason ``no_pseudopotential``).
    profile : dict or None
        The pre-relaxation profile (an ML potential); None screens the
        structure as it is.
    directory : Path or None
        The attempt's folder; needed only with a pre-relaxation.
    previous : StageOutcome, optional
        Unused: screening has no retry ladder. Present so every stage
        function has the same signature.
    """
    outside = sorted({sp.symbol for sp in structure.composition.elements} - set(cfg["palette"])) if cfg.get("palette") is not None else []
    if outside:  # no engine can compute it: screened out before any pre-relaxation
        crit = {"pseudopotentials": {"pass": False, "value": outside, "threshold": "campaign palette", "unit": None,
                                     "reason": "no_pseudopotential: " + " ".join(outside)}}
        return StageOutcome(ok=True, outputs={"criteria": crit, "strict_pass": False,
                                              "formula": structure.composition.reduced_formula}, output_present=True)
    prerelax = None
    if profile is not None:  # ML pre-relaxation, then the same checks on the moved structure
        from pymatgen.core import Structure

        from aimmat.engines import get_engine
        from aimmat.identity import structure_sha256

        res = get_engine(profile).run(structure, profile, "relax", directory / "prerelax")
        if res.structure is None:
            return StageOutcome(ok=False, failure_code=res.failure_code, message=f"pre-relaxation: {res.message}")
        structure = Structure.from_dict(res.structure)
        prerelax = {"converged": res.converged, "n_steps": res.n_steps, "structure": res.structure,
                    "structure_sha256": structure_sha256(structure), "energy_per_atom_ev": res.energy_ev / len(structure)}
    criteria: dict[str, dict] = {}
    search = max(4.0, 2.0 * cfg["min_distance_a"])
    dmin = min_distance_a(structure, search)
    criteria["min_distance"] = {"pass": dmin >= cfg["min_distance_a"], "value": round(dmin, 6), "threshold": cfg["min_distance_a"], "unit": "A"}
    rho = float(structure.density)
    criteria["density"] = {
        "pass": cfg["density_min_g_cm3"] <= rho <= cfg["density_max_g_cm3"],
        "value": round(rho, 6),
        "threshold": [cfg["density_min_g_cm3"], cfg["density_max_g_cm3"]],
        "unit": "g/cm3",
    }
    if cfg["charge_neutral"]:
        ok = charge_neutral(structure)
        criteria["charge_neutral"] = {"pass": ok, "value": ok, "threshold": True, "unit": None}
    criteria.update(synthesis_criteria(structure.composition, cfg))
    strict = all(c["pass"] for c in criteria.values())
    for c in criteria.values():
        c["pass"] = bool(c["pass"])
    outputs = {"criteria": criteria, "strict_pass": bool(strict), "formula": structure.composition.reduced_formula}
    if prerelax is not None:
        outputs["prerelax"] = prerelax
    return StageOutcome(ok=True, outputs=outputs, output_present=True)

