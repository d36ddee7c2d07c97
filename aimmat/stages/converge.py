"""Converge stage: the cutoff, k-spacing and (for metals) smearing at which
what an elastic tensor needs stops moving.

Each ladder point is two static runs on one shared k-mesh: the cell as
given and the cell sheared by ``shear_strain`` (xy). Compared between
consecutive points: the energy per atom, every stress component of the
unstrained cell, and the shear stress of the sheared cell (what metals get
wrong: an under-sampled Fermi surface gives a wrong C44 with every gate
passing). A point is chosen when all three move by less than the
tolerances to the next point of its ladder; the ladders run in order
cutoff -> k-spacing -> smearing, each at the values chosen before it. On the
k ladder a point's sheared cell (few symmetry operations: several times the
unstrained cell's k-points) runs only when the step it decides has an
unstrained cell that settled.

No library runs such a ladder on stresses (atomate2 and aiida-qe take
fixed protocol values; SSSP converges per element on isolated tests), so it
is written here on top of the engine call the other stages use.
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from pymatgen.analysis.elasticity.strain import Deformation
from pymatgen.core import Structure

from aimmat.elastic.cost import irreducible_kpoints
from aimmat.engines.qe.inputs import kmesh
from aimmat.engines.run_profile import RunProfile
from aimmat.identity import structure_sha256
from aimmat.runtime import slots
from aimmat.stages.base import StageOutcome, reuse_sources
from aimmat.stages.relax import run_engine_task

GPA_PER_KBAR = 0.1
PW_MAX_KPOINTS = 40000  # pw.x's npk ("Max number of k-points (npk)" in its output), a compile-time limit
ATTEMPTS_PER_POINT = 3


class _Failed(Exception):
    def __init__(self, outcome: StageOutcome, where: str):
        super().__init__(where)
        self.outcome, self.where = outcome, where


def _sheared(structure, gamma: float):
    f = np.eye(3)
    f[0, 1] = f[1, 0] = gamma / 2  # symmetric: engineering shear gamma_xy = gamma, no rotation
    return Deformation(f).apply_to_structure(structure)


class _Ladder:
    """Runs and remembers ladder points (one folder per point)."""

    def __init__(self, structure, cfg: dict, profile: dict, directory: Path):
        self.cfg, self.profile, self.dir = cfg, profile, directory
        self.rows: list[dict] = []
        self._cache: dict[tuple, dict] = {}
        self._shear_job: dict[int, tuple] = {}  # id(row) -> what its sheared cell runs with
        self.cell = 0  # which probe cell the points are on: 0 the stage's input (pre-relaxed or imported), 1 the probe-relaxed one
        self.probe: dict | None = None  # the probe relaxation's facts (record)
        self.set_cell(structure, 0)
        # stresses are judged to 0.05-0.5 kbar: the SCF must be converged well below that (ConvergeStage.conv_thr_per_atom)
        self.conv_thr = min(float(profile.get("conv_thr_per_atom") or 1.0), float(cfg["conv_thr_per_atom"]))
        self.width = max(1, min(2, slots.total() // RunProfile.from_profile(profile).ranks))

    def set_cell(self, structure, which: int) -> None:
        self.structure, self.cell = structure, which
        self.sheared = _sheared(structure, self.cfg["shear_strain"])

    def profile_at(self, ecut: float, rho: float | None, spacing: float, degauss: float | None) -> dict:
        prof = {**self.profile, "ecutwfc_ry": ecut, "ecutrho_ry": rho, "kpoints": None, "kspacing_per_a": spacing,
                "conv_thr_per_atom": self.conv_thr}
        if degauss is not None:
            prof.update(occupations="smearing", degauss_ry=degauss)
        return prof

    def run_task(self, task: str, cell, prof: dict, folder: Path, kpts) -> StageOutcome:
        """One run with its retry ladder, up to ATTEMPTS_PER_POINT attempts
        (``folder/a<n>``); a run an interrupted attempt of this stage finished
        with the same input is read, not run again (the ladder is deterministic,
        so the same point has the same folder)."""
        prev = out = None
        for attempt in range(1, ATTEMPTS_PER_POINT + 1):
            where = folder / f"a{attempt}"
            out = run_engine_task(task, cell, prof, where, prev, kpts=kpts,
                                  reuse_from=reuse_sources(self.cfg, self.dir, where))
            if out.ok or not out.retryable:
                return out
            prev = out
        return out

    def point(self, ladder: str, ecut: float, rho: float | None, spacing: float, degauss: float | None,
              shear: bool = True) -> dict:
        """The ladder point at these settings (computed once): the unstrained cell, and the sheared one
        unless ``shear`` is False (then ``shear_stress_gpa`` stays None until ``add_shear``)."""
        kpts = kmesh(self.structure, {"kspacing_per_a": spacing})
        ident = (self.cell, round(ecut, 6), None if rho is None else round(rho, 6), kpts, degauss)
        if ident in self._cache:
            row = self._cache[ident]
            if shear:
                self.add_shear(row)
            return row
        prof = self.profile_at(ecut, rho, spacing, degauss)
        name = f"p{len(self._cache):02d}"
        where = f"{ladder} ladder at ecutwfc {ecut} Ry, k {list(kpts)}"
        run = (lambda which: self._run_cell(which, prof, name, kpts, where))
        if shear:
            with ThreadPoolExecutor(max_workers=self.width) as pool:
                eq, sh = pool.map(run, ("eq", "shear"))
        else:
            eq, sh = run("eq"), None
        row = {
            "ladder": ladder, "ecutwfc_ry": ecut, "ecutrho_ry": rho, "kspacing_per_a": spacing, "kpoints": list(kpts),
            "degauss_ry": degauss, "cell": "relaxed" if self.cell else "input", "energy_per_atom_ev": eq.outputs["energy_per_atom_ev"],
            "stress_gpa": eq.outputs["stress_gpa"], "shear_stress_gpa": None,
            "metallic": eq.outputs.get("engine", {}).get("metallic"), "wall_s": _pw_wall(eq),
        }
        self._cache[ident] = row
        self._shear_job[id(row)] = (prof, name, kpts, where)
        self.rows.append(row)
        if sh is not None:
            self._fill_shear(row, sh)
        return row

    def add_shear(self, *rows: dict) -> None:
        """Compute the sheared cell of each row that lacks it (side by side when there are two)."""
        todo = [r for r in rows if r["shear_stress_gpa"] is None]
        jobs = [self._shear_job[id(r)] for r in todo]
        with ThreadPoolExecutor(max_workers=max(1, min(self.width, len(jobs)))) as pool:
            outs = list(pool.map(lambda j: self._run_cell("shear", *j), jobs))
        for r, sh in zip(todo, outs):
            self._fill_shear(r, sh)

    def _run_cell(self, which: str, prof: dict, name: str, kpts, where: str) -> StageOutcome:
        cell = self.structure if which == "eq" else self.sheared
        out = self.run_task("static", cell, prof, self.dir / name / which, kpts)
        if not out.ok:
            raise _Failed(out, f"{where}, {'unstrained' if which == 'eq' else 'sheared'} cell")
        return out

    @staticmethod
    def _fill_shear(row: dict, sh: StageOutcome) -> None:
        row["shear_stress_gpa"] = sh.outputs["stress_gpa"][0][1]
        row["wall_s"] = round(row["wall_s"] + _pw_wall(sh), 2)

    def changes(self, a: dict, b: dict, energy: bool = True) -> dict[str, float]:
        """What changed between two points: stress, shear stress when both have it (kbar), energy (meV/atom)."""
        d = {"stress_kbar": float(np.abs(np.subtract(a["stress_gpa"], b["stress_gpa"])).max()) / GPA_PER_KBAR}
        if None not in (a["shear_stress_gpa"], b["shear_stress_gpa"]):
            d["shear_stress_kbar"] = abs(a["shear_stress_gpa"] - b["shear_stress_gpa"]) / GPA_PER_KBAR
        if energy:
            d["energy_mev_per_atom"] = abs(a["energy_per_atom_ev"] - b["energy_per_atom_ev"]) * 1000
        return d

    def shear_tol_kbar(self, b: dict) -> float:
        """Tolerance on the shear stress at point ``b``: the stress tolerance, or
        ``shear_tol_rel`` of the shear response when that is smaller (a soft
        metal's C44 needs the response to a few percent, not to 0.5 kbar),
        never below ``shear_tol_min_kbar`` (print precision and SCF noise)."""
        response = abs(b["shear_stress_gpa"] - b["stress_gpa"][0][1]) / GPA_PER_KBAR
        relative = max(self.cfg.get("shear_tol_min_kbar", 0.0), self.cfg.get("shear_tol_rel", 1.0) * response)
        return min(self.cfg["stress_tol_kbar"], relative)

    def moved(self, a: dict, b: dict, energy: bool = True) -> dict[str, float]:
        """What moved between two points, beyond the tolerances (empty: converged)."""
        d = self.changes(a, b, energy)
        limit = {"stress_kbar": self.cfg["stress_tol_kbar"], "energy_mev_per_atom": self.cfg["energy_tol_mev_per_atom"]}
        if "shear_stress_kbar" in d:
            limit["shear_stress_kbar"] = self.shear_tol_kbar(b)
        return {k: round(v, 4) for k, v in d.items() if v >= limit[k]}


def _pw_wall(out: StageOutcome) -> float:  # pw.x's own wall time of one run (s)
    return round(out.outputs.get("engine", {}).get("pw_wall_s") or 0.0, 2)


def _deltas(lad: _Ladder, a: dict, b: dict, energy: bool = True) -> str:
    """The changes between two points and the tolerances, as one line of the record's ``why``."""
    d = lad.changes(a, b, energy)
    parts = [f"stress {d['stress_kbar']:.3f} kbar"]
    if "shear_stress_kbar" in d:
        parts.append(f"shear stress {d['shear_stress_kbar']:.3f} kbar")
    if energy:
        parts.append(f"energy {d['energy_mev_per_atom']:.3f} meV/atom")
    tols = [f"{lad.cfg['stress_tol_kbar']} kbar"]
    if "shear_stress_kbar" in d:
        tols.append(f"shear {lad.shear_tol_kbar(b):.3f} kbar")
    if energy:
        tols.append(f"{lad.cfg['energy_tol_mev_per_atom']} meV/atom")
    return ", ".join(parts) + f" (tolerances {', '.join(tols)})"


def _spacings(structure, start: float, cfg: dict, sheared=None) -> tuple[list[float], str | None]:
    """Spacings from ``start`` down by ``kspacing_factor``, one per distinct
    mesh, and why the list ends early (None: at ``kspacing_min_per_a`` or
    ``max_steps``): a mesh whose sheared cell has more irreducible k-points
    than pw.x holds (``npk``, 40,000 in 6.7; pw.x stops with "too many
    k-points") or than the manifest's ``max_kpoints`` ends it."""
    out, seen, sp = [], set(), start
    cap = min(PW_MAX_KPOINTS, int(cfg.get("max_kpoints") or PW_MAX_KPOINTS))
    whose = f"pw.x's {PW_MAX_KPOINTS}" if cap == PW_MAX_KPOINTS else f"max_kpoints {cap}"
    while sp >= cfg["kspacing_min_per_a"] - 1e-12 and len(out) < cfg["max_steps"]:
        mesh = kmesh(structure, {"kspacing_per_a": sp})
        if mesh not in seen:
            seen.add(mesh)
            if sheared is not None and (n := irreducible_kpoints(sheared, mesh)) > cap:
                return out, f"mesh {list(mesh)} would need {n} k-points for the sheared cell, above {whose}"
            out.append(round(sp, 6))
        sp *= cfg["kspacing_factor"]
    return out, None


def _probe_relax(lad: _Ladder, ecut, rho, spacing: float, degauss) -> str:
    """vc-relax the probe cell at the chosen cutoff on the cutoff ladder's mesh
    and move the ladder onto it (the k and smearing ladders then judge a cell
    near the equilibrium the elastic stage fits around). A relaxation still
    moving when its last attempt reached the walltime gives its last cell
    (``probe.converged`` False). One that fails otherwise or is unphysical
    leaves the input cell as the probe, said in the record: the relax stage
    meets the same cell with converged settings and classifies its failure
    there."""
    kpts = kmesh(lad.structure, {"kspacing_per_a": spacing})
    out = lad.run_task("relax", lad.structure, lad.profile_at(ecut, rho, spacing, degauss), lad.dir / "probe-relax", kpts)
    relaxed = Structure.from_dict(out.outputs["structure"]) if out.outputs.get("structure") else None
    # a relaxation stopped at its walltime after moving the cell (a generated molecular crystal's
    # flat landscape takes tens of BFGS steps) is nearer equilibrium than where it began: its last
    # cell is the probe, and the relax stage goes on from there instead of walking the same path again
    stopped = (not out.ok and out.failure_code == "out_of_walltime" and relaxed is not None
               and structure_sha256(relaxed) != structure_sha256(lad.structure))
    if not (out.ok and relaxed is not None) and not stopped:
        lad.probe = {"ok": False, "failure_code": out.failure_code, "message": out.message, "kpoints": list(kpts)}
        return (f"probe cell: vc-relax at {ecut} Ry on mesh {list(kpts)} failed ({out.failure_code}); "
                "the k ladder runs on the input cell")
    lad.probe = {"ok": True, "converged": not stopped, "kpoints": list(kpts),
                 "volume_change": round(relaxed.volume / lad.structure.volume - 1, 5),
                 "pressure_gpa": out.outputs.get("pressure_gpa"), "structure": relaxed.as_dict()}
    if stopped:
        lad.probe["failure_code"] = out.failure_code
    lad.set_cell(relaxed, 1)
    how = "vc-relaxed" if not stopped else f"vc-relax stopped at its walltime ({ATTEMPTS_PER_POINT} attempts at most), last cell"
    return (f"probe cell: {how} at {ecut} Ry on mesh {list(kpts)}, volume {100 * lad.probe['volume_change']:+.2f}%; "
            "the k ladder runs on it")


def _ladder_spacings(lad: _Ladder, start: float) -> tuple[list[float], str | None, str | None]:
    """The k ladder's spacings on the current cell, why the list ended early, and why the ladder is refused
    (None: it can run). One mesh cannot be judged against the next, so fewer than two is a refusal: no run
    that could not settle anything."""
    spacings, limit = _spacings(lad.structure, start, lad.cfg, lad.sheared)
    if not spacings:
        return spacings, limit, f"k-points: {limit}"
    if len(spacings) < 2:
        return spacings, limit, (f"k-points: only mesh {list(kmesh(lad.structure, {'kspacing_per_a': spacings[0]}))} fits, "
                                 f"nothing to judge it against; the next {limit or 'is denser than kspacing_min_per_a'}")
    return spacings, limit, None


def _k_ladder(lad: _Ladder, ecut, rho, start: float, degauss, last_wider: dict | None = None) -> tuple[dict | None, str]:
    """(the chosen point, why) or (None, why not). ``last_wider``: on the last smearing width, the wider width's
    choice; when this width's unstrained cell has settled on a mesh with a stress more than twice the tolerance
    from it, the smearing step fails whatever the shear or a denser mesh adds (each may move the stress by up to
    the tolerance), so the ladder ends before its sheared cells, the dearest runs of a metal's ladder."""
    spacings, limit, refused = _ladder_spacings(lad, start)
    if refused:
        return None, refused
    # sheared cells only for a step whose unstrained cell settled (one it fails is lost whatever the shear does)
    prev = lad.point("kspacing", ecut, rho, spacings[0], degauss, shear=False)
    for sp in spacings[1:]:
        row = lad.point("kspacing", ecut, rho, sp, degauss, shear=False)
        if lad.moved(prev, row):
            prev = row
            continue
        if last_wider is not None and lad.changes(last_wider, prev, energy=False)["stress_kbar"] > 2 * lad.cfg["stress_tol_kbar"]:
            return None, (f"smearing not converged down to degauss {degauss} Ry: degauss_ry {last_wider['degauss_ry']} "
                          f"(mesh {last_wider['kpoints']}) to {degauss} Ry (mesh {prev['kpoints']}, its unstrained cell settled "
                          f"to mesh {row['kpoints']}) " + _deltas(lad, last_wider, prev, energy=False)
                          + "; more than twice the stress tolerance, so its sheared cells were not run")
        lad.add_shear(prev, row)
        if not lad.moved(prev, row):
            return prev, (f"kspacing_per_a {prev['kspacing_per_a']} (mesh {prev['kpoints']}"
                          f"{'' if degauss is None else f', degauss {degauss} Ry'}): to mesh {row['kpoints']} " + _deltas(lad, prev, row))
        prev = row
    return None, (f"k-points not converged down to spacing {spacings[-1]} /A (mesh {prev['kpoints']})"
                  + (f"; the next {limit}" if limit else ""))


def run_converge(structure, cfg: dict, profile: dict | None, directory: Path, previous: StageOutcome | None = None) -> StageOutcome:
    """Choose cutoff, k-spacing and smearing for ``structure``.

    Parameters
    ----------
    structure : pymatgen.core.Structure
    cfg : dict
        ``aimmat.manifest.stage_configs.ConvergeStage`` fields.
    profile : dict
        The qe profile (resolved pseudopotentials; cutoffs from the family
        when it recommends them).
    directory : Path
        The attempt's folder; one subfolder per ladder point.
    previous : StageOutcome, optional
        Unused: each ladder point carries its own retry ladder.

    Returns
    -------
    StageOutcome
        ``outputs["chosen"]``: ecutwfc_ry, ecutrho_ry, kspacing_per_a,
        occupations and degauss_ry, metallic; ``table``: every point;
        ``why``: one line per ladder. Failure ``not_converged_settings``
        when a ladder reaches its limit (not retryable: the ladder's
        limits are the manifest's), or the failure of a run that could
        not be completed.
    """
    lad = _Ladder(structure, cfg, profile, directory)
    why: list[str] = []
    ecut0 = profile.get("ecutwfc_ry") or cfg["ecutwfc_start_ry"]
    ratio = (profile["ecutrho_ry"] / profile["ecutwfc_ry"]) if profile.get("ecutrho_ry") and profile.get("ecutwfc_ry") else None
    smearing = profile.get("occupations", "smearing") == "smearing"
    degauss0 = profile.get("degauss_ry") if smearing else None
    try:
        # 1. cutoff, on a coarse shared mesh (the profile's when coarser)
        sp0 = profile.get("kspacing_per_a") or 0.25
        sp_cut = max(sp0, cfg.get("ecutwfc_kspacing_per_a") or sp0)
        n = int(math.floor((cfg["ecutwfc_max_ry"] - ecut0) / cfg["ecutwfc_step_ry"] + 1e-9)) + 1
        ecuts = [ecut0 + i * cfg["ecutwfc_step_ry"] for i in range(max(1, n))]  # up to ecutwfc_max_ry
        rho = (lambda e: None if ratio is None else round(e * ratio, 4))
        prev = lad.point("ecutwfc", ecuts[0], rho(ecuts[0]), sp_cut, degauss0)
        metallic = bool(prev["metallic"]) if smearing else False
        ecut = None
        for e in ecuts[1:]:
            row = lad.point("ecutwfc", e, rho(e), sp_cut, degauss0)
            if not lad.moved(prev, row):
                ecut = prev["ecutwfc_ry"]
                why.append(f"ecutwfc_ry {ecut}: to {e} Ry on mesh {prev['kpoints']} " + _deltas(lad, prev, row))
                break
            prev = row
        if ecut is None:
            return _not_converged(lad, why, f"cutoff not converged up to {ecuts[-1]} Ry (ecutwfc_max_ry {cfg['ecutwfc_max_ry']})")
        # 2. k-spacing (metals: from the metal spacing), 3. smearing for metals
        if metallic and profile.get("kspacing_metal_per_a"):
            start = profile["kspacing_metal_per_a"]
        else:  # a gapped cell: from the coarser of the profile's spacing and the ladder's start
            start = max(sp0, cfg.get("kspacing_start_per_a") or sp0)
        if cfg.get("probe_relax", True):
            # a k ladder that cannot take two steps under max_kpoints on this cell ends here, before the
            # probe relaxation (a metal's probe can take its three walltimes); judged again on the probe cell
            refused = _ladder_spacings(lad, start)[2]
            if refused:
                return _not_converged(lad, why, f"{refused} (on the input cell, before the probe relaxation)")
            why.append(_probe_relax(lad, ecut, rho(ecut), sp_cut, degauss0))
        ladder = [d for d in cfg["degauss_ladder_ry"]] if metallic and cfg["degauss_ladder_ry"] else [degauss0]
        results = []
        for i, d in enumerate(ladder):
            last_wider = results[-1][1] if results and i == len(ladder) - 1 else None
            best, line = _k_ladder(lad, ecut, rho(ecut), start, d, last_wider)
            if best is None:
                return _not_converged(lad, why, line)
            results.append((d, best, line))
            if len(results) >= 2:
                (d1, b1, l1), (d2, b2, _) = results[-2], results[-1]
                # smearing changes the free energy by design: judged on stresses only
                if not lad.moved(b1, b2, energy=False):
                    why += [l1, f"degauss_ry {d1}: to {d2} Ry " + _deltas(lad, b1, b2, energy=False)]
                    return _chosen(lad, why, b1, metallic)
            start = best["kspacing_per_a"]  # a narrower smearing needs at least this mesh
        if len(ladder) > 1:
            (d1, b1, _), (d2, b2, _) = results[-2], results[-1]
            return _not_converged(lad, why, f"smearing not converged down to degauss {ladder[-1]} Ry: degauss_ry {d1} "
                                            f"to {d2} Ry " + _deltas(lad, b1, b2, energy=False))
        why.append(results[-1][2])
        return _chosen(lad, why, results[-1][1], metallic)
    except _Failed as exc:
        o = exc.outcome
        return StageOutcome(ok=False, outputs={"table": lad.rows, "why": why, "converged": False, "probe": lad.probe},
                            failure_code=o.failure_code, message=f"{exc.where}: {o.message}", output_present=bool(lad.rows),
                            retryable=False)


def _chosen(lad: _Ladder, why: list[str], row: dict, metallic: bool) -> StageOutcome:
    chosen = {"ecutwfc_ry": row["ecutwfc_ry"], "ecutrho_ry": row["ecutrho_ry"], "kspacing_per_a": row["kspacing_per_a"],
              "occupations": "smearing" if row["degauss_ry"] is not None else "fixed", "degauss_ry": row["degauss_ry"],
              "metallic": metallic, "conv_thr_per_atom": lad.conv_thr}
    if lad.probe and lad.probe.get("ok"):
        # the relax stage starts from the probe cell (relaxed at the chosen cutoff): in the
        # chosen settings, so it enters the keys of the stages that run with them
        chosen["start_structure_sha256"] = structure_sha256(lad.structure)
    return StageOutcome(ok=True, outputs={"chosen": chosen, "why": why, "table": lad.rows, "converged": True, "probe": lad.probe,
                                          "n_points": len(lad.rows), "wall_s": round(sum(r["wall_s"] for r in lad.rows), 2)},
                        output_present=True)


def _not_converged(lad: _Ladder, why: list[str], message: str) -> StageOutcome:
    return StageOutcome(ok=False, outputs={"table": lad.rows, "why": why, "converged": False, "probe": lad.probe},
                        failure_code="not_converged_settings", message=message, output_present=True, retryable=False)


