"""Real pw.x through the campaign pipeline: relax + SCF of Si and Al, the
retry ladder, pseudopotential bytes in the key, Si elastic constants."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import yaml
from pymatgen.core import Lattice, Structure

from tests.engines.qe.conftest import needs_pw, si

pytestmark = [needs_pw, pytest.mark.needs_qe]
DEBIAN = "/usr/share/espresso/pseudo"


def _campaign(tmp_path, structures: dict[str, Structure], profile: dict, stages=("relax", "scf"), elastic=None, retry=3, scf_profile=None):
    for name, s in structures.items():
        d = tmp_path / "s" / f"{len(s.composition.elements)}-element"
        d.mkdir(parents=True, exist_ok=True)
        s.to(filename=str(d / f"{name}.vasp"), fmt="poscar")
    sets = sorted({p.parent.name for p in (tmp_path / "s").glob("*/*.vasp")})
    m = {
        "campaign": {"name": "q", "root": "camp"},
        "profiles": {"qe": {"kind": "qe", "preset": "fast", "walltime_s": 600, **profile}},
        "candidate_sets": [{"name": s, "elements": int(s[0]), "source": {"kind": "files", "glob": f"s/{s}/*.vasp"}} for s in sets],
        "stages": {st: {"profile": "qe"} for st in stages},
        "retry": {"max_attempts": retry},
    }
    if elastic:
        m["stages"]["elastic"] = {"profile": "qe", **elastic}
    if scf_profile:
        m["profiles"]["qe-scf"] = {**m["profiles"]["qe"], **scf_profile}
        m["stages"]["scf"] = {"profile": "qe-scf"}
    path = tmp_path / "m.yaml"
    path.write_text(yaml.safe_dump(m))
    return path


def _rec(tmp_path, rel):
    return json.loads((tmp_path / "camp/q" / rel / "record.json").read_text())


def al_prim(a=4.05):
    return Structure(Lattice([[0, a / 2, a / 2], [a / 2, 0, a / 2], [a / 2, a / 2, 0]]), ["Al"], [[0, 0, 0]])


def test_si_and_al_relax_scf(tmp_path, cli):
    path = _campaign(
        tmp_path,
        {"Si": si(), "Al": al_prim()},
        {"pseudo": {"family": "debian", "files": {"Si": "Si.pbe-rrkj.UPF", "Al": "Al.pz-vbc.UPF"}}, "ecutwfc_ry": 20, "kspacing_per_a": 0.3},
    )
    code, out, err = cli("apply", path, "-q")
    assert code == 0, err
    for name, a_conv in (("Si", 5.47), ("Al", 3.98)):
        relax = _rec(tmp_path, f"1-element/{name}/relax")["outputs"]
        s = Structure.from_dict(relax["structure"])
        assert abs(relax["pressure_gpa"]) < 0.2  # vc-relax reached zero pressure
        assert s.lattice.a * np.sqrt(2) == pytest.approx(a_conv, abs=0.06)
        assert relax["engine"]["memory_mb"] > 0 and relax["engine"]["calculation"] == "vc-relax"
        scf = _rec(tmp_path, f"1-element/{name}/scf")["outputs"]
        assert scf["structure_sha256"] == relax["structure_sha256"]
        assert scf["energy_per_atom_ev"] < 0
    # metals are detected from the relaxation's bands and get the denser metal
    # spacing (the fast preset's 0.25/A) for SCF; Si keeps 0.3/A
    relax_al = _rec(tmp_path, "1-element/Al/relax")["outputs"]
    assert relax_al["engine"]["metallic"] is True
    assert _rec(tmp_path, "1-element/Si/relax")["outputs"]["engine"]["metallic"] is False
    al = Structure.from_dict(relax_al["structure"])
    mesh = [int(np.ceil(b / 0.25)) for b in al.lattice.reciprocal_lattice.abc]
    scf_al = _rec(tmp_path, "1-element/Al/scf")
    assert scf_al["outputs"]["engine"]["kpoints"] == mesh
    assert scf_al["key_inputs"]["metallic"] is True
    assert _rec(tmp_path, "1-element/Si/scf")["outputs"]["engine"]["kpoints"] == [7, 7, 7]
    code, out, _ = cli("status", path, "--json")
    assert json.loads(out)["total"]["scfdone"] == 2
    assert cli("diff", path, "--exit-code")[0] == 0


def test_ladder_turns_electronic_nonconvergence_into_result(tmp_path, cli):
    # 8-atom Al: at mixing_beta 0.8 the SCF needs 7 iterations, at 0.64 only 5
    al8 = Structure(Lattice.cubic(4.05), ["Al"] * 4, [[0, 0, 0], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]])
    al8.make_supercell([2, 1, 1])
    # the relax accepts the cell as it is (huge pressure threshold, forces zero
    # by symmetry), so the SCF sees the 4.05 A cell those counts belong to
    path = _campaign(
        tmp_path,
        {"Al8": al8},
        {"pseudo": {"family": "debian", "files": {"Al": "Al.pz-vbc.UPF"}}, "ecutwfc_ry": 20, "kpoints": [4, 4, 4],
         "press_conv_thr_kbar": 1e5},
        scf_profile={"mixing_beta": 0.8, "electron_maxstep": 6},
    )
    code, _, err = cli("apply", path, "-q")
    assert code == 0, err
    relaxed = Structure.from_dict(_rec(tmp_path, "1-element/Al8/relax")["outputs"]["structure"])
    assert relaxed.lattice.a == pytest.approx(8.10, abs=1e-6)
    rec = _rec(tmp_path, "1-element/Al8/scf")
    assert rec["status"] == "done"
    assert [(a["status"], a["failure_code"]) for a in rec["attempts"]] == [("failed", "electronic_not_converged"), ("done", None)]
    # the electronic rung changes the mixing and raises the iteration cap together
    assert rec["attempts"][1]["intervention"] == "mixing_beta 0.8 -> 0.64, electron_maxstep 6 -> 12"
    assert rec["outputs"]["overrides"]["mixing_beta"] == 0.64 and rec["outputs"]["overrides"]["electron_maxstep"] == 12
    assert (tmp_path / "camp/q/1-element/Al8/scf/attempt-1/pw.out").exists()  # failed raw output kept


def test_pseudo_bytes_in_key_and_missing_element(tmp_path, cli):
    pseudo = tmp_path / "pp"
    pseudo.mkdir()
    shutil.copy(f"{DEBIAN}/Si.pbe-rrkj.UPF", pseudo)
    path = _campaign(tmp_path, {"Si": si()}, {"pseudo": {"dir": "pp"}, "ecutwfc_ry": 12, "kpoints": [2, 2, 2]})
    assert cli("apply", path, "-q")[0] == 0
    assert cli("diff", path, "--exit-code")[0] == 0
    with open(pseudo / "Si.pbe-rrkj.UPF", "a") as fh:
        fh.write("\n")
    code, out, _ = cli("diff", path, "--exit-code")
    assert code == 10
    assert "pseudopotential Si.pbe-rrkj.UPF md5" in out
    # a candidate with an element the folder lacks: outside the palette, screened out
    # (no screen stage here: the plan blocks it), never a campaign-wide exit
    al_dir = tmp_path / "s" / "1-element"
    al_prim().to(filename=str(al_dir / "Al.vasp"), fmt="poscar")
    code, out, err = cli("diff", path)
    assert code == 0 and out.startswith("palette (derived; qe covers 1): 1 elements: Si")
    code, _, err = cli("apply", path, "-q")
    assert code == 0, err
    assert not (tmp_path / "camp/q/1-element/Al/relax").exists()
    code, out, err = cli("diff", path, "--exit-code")
    assert code == 0 and "no_pseudopotential: Al" in out
    code, out, _ = cli("status", path, "-v")
    assert "screened_out" in out and "no_pseudopotential: Al" in out


@pytest.mark.slow
def test_si_elastic_constants_cubic_set_vs_six_pure_states(tmp_path, cli):
    # reference: PBE RRKJ (Debian Si.pbe-rrkj.UPF), 30 Ry, 6x6x6: 151.5, 55.0, 74.6 GPa (relaxed ions)
    path = _campaign(
        tmp_path,
        {"Si": si()},
        {"pseudo": {"family": "debian", "files": {"Si": "Si.pbe-rrkj.UPF"}}, "ecutwfc_ry": 30, "kpoints": [6, 6, 6]},
        stages=("relax", "scf"),
        elastic={"magnitudes": [-0.01, -0.005, 0.005, 0.01]},
    )
    code, _, err = cli("apply", path, "-q")
    assert code == 0, err
    o = _rec(tmp_path, "1-element/Si/elastic")["outputs"]
    c = np.array(o["tensor_voigt_gpa"])
    for got, ref in ((c[0, 0], 151.5), (c[0, 1], 55.0), (c[3, 3], 74.6)):
        assert got == pytest.approx(ref, rel=0.05)
    assert o["pass_pd"] and o["fit_rms_gpa"] < 0.5 and o["complete"]
    # the strain set is chosen by predicted k-points, not by the number of cells
    assert o["kpoints"] == [6, 6, 6] and o["n_cells"] == o["strain_set"]["n_cells"]
    assert o["strain_set"]["crystal_system"] == "cubic" and o["strain_set"]["n_constants"] == 3
    # the six pure states (24 cells) agree within 1%
    m = yaml.safe_load(path.read_text())
    m["stages"]["elastic"]["strain_set"] = "pure"
    path.write_text(yaml.safe_dump(m))
    assert cli("apply", path, "-q")[0] == 0
    o24 = _rec(tmp_path, "1-element/Si/elastic")["outputs"]
    assert o24["n_cells"] == 24
    c24 = np.array(o24["tensor_voigt_gpa"])
    for ij in ((0, 0), (0, 1), (3, 3)):
        assert c[ij] == pytest.approx(c24[ij], rel=0.01)
