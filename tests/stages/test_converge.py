"""The converge stage: ladders judged on energy, stress and shear stress.

The ladder logic is checked with a model engine whose errors are known
functions of cutoff, mesh and smearing (the choice must be the first point
whose change to the next is within tolerance); the stage on real pw.x runs
in a campaign (tests/stages/test_converge_qe.py)."""

from __future__ import annotations

import numpy as np
import pytest
from pymatgen.core import Lattice, Structure

from aimmat.manifest.stage_configs import ConvergeStage
from aimmat.stages import converge as conv
from aimmat.stages.base import StageOutcome


def _al() -> Structure:
    return Structure(Lattice([[0, 2.0, 2.0], [2.0, 0, 2.0], [2.0, 2.0, 0]]), ["Al"], [[0, 0, 0]])


class ModelEngine:
    """Stress error ~ A/ecut^3 (Pulay), k error ~ B/nk^2 (oscillation-free), smearing bias ~ C*degauss^2."""

    def __init__(self, metallic=True, pulay=2e5, kerr=80.0, smear=0.0, fail_at=None, smear_p=0.0):
        self.metallic, self.pulay, self.kerr, self.smear, self.fail_at = metallic, pulay, kerr, smear, fail_at
        self.smear_p = smear_p  # smearing bias of the pressure (GPa per Ry^2), as the shear's ``smear``
        self.calls, self.relaxes, self.cells, self.relax_fails = [], [], [], False

    def __call__(self, task, structure, profile, directory, previous, kpts=None, reuse_from=()):
        ecut, nk, d = profile["ecutwfc_ry"], kpts[0], profile.get("degauss_ry") or 0.0
        if task == "relax":  # the probe relaxation: a 2% larger cell, the same shape
            self.relaxes.append((ecut, tuple(kpts), d, structure.volume))
            if self.relax_fails == "walltime":  # stopped while moving: the last cell 1% larger
                moved = structure.copy()
                moved.scale_lattice(structure.volume * 1.01)
                return StageOutcome(ok=False, failure_code="out_of_walltime", message="max_seconds", retryable=False,
                                    output_present=True, outputs={"structure": moved.as_dict(), "pressure_gpa": 0.4})
            if self.relax_fails:
                return StageOutcome(ok=False, failure_code="ionic_not_converged", message="bfgs", retryable=False)
            relaxed = structure.copy()
            relaxed.scale_lattice(structure.volume * 1.02)
            return StageOutcome(ok=True, output_present=True, outputs={
                "structure": relaxed.as_dict(), "pressure_gpa": 0.0, "engine": {"metallic": self.metallic}})
        self.calls.append((ecut, tuple(kpts), d, previous is not None))
        self.cells.append(round(structure.volume, 6))
        if self.fail_at is not None and ecut >= self.fail_at:
            return StageOutcome(ok=False, failure_code="electronic_not_converged", message="x", retryable=previous is None,
                                outputs={"next_overrides": {"mixing_beta": 0.3}})
        m = structure.lattice.matrix
        sheared = not np.allclose(m, m[0, 1] / 2.0 * _al().lattice.matrix)  # not a scaled copy of the fcc cell
        p = -1.0 + self.pulay / ecut**3 * 0.1  # GPa
        k = self.kerr / nk**2 * 0.1
        s = self.smear * d * d
        stress = np.eye(3) * (p + k + self.smear_p * d * d)
        if sheared:
            stress[0, 1] = stress[1, 0] = 0.3 + k + s
        return StageOutcome(ok=True, output_present=True, outputs={
            "energy_per_atom_ev": -57.0 + 10.0 / ecut**2 + 0.01 * k, "stress_gpa": stress.tolist(),
            "engine": {"metallic": self.metallic, "pw_wall_s": 1.0}})


def _run(monkeypatch, tmp_path, engine, **cfg):
    monkeypatch.setattr(conv, "run_engine_task", engine)
    cfg.setdefault("shear_tol_rel", 1.0)  # the ladder logic on absolute tolerances; the relative one has its own test
    c = ConvergeStage(profile="q", **cfg).model_dump()
    prof = {"kind": "qe", "ecutwfc_ry": 20.0, "ecutrho_ry": 80.0, "kspacing_per_a": 0.25, "kspacing_metal_per_a": 0.15,
            "occupations": "smearing", "degauss_ry": 0.02, "mpi_ranks": 1}
    return conv.run_converge(_al(), c, prof, tmp_path)


