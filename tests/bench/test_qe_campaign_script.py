"""bench/qe_campaign.py: its manifest loads (palette, converge stage,
generator sets) and its summarizer counts a synthetic campaign right.
No pw.x, no torch sampling: records are written by hand, in the shapes
apply writes (validated against aimmat's record models)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pymatgen.core import Lattice, Structure

from aimmat.state.records import CandidateRecord, StageRecord
from tests.helpers import load_bench



@pytest.fixture(scope="module")
def bench():
    return load_bench("qe_campaign")


def test_manifest_loads_with_palette_converge_and_generator_sets(bench, tmp_path):
    from aimmat.manifest import load_manifest
    from aimmat.manifest.models import GeneratorSource

    m = bench.build_manifest(count=3, top_k=1, palette=["Al", "Mg", "Si"], functional="lda", walltime_s=600)
    spec = load_manifest(bench.write_manifest(tmp_path, m))
    man = spec.manifest
    assert man.campaign.palette == ["Al", "Mg", "Si"]
    assert man.stages.enabled() == ["screen", "converge", "relax", "scf", "elastic"]
    assert man.stages.converge.profile == "qe" and man.stages.elastic.profile == "qe"
    assert man.stages.converge.max_kpoints == bench.DEFAULT_MAX_KPOINTS < 40000  # the stated resource cap reaches the stage
    assert man.stages.converge.stress_tol_kbar == 0.5  # tolerances stay the defaults
    assert man.stages.elastic.magnitudes == [-0.01, -0.005, 0.005, 0.01]  # defaults, not shrunk
    prof = man.profiles["qe"]
    assert prof.kind == "qe" and prof.pseudo.family == "debian" and prof.pseudo.functional == "lda"
    assert prof.walltime_s == 600 and prof.preset is None
    assert man.stages.screen.prerelax_profile == "chgnet-fast" and man.profiles["chgnet-fast"].kind == "chgnet"
    sets = {s.name: s for s in man.candidate_sets}
    assert sorted(sets) == ["generated-2", "generated-3"]
    for name, n_el in (("generated-2", 2), ("generated-3", 3)):
        s = sets[name]
        assert isinstance(s.source, GeneratorSource) and s.source.count == 3 and s.elements == n_el
        assert s.rank.top_k == 1
    assert man.models["small"].sha256 == bench.sha256_file(bench.CHECKPOINT)
    assert len(spec.candidates) == 6
    if bench.DEBIAN_PSEUDO.is_dir():  # the palette is covered by the family on this machine
        from aimmat.resolve.palette import campaign_palette

        pal = campaign_palette(spec)
        assert pal.declared and pal.elements == frozenset({"Al", "Mg", "Si"})
    # no prerelax, a preset
    m2 = bench.build_manifest(count=2, top_k=1, prerelax=False, preset="balanced")
    man2 = load_manifest(bench.write_manifest(tmp_path / "b", m2)).manifest
    assert man2.stages.screen.prerelax_profile is None and "chgnet-fast" not in man2.profiles
    assert man2.profiles["qe"].preset == "balanced" and man2.profiles["qe"].kspacing_per_a == 0.25


def test_default_palette_is_covered_by_debian_lda(bench):
    if not bench.DEBIAN_PSEUDO.is_dir():
        pytest.skip("Debian pseudopotentials not installed")
    from aimmat.resolve.palette import covered

    assert set(bench.DEFAULT_PALETTE) <= covered(bench.DEBIAN_PSEUDO, {}, "lda")


@pytest.mark.parametrize("line, seconds", [
    ("     PWSCF        :      0.55s CPU      0.63s WALL", 0.63),
    ("     PWSCF        :   1m30.00s CPU   1m40.50s WALL", 100.5),
    ("     PWSCF        :   1h 2m CPU   1h 3m WALL", 3780.0),
    ("     PWSCF        :  1d 2h CPU  1d 2h10m WALL", 94200.0),
])
def test_pw_wall_line(bench, line, seconds):
    assert bench.pw_wall_s("header\n" + line + "\n   JOB DONE.\n") == pytest.approx(seconds)
    assert bench.pw_wall_s("no timing here\n") is None


# ------------------------------------------------------------------ synthetic campaign
STRUCT = Structure(Lattice.cubic(4.2), ["Mg", "O"], [[0, 0, 0], [0.5, 0.5, 0.5]]).as_dict()


def _attempt(n, status, code=None, message=""):
    return {"n": n, "key": "k" * 64, "started": "2026-12-03T00:00:00+00:00", "ended": "2026-12-03T00:01:00+00:00",
            "status": status, "failure_code": code, "wall_s": 60.0, "message": message}


def _record(stage, status="done", code=None, outputs=None, attempts=None):
    attempts = attempts or [_attempt(1, status, code)]
    rec = StageRecord(stage=stage, key="k" * 64, key_inputs={"recipe": 1}, status=status, attempts=attempts,
                      failure_code=code if status == "failed" else None, output_present=status == "done",
                      outputs=outputs or {})
    return rec.model_dump(mode="json")


def _screen(passed, failed=()):
    crit = {c: {"pass": c not in failed, "value": 1.0, "threshold": 0.5, "unit": None}
            for c in ("min_distance", "density", "charge_neutral")}
    return _record("screen", outputs={"criteria": crit, "strict_pass": passed, "formula": "MgO"})


def _elastic(fit=True, pd=True):
    return _record("elastic", outputs={"pass_fit_rms": fit, "pass_pd": pd, "pass_both": fit and pd, "complete": True,
                                       "fit_rms_gpa": 0.1 if fit else 9.0, "min_eigenvalue_gpa": 50.0 if pd else -3.0})


def _write_candidate(camp, set_name, cid, score, records):
    d = camp / set_name / cid
    d.mkdir(parents=True)
    cand = CandidateRecord(set_name=set_name, cand_id=cid, elements=2, n_elements=2, formula="MgO", species=["Mg", "O"],
                           key="c" * 64, key_inputs={}, structure=STRUCT, structure_sha256="s" * 64,
                           provenance={"kind": "generator", "seed": 1, "index": int(cid.split("-")[1])},
                           prediction={"k_vrh_gpa": 100.0, "g_vrh_gpa": 50.0, "pd_margin_gpa": 10.0, "pd": True,
                                       "terms": {"log10_k_vrh": score, "log10_g_vrh": 0.0, "log10_pd_margin": 1.0,
                                                 "uncertainty": 0.0}})
    (d / "candidate.json").write_text(json.dumps(cand.model_dump(mode="json")))
    for rec in records:
        (d / rec["stage"]).mkdir()
        (d / rec["stage"] / "record.json").write_text(json.dumps(rec))
    return d


def _pw(folder: Path, wall_line: str | None, ranks=1, wall_s=None):
    folder.mkdir(parents=True)
    text = "     Program PWSCF v.6.7MaX starts on  3Dec2026\n     !    total energy = -1.0 Ry\n"
    if wall_line:
        text += wall_line + "\n\n   JOB DONE.\n"
    (folder / "pw.out").write_text(text)
    (folder / "run.json").write_text(json.dumps({"returncode": 0, "timed_out": False, "wall_s": wall_s, "ranks": ranks}))


def _synthetic(tmp_path, bench):
    m = bench.build_manifest(count=4, top_k=2)
    m["candidate_sets"][1]["rank"]["top_k"] = 3
    camp = tmp_path / "campaigns" / m["campaign"]["name"]
    ok = [_record("converge", outputs={"converged": True, "chosen": {"ecutwfc_ry": 40}}), _record("relax"), _record("scf")]
    # generated-2, top_k 2: passes with scores 3 > 2 > 1; one screened out
    d0 = _write_candidate(camp, "generated-2", "g1-00000", 3.0, [
        _screen(True), ok[0],
        _record("relax", attempts=[_attempt(1, "failed", "electronic_not_converged"), _attempt(2, "done")]),
        ok[2], _elastic()])
    _write_candidate(camp, "generated-2", "g1-00001", 2.0, [
        _screen(True), _record("converge", "failed", "not_converged_settings", attempts=[_attempt(
            1, "failed", "not_converged_settings", "k-points: only mesh [10, 10, 10] fits, nothing to judge it against;\n"
            "the next mesh [13, 14, 14] would need 1276 k-points for the sheared cell, above max_kpoints 1000")])])
    _write_candidate(camp, "generated-2", "g1-00002", 1.0, [_screen(True)])  # ranked third: not shortlisted
    _write_candidate(camp, "generated-2", "g1-00003", 9.0, [_screen(False, ("charge_neutral", "min_distance"))])
    # generated-3, top_k 3: three passes, all shortlisted; the third never ran (apply stopped)
    d4 = _write_candidate(camp, "generated-3", "g2-00000", 5.0, [_screen(True), *ok, _elastic(pd=False)])
    _write_candidate(camp, "generated-3", "g2-00001", 9.0, [_screen(False, ("density",))])
    _write_candidate(camp, "generated-3", "g2-00002", 4.0, [
        _screen(True), ok[0],
        _record("relax", "failed", "out_of_walltime",
                attempts=[_attempt(1, "failed", "out_of_walltime"), _attempt(2, "failed", "out_of_walltime")])])
    _write_candidate(camp, "generated-3", "g2-00003", 0.5, [_screen(True)])
    # three pw.x runs: 100 s x 2 ranks, 1 h x 1 rank, one killed (no WALL line; run.json says 20 s)
    _pw(d0 / "converge" / "attempt-1" / "p00" / "eq" / "a1", "     PWSCF        :   1m30.00s CPU   1m40.00s WALL", ranks=2)
    _pw(d4 / "elastic" / "attempt-1" / "cell-00", "     PWSCF        :   1h 0m CPU   1h 0m WALL")
    _pw(d4 / "relax" / "attempt-1", None, wall_s=20.0)
    # a fourth, read back from the first by a resumed attempt: not a call, no core time
    _pw(d0 / "converge" / "attempt-2" / "p00" / "eq" / "a1", "     PWSCF        :   1m30.00s CPU   1m40.00s WALL", ranks=2)
    reused = d0 / "converge" / "attempt-2" / "p00" / "eq" / "a1" / "run.json"
    reused.write_text(json.dumps({**json.loads(reused.read_text()), "reused_from": "attempt-1/p00/eq/a1"}))
    return camp, m


def test_summary_counts_a_synthetic_campaign(bench, tmp_path):
    camp, m = _synthetic(tmp_path, bench)
    s = bench.summarize(camp, m)
    assert (s["generated"], s["expected"], s["screened"], s["screen_pass"]) == (8, 8, 8, 6)
    assert s["shortlisted"] == 5
    assert (s["elastic_ready"], s["pass_both"]) == (2, 1)
    assert (s["not_shortlisted"], s["pending"]) == (1, 1)
    assert s["failure_classes"] == {
        "converge: not_converged_settings": 1,
        "elastic: failed gate pd": 1,
        "relax: out_of_walltime": 1,
        "screen: screened_out (charge_neutral, min_distance)": 1,
        "screen: screened_out (density)": 1,
    }
    assert (s["retried"], s["retries_changed_outcome"]) == (2, 1)
    assert s["retry_details"] == ["generated-2/g1-00000: relax: electronic_not_converged -> done after 2 attempts"]
    assert sorted(s["shortlisted_not_ready"]) == [
        "generated-2/g1-00001 (MgO): converge: not_converged_settings (k-points: only mesh [10, 10, 10] fits, nothing to "
        "judge it against; the next mesh [13, 14, 14] would need 1276 k-points for the sheared cell, above max_kpoints 1000)",
        "generated-3/g2-00002 (MgO): relax: out_of_walltime",
        "generated-3/g2-00003 (MgO): converge: pending",
    ]
    assert s["per_set"]["generated-2"]["shortlisted"] == 2 and s["per_set"]["generated-3"]["shortlisted"] == 3
    assert (s["pw_calls"], s["pw_no_wall_line"], s["pw_reused"]) == (3, 1, 1)
    assert s["core_hours"] == pytest.approx((200 + 3600 + 20) / 3600)
    assert s["core_hours_per_validated_tensor"] == pytest.approx((200 + 3600 + 20) / 3600)
    assert s["core_hours_per_elastic_ready"] == pytest.approx((200 + 3600 + 20) / 3600 / 2)
    assert s["pw_version_from_outputs"] == "v.6.7MaX"


def test_shortlist_waits_while_a_candidate_is_unscreened(bench, tmp_path):
    camp, m = _synthetic(tmp_path, bench)
    (camp / "generated-2" / "g1-00003" / "screen" / "record.json").unlink()
    s = bench.summarize(camp, m)
    # set 2: nothing ranked yet, but the two with engine records went past the shortlist
    assert s["per_set"]["generated-2"]["shortlisted"] == 2
    assert s["per_set"]["generated-2"]["pending"] == 1 and s["per_set"]["generated-2"]["screened"] == 3
    assert "screen: screened_out (charge_neutral, min_distance)" not in s["failure_classes"]


def test_report_prints_the_figures(bench, tmp_path, capsys):
    camp, m = _synthetic(tmp_path, bench)
    s = bench.summarize(camp, m)
    head = {"date": "2026-12-03", "machine": bench.machine(), "pw_version": "v.6.7MaX", "command": "qe_campaign.py",
            "manifest": "m.yaml", "apply_s": 12.0, "apply_rc": 1, "log": "apply.log"}
    bench.print_report(s, head)
    out = capsys.readouterr().out
    assert "pass_both (fit RMS and PD)  1" in out and "elastic-ready               2" in out
    assert "   1  relax: out_of_walltime" in out and "generated-3/g2-00003 (MgO): converge: pending" in out
    assert "pw.x calls                  3" in out and "cores" in out


def test_running_stage_and_status_cross_check(bench, tmp_path):
    camp, m = _synthetic(tmp_path, bench)
    rec = _record("relax", status="running", attempts=[_attempt(1, "running")])
    rec["outputs"] = {}
    (camp / "generated-3" / "g2-00003" / "converge").mkdir()
    (camp / "generated-3" / "g2-00003" / "converge" / "record.json").write_text(json.dumps(_record("converge")))
    (camp / "generated-3" / "g2-00003" / "relax").mkdir()
    (camp / "generated-3" / "g2-00003" / "relax" / "record.json").write_text(json.dumps(rec))
    s = bench.summarize(camp, m)
    assert (s["running"], s["pending"]) == (1, 0)
    assert "generated-3/g2-00003 (MgO): relax: running" in s["shortlisted_not_ready"]
    assert "relax: running" not in s["failure_classes"]
    good = {"total": {"elasticready": 2, "screened_out": 2, "not_converged_settings": 1}}
    assert "DISAGREES" not in bench.status_check(good, s)
    bad = {"total": {"elasticready": 3, "screened_out": 2, "not_converged_settings": 1}}
    assert "elasticready 3 (DISAGREES with records: 2)" in bench.status_check(bad, s)


def test_processes_left_under_the_campaign_are_found_and_stopped(bench, tmp_path):
    import subprocess

    (tmp_path / "run").mkdir()
    proc = subprocess.Popen(["sleep", "60"], cwd=tmp_path / "run", start_new_session=True)
    try:
        assert bench.stray_processes(tmp_path) == [proc.pid]
        assert bench.stop_strays(tmp_path) == [proc.pid]
        assert proc.wait(timeout=10) != 0
        assert bench.stray_processes(tmp_path) == []
    finally:
        if proc.poll() is None:
            proc.kill()
