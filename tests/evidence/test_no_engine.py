"""Evidence and rendering need records only: a QE campaign's snapshot and
manuscript come out on a machine without pw.x (a laptop, a reviewer's
machine), with the engine version and pseudopotential md5s the records carry.
diff, which resolves the manifest against this machine, says pw.x is missing."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
TEMPLATES = ("project.md.j2", "status_by_set.md.j2", "validated.md.j2", "protocol.md.j2")


def _aimmat(*argv, path_env: str):
    env = {**os.environ, "PATH": path_env}
    return subprocess.run([sys.executable, "-m", "aimmat.cli.main", *map(str, argv)], capture_output=True, text=True,
                          env=env, timeout=600)


@pytest.mark.slow
@pytest.mark.needs_qe
def test_qe_campaign_evidence_and_render_without_pw_x(tmp_path, cli):
    # the QE demo campaign (Si and 3C-SiC, real pw.x), with render targets
    m = yaml.safe_load((ROOT / "manifests/qe-demo.yaml").read_text())
    m["campaign"] = {"name": "qe", "root": "camp"}
    shutil.copytree(ROOT / "manifests/structures-qe", tmp_path / "structures-qe")
    (tmp_path / "t").mkdir()
    for t in TEMPLATES:
        shutil.copy(ROOT / "templates" / t, tmp_path / "t" / t)
    m["render"] = [{"template": f"t/{t}"} for t in TEMPLATES]
    manifest = tmp_path / "qe.yaml"
    manifest.write_text(yaml.safe_dump(m))
    code, _, err = cli("apply", manifest, "-q", "--jobs", "2")
    assert code == 0, err
    camp = tmp_path / "camp/qe"
    with_pw = json.loads((camp / "manuscript/render.lock.json").read_text())
    (camp / "manuscript").rename(tmp_path / "manuscript-with-pw")

    empty = tmp_path / "empty-bin"
    empty.mkdir()
    assert shutil.which("pw.x", path=str(empty)) is None
    proc = _aimmat("evidence", manifest, path_env=str(empty))
    assert proc.returncode == 0, proc.stderr
    snap = json.loads(proc.stdout)
    assert snap["scopes"]["validated"]["n"] == 2
    assert [e for e in snap["protocol"]["engines"] if e.startswith("pw.x ")]  # from the records' keys
    assert set(snap["protocol"]["pseudopotentials_md5"]) == {"Si.pbe-rrkj.UPF", "C.pbe-rrkjus.UPF"}
    proc = _aimmat("render", manifest, path_env=str(empty))
    assert proc.returncode == 0, proc.stderr
    lock = json.loads((camp / "manuscript/render.lock.json").read_text())
    assert lock["engines"] == with_pw["engines"] and lock["pseudopotentials_md5"] == with_pw["pseudopotentials_md5"]
    assert [o["sha256"] for o in lock["outputs"]] == [o["sha256"] for o in with_pw["outputs"]]  # the same bytes
    proc = _aimmat("diff", manifest, path_env=str(empty))  # diff resolves against this machine
    assert proc.returncode == 5 and "pw.x not found" in proc.stderr