def test_cutoff_chosen_where_the_next_step_moves_less_than_the_tolerance(monkeypatch, tmp_path):
    eng = ModelEngine(smear=0.0)
    out = _run(monkeypatch, tmp_path, eng)
    assert out.ok, out.message
    ch = out.outputs["chosen"]
    rows = [r for r in out.outputs["table"] if r["ladder"] == "ecutwfc"]
    # pressure error 2e4/ecut^3 GPa: the first ecut whose step to ecut+10 moves < 0.05 GPa, energy 10/ecut^2 < 1 meV
    want = next(e for e in np.arange(20, 170, 10) if 2e4 / e**3 - 2e4 / (e + 10) ** 3 < 0.05
                and (10 / e**2 - 10 / (e + 10) ** 2) < 1e-3)
    assert ch["ecutwfc_ry"] == want and rows[-1]["ecutwfc_ry"] == want + 10
    assert ch["ecutrho_ry"] == pytest.approx(4 * want)  # the profile's ratio is kept
    # k: shear error 8/nk^2 GPa; chosen where the next distinct mesh moves the shear stress < 0.05 GPa
    k_rows = [r for r in out.outputs["table"] if r["ladder"] == "kspacing" and r["degauss_ry"] == 0.02]
    nk = [r["kpoints"][0] for r in k_rows]
    i = next(j for j in range(len(nk) - 1) if 8 / nk[j] ** 2 - 8 / nk[j + 1] ** 2 < 0.05)
    assert ch["kspacing_per_a"] == k_rows[i]["kspacing_per_a"]
    assert ch["metallic"] is True and ch["degauss_ry"] == 0.02  # no smearing bias: the widest width agrees
    assert any(w.startswith("degauss_ry 0.02") for w in out.outputs["why"])


def test_shear_tolerance_is_relative_to_the_shear_response_when_that_is_stricter(monkeypatch, tmp_path):
    # a 3 kbar shear response (fcc Al at 1%): 5% of it (0.15 kbar) is stricter than 0.5 kbar
    out = _run(monkeypatch, tmp_path, ModelEngine(smear=0.0, kerr=300.0), shear_tol_rel=0.05)
    assert out.ok, out.message
    k_rows = [r for r in out.outputs["table"] if r["ladder"] == "kspacing" and r["degauss_ry"] == 0.02]
    nk = [r["kpoints"][0] for r in k_rows]
    err = [30 / n**2 for n in nk]  # GPa
    i = next(j for j in range(len(nk) - 1) if err[j] - err[j + 1] < 0.05 * (0.3 + err[j + 1]))
    loose = next(j for j in range(len(nk) - 1) if err[j] - err[j + 1] < 0.05)
    assert i > loose  # the relative tolerance asks for a denser mesh than 0.5 kbar would
    assert out.outputs["chosen"]["kspacing_per_a"] == k_rows[i]["kspacing_per_a"]
    assert any("shear 0.1" in w for w in out.outputs["why"])  # the tolerance used is printed


def test_smearing_bias_moves_the_choice_to_a_narrower_width(monkeypatch, tmp_path):
    # bias 300*d^2 GPa: 0.12 at 0.02, 0.03 at 0.01, 0.0075 at 0.005: 0.02->0.01 moves 0.9 kbar, 0.01->0.005 0.23 kbar
    out = _run(monkeypatch, tmp_path, ModelEngine(smear=300.0), degauss_ladder_ry=[0.02, 0.01, 0.005])
    assert out.ok and out.outputs["chosen"]["degauss_ry"] == 0.01


def test_ladder_limits_end_not_converged_settings(monkeypatch, tmp_path):
    out = _run(monkeypatch, tmp_path, ModelEngine(pulay=5e7), ecutwfc_max_ry=60)
    assert not out.ok and out.failure_code == "not_converged_settings" and not out.retryable
    assert "cutoff not converged up to 60" in out.message and len(out.outputs["table"]) == 5
    out = _run(monkeypatch, tmp_path / "b", ModelEngine(smear=3000.0), degauss_ladder_ry=[0.02, 0.01])
    assert out.failure_code == "not_converged_settings" and "smearing" in out.message


