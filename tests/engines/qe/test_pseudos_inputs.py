"""Pseudopotential choice, recommended cutoffs, k-meshes, spin and policy (no pw.x runs)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml
from pymatgen.core import Lattice, Structure

from aimmat.engines.qe.inputs import build_input, kmesh, spin_polarized
from aimmat.engines.qe.pseudos import DEBIAN_DIR, find_pseudo, recommended_cutoffs, upf_info
from aimmat.engines.qe.taxonomy import remedy
from tests.engines.qe.conftest import profile, si

debian = pytest.mark.skipif(not DEBIAN_DIR.is_dir(), reason="Debian quantum-espresso-data not installed")


@debian
def test_find_pseudo_by_functional_and_type():
    assert find_pseudo(DEBIAN_DIR, "Si", {}, "pbe").name == "Si.pbe-rrkj.UPF"  # NC preferred
    assert upf_info(find_pseudo(DEBIAN_DIR, "Cu", {}, "pbe")).pseudo_type == "PAW"
    with pytest.raises(LookupError, match="no PBE pseudopotential for Al"):
        find_pseudo(DEBIAN_DIR, "Al", {}, "pbe")  # Debian ships only an LDA Al
    assert recommended_cutoffs(DEBIAN_DIR, "Cu", DEBIAN_DIR / "Cu.pbe-kjpaw.UPF")[0] == pytest.approx(47.22, abs=0.01)


@debian
def test_family_table_names_files_and_cutoffs(tmp_path, cli):
    pp = tmp_path / "sssp"
    pp.mkdir()
    shutil.copy(DEBIAN_DIR / "Si.pbe-rrkj.UPF", pp / "Si_custom.upf")
    (pp / "SSSP_test.json").write_text(json.dumps({"Si": {"filename": "Si_custom.upf", "cutoff_wfc": 25.0, "cutoff_rho": 100.0}}))
    assert find_pseudo(pp, "Si", {}, "any").name == "Si_custom.upf"
    assert recommended_cutoffs(pp, "Si", pp / "Si_custom.upf") == (25.0, 100.0)
    # through the planner: the resolved cutoffs are part of the key
    (tmp_path / "s").mkdir()
    si().to(filename=str(tmp_path / "s/Si.vasp"), fmt="poscar")
    m = {"campaign": {"name": "c", "root": "camp"},
         "profiles": {"q": {"kind": "qe", "pseudo": {"dir": "sssp"}, "kpoints": [2, 2, 2]}},
         "candidate_sets": [{"name": "a", "elements": 1, "source": {"kind": "files", "glob": "s/*.vasp"}}],
         "stages": {"relax": {"profile": "q"}}}
    (tmp_path / "m.yaml").write_text(yaml.safe_dump(m))
    if shutil.which("pw.x"):
        code, out, _ = cli("apply", tmp_path / "m.yaml", "-q", "--jobs", 1)
        assert code == 0
        rec = json.loads((tmp_path / "camp/c/a/Si/relax/record.json").read_text())
        assert rec["key_inputs"]["cutoffs_ry"] == [25.0, 100.0]
        assert "ecutwfc          = 25.0" in (tmp_path / "camp/c/a/Si/relax/attempt-1/pw.in").read_text()
    # no recommendation anywhere: the manifest must say
    (pp / "SSSP_test.json").unlink()
    shutil.copy(DEBIAN_DIR / "Si.pbe-rrkj.UPF", pp / "Si_custom.upf")
    code, _, err = cli("diff", tmp_path / "m.yaml")
    assert code in (3, 5)
    if code == 3:
        assert "profiles.q.ecutwfc_ry: no recommended cutoff for Si" in err


def test_kmesh_by_spacing_includes_2pi():
    s = Structure(Lattice.cubic(4.0), ["Al"], [[0, 0, 0]])  # |b| = 2 pi / 4 = 1.571 / A
    assert kmesh(s, {"kspacing_per_a": 0.2, "kpoints": None}) == (8, 8, 8)
    assert kmesh(s, {"kspacing_per_a": 0.2, "kpoints": [3, 3, 3]}) == (3, 3, 3)


def test_spin_auto_for_transition_metals_and_odd_electron_counts():
    gecl3 = Structure(Lattice.cubic(6.0), ["Ge", "Cl", "Cl", "Cl"], [[0, 0, 0], [0.3, 0, 0], [0, 0.3, 0], [0, 0, 0.3]])
    z = {"Ge": 4.0, "Cl": 7.0, "Fe": 8.0, "Si": 4.0}
    assert spin_polarized(gecl3, {"spin": "auto"}, z)  # 4 + 21 = 25 electrons
    assert not spin_polarized(si(), {"spin": "auto"}, z)
    fe = Structure(Lattice.cubic(2.87), ["Fe"], [[0, 0, 0]])
    assert spin_polarized(fe, {"spin": "auto"}, z)
    assert not spin_polarized(fe, {"spin": "none"}, z)


@debian
def test_input_has_what_pw_needs():
    p = profile(ecutwfc_ry=30, spin="polarized")
    text, nl = build_input(si(), p, "relax", {"Si": DEBIAN_DIR / "Si.pbe-rrkj.UPF"}, {"Si": 4.0}, (6, 6, 6), 1000.0, False)
    for needle in ("calculation      = 'vc-relax'", "tstress          = .true.", "max_seconds      = 950.0", "nspin            = 2",
                   "ecutrho          = 120.0", "6 6 6  0 0 0", "ATOMIC_POSITIONS crystal"):
        assert needle in text, needle
    assert nl["electrons"]["conv_thr"] == pytest.approx(2 * p["conv_thr_per_atom"])


def test_policy_from_manifest_changes_the_ladder():
    prof = {"mixing_beta": 0.7, "diagonalization": "david", "occupations": "smearing"}
    pol = {"mixing_beta_factor": 0.5, "mixing_beta_min": 0.3, "diagonalization": ["david", "cg"], "damped_dynamics": False}
    assert remedy("electronic_not_converged", {}, prof, pol).overrides["mixing_beta"] == 0.35
    assert remedy("electronic_not_converged", {"mixing_beta": 0.35}, prof, pol) is None
    assert remedy("diagonalization_failure", {}, prof, pol).overrides["diagonalization"] == "cg"
    first = remedy("bfgs_history_failure", {}, prof, pol)
    assert remedy("bfgs_history_failure", first.overrides, prof, pol) is None


ONCV_HEADER = """<UPF version="2.0.1">
<PP_INFO>
  Generated using ONCVPSP code by D. R. Hamann
