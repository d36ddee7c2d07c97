"""CHGNet silicon through relax, SCF and elastic; the recorded moduli are
pymatgen's VRH of the recorded tensor, and the PD flag is reported."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import yaml
from pymatgen.analysis.elasticity import ElasticTensor

from tests.helpers import ROOT


@pytest.mark.slow
def test_chgnet_si_elastic_matches_pymatgen_vrh(tmp_path, cli):
    (tmp_path / "s").mkdir()
    shutil.copy(ROOT / "manifests/structures/1-element/Si.cif", tmp_path / "s/Si.cif")
    demo = yaml.safe_load((ROOT / "manifests/demo.yaml").read_text())
    demo["campaign"]["root"] = "camp"
    demo.pop("render", None)  # templates and checkpoints are resolved relative to the demo manifest
    demo.pop("models", None)
    demo.pop("learning", None)  # its parent is one of the models dropped above
    demo.get("evidence", {}).pop("triage", None)  # it bins a ranked set's shortlist: none here
    demo["candidate_sets"] = [{"name": "1-element", "elements": 1, "source": {"kind": "files", "glob": "s/*.cif"}}]
    (tmp_path / "m.yaml").write_text(yaml.safe_dump(demo))
    # --jobs 1: in this pytest process other tests have started OpenMP/BLAS
    # thread pools (torch models, scikit-learn via matminer); a forked worker
    # then hangs in its first matrix product. The CLI forks from a fresh process.
    code, out, err = cli("apply", tmp_path / "m.yaml", "-q", "--jobs", "1")
    assert code == 0, err
    rec = json.loads((tmp_path / "camp/demo/1-element/Si/elastic/record.json").read_text())
    o = rec["outputs"]
    t = ElasticTensor.from_voigt(o["tensor_voigt_gpa"])
    assert abs(o["b_h_gpa"] - t.k_vrh) < 1e-6
    assert abs(o["g_h_gpa"] - t.g_vrh) < 1e-6
    assert abs(o["e_h_gpa"] - t.y_mod / 1e9) < 1e-6
    assert abs(o["poisson_h"] - t.homogeneous_poisson) < 1e-9
    assert o["pass_pd"] is True and o["min_eigenvalue_gpa"] > 0
    assert o["n_cells"] == 4 and len(o["cells"]) == 5 and all(c["ok"] for c in o["cells"])  # cubic: 1 type x 4, + unstrained
    # physically sane for diamond Si (CHGNet underbinds a little: exp. B = 98 GPa)
    assert 60 < o["b_h_gpa"] < 110
    assert np.isclose(o["min_eigenvalue_gpa"], min(np.linalg.eigvalsh(0.5 * (t.voigt + t.voigt.T))))
    code, out, _ = cli("status", tmp_path / "m.yaml", "--json")
    assert json.loads(out)["total"]["elasticready"] == 1