def test_insulator_uses_one_width_and_no_metal_spacing(monkeypatch, tmp_path):
    eng = ModelEngine(metallic=False)
    out = _run(monkeypatch, tmp_path, eng)
    assert out.ok and out.outputs["chosen"]["metallic"] is False
    assert {c[2] for c in eng.calls} == {0.02}
    k_rows = [r for r in out.outputs["table"] if r["ladder"] == "kspacing"]
    # the ladder starts at kspacing_start_per_a (coarser than the profile's 0.25), not at the metal spacing,
    # and walks denser by kspacing_factor; the choice is still the first point the next one confirms
    assert k_rows[0]["kspacing_per_a"] == pytest.approx(0.5)
    assert k_rows[1]["kspacing_per_a"] == pytest.approx(0.375)
    assert 0.15 not in {r["kspacing_per_a"] for r in out.outputs["table"]}
    nk = [r["kpoints"][0] for r in k_rows]
    i = next(j for j in range(len(nk) - 1) if 8 / nk[j] ** 2 - 8 / nk[j + 1] ** 2 < 0.05)
    assert out.outputs["chosen"]["kspacing_per_a"] == k_rows[i]["kspacing_per_a"] and i == len(k_rows) - 2
    # a profile spacing coarser than the start is where the ladder starts
    out = _run(monkeypatch, tmp_path / "coarse", ModelEngine(metallic=False), kspacing_start_per_a=0.2)
    assert [r for r in out.outputs["table"] if r["ladder"] == "kspacing"][0]["kspacing_per_a"] == pytest.approx(0.25)


def test_a_k_ladder_with_one_affordable_mesh_stops_before_running_it(monkeypatch, tmp_path):
    """A mesh cannot be judged without the next one: when only the first fits under max_kpoints the
    candidate ends not_converged_settings without the run (a metal's first mesh costs tens of minutes)."""
    al = _al()
    first = conv.kmesh(al, {"kspacing_per_a": 0.15})
    cap = conv.irreducible_kpoints(conv._sheared(al, 0.01), first)
    eng = ModelEngine()
    out = _run(monkeypatch, tmp_path, eng, max_kpoints=cap)
    assert out.failure_code == "not_converged_settings"
    assert f"only mesh {list(first)} fits" in out.message and f"above max_kpoints {cap}" in out.message
    assert not [r for r in out.outputs["table"] if r["ladder"] == "kspacing"]
    # judged on the input cell before the probe relaxation, which is not run
    assert "before the probe relaxation" in out.message and not eng.relaxes
    # without a probe relaxation the ladder itself refuses the single mesh
    out = _run(monkeypatch, tmp_path / "noprobe", ModelEngine(), max_kpoints=cap, probe_relax=False)
    assert out.failure_code == "not_converged_settings" and f"only mesh {list(first)} fits" in out.message
    assert "before the probe" not in out.message and not [r for r in out.outputs["table"] if r["ladder"] == "kspacing"]