</PP_INFO>
<PP_HEADER
   generated="Generated using ONCVPSP code by D. R. Hamann"
   element="Si" pseudo_type="NC" relativistic="scalar" functional="PBE"
   z_valence="4.0" wfc_cutoff="{wfc}" rho_cutoff="{rho}"/>
"""


def test_oncv_rho_cutoff_is_a_radius_not_ry(tmp_path):
    from aimmat.engines.qe.pseudos import upf_info

    f = tmp_path / "Si.oncv.upf"
    f.write_text(ONCV_HEADER.format(wfc="0.0", rho="1.5"))  # ONCV writes a radius in bohr here
    assert upf_info(f).rho_cutoff_ry is None
    g = tmp_path / "Si.other.upf"
    g.write_text(ONCV_HEADER.replace("ONCVPSP", "ld1.x").format(wfc="30.0", rho="60.0"))  # below 4 x ecutwfc: no Ry cutoff
    assert upf_info(g).rho_cutoff_ry is None and upf_info(g).wfc_cutoff_ry == 30.0
    h = tmp_path / "Si.us.upf"
    h.write_text(ONCV_HEADER.replace("ONCVPSP", "ld1.x").format(wfc="30.0", rho="240.0"))
    assert upf_info(h).rho_cutoff_ry == 240.0