def test_cutoff_ladder_runs_on_one_coarse_mesh(monkeypatch, tmp_path):
    """The cutoff ladder shares the coarser of ecutwfc_kspacing_per_a and the
    profile's spacing (every point one mesh, so the k error cancels in the
    differences); the k ladder then starts from the profile's spacing at the
    chosen cutoff. Measured with pw.x (fcc Al and Si, LDA VBC, 20-60 Ry):
    the stress and energy differences at 0.5/A and 0.25/A agree within
    0.06 kbar and 0.2 meV/atom."""
    eng = ModelEngine(metallic=False)
    out = _run(monkeypatch, tmp_path, eng)
    assert out.ok, out.message
    cut = [r for r in out.outputs["table"] if r["ladder"] == "ecutwfc"]
    coarse = conv.kmesh(_al(), {"kspacing_per_a": 0.5})
    assert len(cut) >= 2 and {tuple(r["kpoints"]) for r in cut} == {coarse}
    assert coarse[0] < conv.kmesh(_al(), {"kspacing_per_a": 0.25})[0]
    assert f"on mesh {list(coarse)}" in out.outputs["why"][0]
    k_rows = [r for r in out.outputs["table"] if r["ladder"] == "kspacing"]
    assert all(r["ecutwfc_ry"] == out.outputs["chosen"]["ecutwfc_ry"] for r in k_rows)
    # a profile spacing coarser than the option is kept for the cutoff ladder
    eng2 = ModelEngine(metallic=False)
    out2 = _run(monkeypatch, tmp_path / "b", eng2, ecutwfc_kspacing_per_a=0.1)
    cut2 = [r for r in out2.outputs["table"] if r["ladder"] == "ecutwfc"]
    assert {tuple(r["kpoints"]) for r in cut2} == {conv.kmesh(_al(), {"kspacing_per_a": 0.25})}


def test_a_failed_point_retries_with_the_remedy_then_fails_the_stage(monkeypatch, tmp_path):
    eng = ModelEngine(fail_at=30)
    out = _run(monkeypatch, tmp_path, eng)
    assert not out.ok and out.failure_code == "electronic_not_converged" and "ecutwfc 30" in out.message
    retried = [c for c in eng.calls if c[0] == 30]
    # each cell that ran: first try, then one rung up (the sheared cell is not started once the unstrained
    # one has failed when they run one after the other)
    assert len(retried) in (2, 4) and [c[3] for c in retried].count(True) == len(retried) // 2
    assert "unstrained cell" in out.message


def test_k_ladder_computes_the_sheared_cell_only_for_steps_whose_unstrained_cell_settled(monkeypatch, tmp_path):
    # stress error 200/nk^2 GPa in the unstrained and the sheared cell: the first steps fail on the unstrained
    # cell's stress, their sheared cells are never run, and the choice is the first settled step
    eng = ModelEngine(kerr=2000.0)
    out = _run(monkeypatch, tmp_path, eng)
    assert out.ok, out.message
    k_rows = [r for r in out.outputs["table"] if r["ladder"] == "kspacing"]
    with_shear = [r for r in k_rows if r["shear_stress_gpa"] is not None]
    assert 0 < len(with_shear) < len(k_rows)
    i = next(j for j, r in enumerate(k_rows) if r["kspacing_per_a"] == out.outputs["chosen"]["kspacing_per_a"])
    assert k_rows[i] in with_shear and k_rows[i + 1] in with_shear  # the deciding step has both cells
    nk = [r["kpoints"][0] for r in k_rows]
    err = [200 / n**2 for n in nk]  # GPa: the first step that moves less than 0.05 GPa in stress
    assert i == next(j for j in range(len(nk) - 1) if err[j] - err[j + 1] < 0.05)
    assert all(r["shear_stress_gpa"] is None for r in k_rows[:i])
    sheared_runs = sum(1 for v in eng.cells if v != round(_al().volume, 6) and v != round(_al().volume * 1.02, 6))
    assert sheared_runs == len([r for r in out.outputs["table"] if r["shear_stress_gpa"] is not None])


def test_k_ladder_stops_before_a_mesh_pw_cannot_hold():
    """fcc Al sheared 1%: 58^3 is 25,695 irreducible points, 78^3 is 61,660,
    above pw.x 6.7's npk of 40,000 ("too many k-points"): the ladder ends at
    58^3 and says why, instead of launching a run that cannot start."""
    a = 3.98
    al = Structure(Lattice([[0, a / 2, a / 2], [a / 2, 0, a / 2], [a / 2, a / 2, 0]]), ["Al"], [[0, 0, 0]])
    cfg = ConvergeStage(profile="q", kspacing_min_per_a=0.01, max_steps=30).model_dump()
    spacings, why = conv._spacings(al, 0.15, cfg, conv._sheared(al, 0.01))
    meshes = [conv.kmesh(al, {"kspacing_per_a": sp})[0] for sp in spacings]
    assert meshes[-1] == 58 and why is not None and "above pw.x's 40000" in why
    assert conv._spacings(al, 0.15, cfg)[1] is None  # without the sheared cell: no limit applied


def test_k_ladder_stops_at_the_manifests_kpoint_cap():
    """max_kpoints below npk caps what one candidate may cost: the same fcc Al
    ladder ends at the last mesh whose sheared cell stays within the cap, and
    the reason names the cap, not pw.x."""
    a = 3.98
    al = Structure(Lattice([[0, a / 2, a / 2], [a / 2, 0, a / 2], [a / 2, a / 2, 0]]), ["Al"], [[0, 0, 0]])
    sheared = conv._sheared(al, 0.01)
    cfg = ConvergeStage(profile="q", kspacing_min_per_a=0.01, max_steps=30, max_kpoints=3000).model_dump()
    spacings, why = conv._spacings(al, 0.15, cfg, sheared)
    last = conv.kmesh(al, {"kspacing_per_a": spacings[-1]})
    assert conv.irreducible_kpoints(sheared, last) <= 3000
    assert why is not None and "above max_kpoints 3000" in why and "pw.x" not in why
    n_next = int(why.split("would need ")[1].split()[0])
    assert n_next > 3000
    full, _ = conv._spacings(al, 0.15, ConvergeStage(profile="q", kspacing_min_per_a=0.01, max_steps=30).model_dump(), sheared)
    assert len(full) > len(spacings) and full[: len(spacings)] == spacings


def test_k_ladder_runs_on_the_probe_cell_relaxed_at_the_chosen_cutoff(monkeypatch, tmp_path):
    """A generated cell is far from equilibrium: after the cutoff ladder (on
    the input cell) one vc-relax at the chosen cutoff on the cutoff
    ladder's mesh, and every k-ladder point is on the relaxed cell; the
    record keeps the relaxation's volume change and a why line."""
    eng = ModelEngine(metallic=True)
    out = _run(monkeypatch, tmp_path, eng)
    assert out.ok, out.message
    ch, table = out.outputs["chosen"], out.outputs["table"]
    assert len(eng.relaxes) == 1
    ecut, kpts, _, v_in = eng.relaxes[0]
    assert ecut == ch["ecutwfc_ry"] and kpts == conv.kmesh(_al(), {"kspacing_per_a": 0.5})
    assert v_in == pytest.approx(_al().volume)
    assert {r["cell"] for r in table if r["ladder"] == "ecutwfc"} == {"input"}
    assert {r["cell"] for r in table if r["ladder"] == "kspacing"} == {"relaxed"}
    n_cut = sum(r["ladder"] == "ecutwfc" for r in table)
    # the unstrained runs of the k ladder saw the relaxed volume (each point: eq and shear, in either order)
    assert _al().volume * 1.02 == pytest.approx(max(eng.cells[2 * n_cut:]), rel=1e-6)
    assert max(eng.cells[: 2 * n_cut]) == pytest.approx(_al().volume, rel=1e-6)
    probe = out.outputs["probe"]
    assert probe["ok"] and probe["volume_change"] == pytest.approx(0.02, abs=1e-4)
    assert any(w.startswith("probe cell: vc-relaxed") and "+2.00%" in w for w in out.outputs["why"])
    # off: no relaxation, the k ladder on the input cell
    eng2 = ModelEngine(metallic=True)
    out2 = _run(monkeypatch, tmp_path / "off", eng2, probe_relax=False)
    assert out2.ok and not eng2.relaxes and {r["cell"] for r in out2.outputs["table"]} == {"input"}


def test_a_failed_probe_relaxation_leaves_the_imported_cell_and_says_so(monkeypatch, tmp_path):
    eng = ModelEngine(metallic=False)
    eng.relax_fails = True
    out = _run(monkeypatch, tmp_path, eng)
    assert out.ok, out.message
    assert {r["cell"] for r in out.outputs["table"]} == {"input"}
    assert out.outputs["probe"]["ok"] is False and out.outputs["probe"]["failure_code"] == "ionic_not_converged"
    assert any("failed (ionic_not_converged)" in w for w in out.outputs["why"])


def test_a_probe_relaxation_stopped_at_walltime_gives_its_last_cell(monkeypatch, tmp_path):
    """A relaxation still moving at its walltime has come nearer equilibrium:
    the k ladder runs on its last cell, and the chosen settings name that cell
    (relax goes on from it instead of walking the same BFGS path again)."""
    from aimmat.identity import structure_sha256

    eng = ModelEngine(metallic=False)
    eng.relax_fails = "walltime"
    out = _run(monkeypatch, tmp_path, eng)
    assert out.ok, out.message
    probe = out.outputs["probe"]
    assert probe["ok"] and probe["converged"] is False and probe["failure_code"] == "out_of_walltime"
    assert probe["volume_change"] == pytest.approx(0.01, abs=1e-4)
    assert {r["cell"] for r in out.outputs["table"] if r["ladder"] == "kspacing"} == {"relaxed"}
    last = Structure.from_dict(probe["structure"])
    assert out.outputs["chosen"]["start_structure_sha256"] == structure_sha256(last) != structure_sha256(_al())
    assert any("stopped at its walltime" in w and "+1.00%" in w for w in out.outputs["why"])


@pytest.mark.parametrize("profile_thr, want", [(1e-9, 1e-12), (1e-13, 1e-13), (None, 1e-12)])
def test_every_point_and_the_choice_use_an_scf_threshold_tight_enough_for_stress(monkeypatch, tmp_path, profile_thr, want):
    # a stress is first order in the SCF's density error: at the profiles' 1e-9 Ry/atom a magnetic metal's
    # pressure scatters by ~0.5 kbar with the starting point, as large as the tolerance the ladder judges
    from aimmat.resolve.recipe import apply_settings

    seen = []
    eng = ModelEngine()

    def spy(task, structure, profile, *a, **kw):
        seen.append((task, profile.get("conv_thr_per_atom")))
        return eng(task, structure, profile, *a, **kw)

    monkeypatch.setattr(conv, "run_engine_task", spy)
    prof = {"kind": "qe", "ecutwfc_ry": 20.0, "ecutrho_ry": 80.0, "kspacing_per_a": 0.25, "kspacing_metal_per_a": 0.15,
            "occupations": "smearing", "degauss_ry": 0.02, "mpi_ranks": 1}
    if profile_thr is not None:
        prof["conv_thr_per_atom"] = profile_thr
    out = conv.run_converge(_al(), ConvergeStage(profile="q", shear_tol_rel=1.0).model_dump(), prof, tmp_path)
    assert out.ok, out.message
    assert {t for t, _ in seen} == {"static", "relax"} and {thr for _, thr in seen} == {want}
    chosen = out.outputs["chosen"]
    assert chosen["conv_thr_per_atom"] == want
    # the stages that run with the chosen settings (relax, scf, elastic) get the same threshold
    assert apply_settings({**prof, "conv_thr_per_atom": 1e-9}, chosen)["conv_thr_per_atom"] == want


@pytest.mark.parametrize("smear_p, early", [(5000.0, True), (300.0, False)])
def test_a_smearing_step_the_unstrained_stress_fails_by_twice_the_tolerance_ends_before_its_sheared_cells(
        monkeypatch, tmp_path, smear_p, early):
    # pressure bias smear_p * d^2 GPa: 0.02 -> 0.01 Ry moves it 0.0003 * smear_p GPa: 15 kbar (early: more than
    # twice 0.5 kbar, the narrow width's sheared cells never run) or 0.9 kbar (between one and two tolerances:
    # the step is judged in full, with the shear, and fails there)
    eng = ModelEngine(smear_p=smear_p)
    out = _run(monkeypatch, tmp_path, eng)
    assert not out.ok and out.failure_code == "not_converged_settings"
    assert out.message.startswith("smearing not converged down to degauss 0.01 Ry: degauss_ry 0.02")
    narrow = [r for r in out.outputs["table"] if r["ladder"] == "kspacing" and r["degauss_ry"] == 0.01]
    assert narrow and ("more than twice" in out.message) is early
    if early:
        assert all(r["shear_stress_gpa"] is None for r in narrow) and "shear stress" not in out.message
    else:
        assert any(r["shear_stress_gpa"] is not None for r in narrow) and "shear stress" in out.message
