"""Candidate sources from files: globbing, format detection, candidate ids
(multi-frame extxyz, unsafe names), hashing, parsing, and error messages
that name the file."""

from __future__ import annotations

import hashlib
import json
import os
import re

import numpy as np
import pytest
from ase import Atoms
from ase.io import write as ase_write
from pymatgen.analysis.structure_matcher import StructureMatcher
from pymatgen.core import Lattice, Structure
from pymatgen.io.ase import AseAtomsAdaptor

from aimmat.errors import ManifestError
from aimmat.manifest.models import GeneratorSource
from aimmat.manifest.sources import (
    CandidateSource,
    GeneratedSource,
    detect_format,
    read_structure,
    resolve_files,
    resolve_generator,
)

SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")  # a folder name the manifest layer accepts

CU = Structure(Lattice([[0, 1.8, 1.8], [1.8, 0, 1.8], [1.8, 1.8, 0]]), ["Cu"], [[0, 0, 0]])
NACL = Structure(Lattice.cubic(5.64), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
GAN = Structure(Lattice.hexagonal(3.19, 5.19), ["Ga", "Ga", "N", "N"],
                [[1 / 3, 2 / 3, 0], [2 / 3, 1 / 3, 0.5], [1 / 3, 2 / 3, 0.377], [2 / 3, 1 / 3, 0.877]])


def _sha(path) -> str:
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def _frames():
    """Three distinct periodic frames: NaCl at three lattice constants."""
    out = []
    for a in (5.5, 5.6, 5.7):
        s = Structure(Lattice.cubic(a), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
        out.append(AseAtomsAdaptor.get_atoms(s))
    return out


@pytest.fixture
def folder(tmp_path):
    d = tmp_path / "structs"
    (d / "Fe").mkdir(parents=True)
    CU.to(filename=str(d / "Cu.cif"))
    NACL.to(filename=str(d / "NaCl.vasp"), fmt="poscar")
    (d / "GaN.json").write_text(json.dumps(GAN.as_dict()))
    ase_write(str(d / "one.xyz"), AseAtomsAdaptor.get_atoms(CU), format="extxyz")
    ase_write(str(d / "traj.extxyz"), _frames(), format="extxyz")
    Structure(Lattice.cubic(2.87), ["Fe", "Fe"], [[0, 0, 0], [0.5, 0.5, 0.5]]).to(
        filename=str(d / "Fe" / "POSCAR"), fmt="poscar")
    return tmp_path


def _by_id(cands):
    return {c.cand_id: c for c in cands}


def test_formats_detected_ids_hashes_and_paths(folder):
    cands = resolve_files("s", ["structs/*", "structs/*/POSCAR"], "auto", folder, "candidate_sets.0.source")
    got = _by_id(cands)
    assert set(got) == {"Cu", "NaCl", "GaN", "one", "traj-0000", "traj-0001", "traj-0002", "Fe"}
    expect_fmt = {"Cu": "cif", "NaCl": "poscar", "GaN": "json", "one": "extxyz", "traj-0001": "extxyz", "Fe": "poscar"}
    for cid, fmt in expect_fmt.items():
        assert got[cid].fmt == fmt, cid
    for c in cands:
        assert isinstance(c, CandidateSource) and c.set_name == "s"
        assert os.path.isabs(c.file) and c.path.exists()
        assert c.relpath == os.path.relpath(c.file, folder)  # recorded relative to the manifest folder
        assert c.sha256 == _sha(c.file)
        assert SAFE_ID.match(c.cand_id)
    assert got["Fe"].relpath == os.path.join("structs", "Fe", "POSCAR")  # POSCAR: the id is its folder's name
    # glob order: sorted paths within each pattern
    first = [c.relpath for c in cands if c.cand_id != "Fe"]
    assert first == sorted(first)


def test_multi_frame_extxyz_gives_one_candidate_per_frame(folder):
    cands = resolve_files("s", ["structs/*.extxyz", "structs/*.xyz"], "auto", folder, "w")
    got = _by_id(cands)
    assert [got[f"traj-{i:04d}"].frame for i in range(3)] == [0, 1, 2]
    assert got["one"].frame is None  # a single frame keeps the plain id
    assert {got[f"traj-{i:04d}"].sha256 for i in range(3)} == {_sha(folder / "structs/traj.extxyz")}
    prov = got["traj-0002"].provenance()
    assert prov == {"kind": "file", "path": os.path.join("structs", "traj.extxyz"), "sha256": _sha(folder / "structs/traj.extxyz"),
                    "format": "extxyz", "frame": 2}
    # each candidate parses to its own frame
    for i, a in enumerate((5.5, 5.6, 5.7)):
        s = read_structure(got[f"traj-{i:04d}"])
        assert s.lattice.a == pytest.approx(a) and s.composition.reduced_formula == "NaCl"


def test_every_format_parses_back_to_the_written_structure(folder):
    got = _by_id(resolve_files("s", ["structs/*", "structs/*/POSCAR"], "auto", folder, "w"))
    m = StructureMatcher()
    assert m.fit(read_structure(got["Cu"]), CU)
    assert m.fit(read_structure(got["NaCl"]), NACL)
    assert m.fit(read_structure(got["GaN"]), GAN)
    assert m.fit(read_structure(got["one"]), CU)
    fe = read_structure(got["Fe"])
    assert fe.composition.reduced_formula == "Fe" and fe.lattice.a == pytest.approx(2.87)
    # exact for the formats that keep the cell as written
    g = read_structure(got["GaN"])
    assert np.allclose(g.lattice.matrix, GAN.lattice.matrix) and np.allclose(g.frac_coords, GAN.frac_coords)


def test_unsafe_file_names_give_safe_distinct_ids(tmp_path):
    names = ["my file (1).cif", "-odd-.cif", "a+b=c.CIF", "ünïcode.cif", "x.y.cif", "Mg_2.cif", "UPPER.Cif"]
    for n in names:
        CU.to(filename=str(tmp_path / n), fmt="cif")
    got = _by_id(resolve_files("s", ["*"], "auto", tmp_path, "w"))
    assert set(got) == {"my_file_1", "odd", "a_b_c", "n_code", "x.y", "Mg_2", "UPPER"}
    for cid, c in got.items():
        assert SAFE_ID.match(cid) and cid not in (".", ".."), cid
        assert c.fmt == "cif"


def test_long_names_are_cut_to_100_characters(tmp_path):
    CU.to(filename=str(tmp_path / ("x" * 150 + ".cif")), fmt="cif")
    CU.to(filename=str(tmp_path / ("y" * 99 + "é.cif")), fmt="cif")  # non-ASCII: the slow path
    got = resolve_files("s", ["*.cif"], "auto", tmp_path, "w")
    assert sorted(c.cand_id for c in got) == ["x" * 100, "y" * 99]
    assert all(SAFE_ID.match(c.cand_id) for c in got)


def test_name_without_any_usable_character_is_refused(tmp_path):
    CU.to(filename=str(tmp_path / "___.cif"), fmt="cif")
    with pytest.raises(ManifestError) as e:
        resolve_files("s", ["*.cif"], "auto", tmp_path, "candidate_sets.3.source")
    assert "candidate_sets.3.source" in str(e.value) and "___.cif" in str(e.value)


def test_same_id_from_two_files_is_refused_naming_both(tmp_path):
    CU.to(filename=str(tmp_path / "Cu.cif"), fmt="cif")
    CU.to(filename=str(tmp_path / "Cu.vasp"), fmt="poscar")
    with pytest.raises(ManifestError) as e:
        resolve_files("s", ["*"], "auto", tmp_path, "candidate_sets.0.source")
    msg = str(e.value)
    assert "duplicate candidate id 'Cu'" in msg and "Cu.cif" in msg and "Cu.vasp" in msg
    assert "candidate_sets.0.source" in msg and e.value.exit_code == 3


def test_frame_ids_colliding_with_a_file_are_refused(tmp_path):
    ase_write(str(tmp_path / "t.extxyz"), _frames()[:2], format="extxyz")
    CU.to(filename=str(tmp_path / "t-0001.cif"), fmt="cif")
    with pytest.raises(ManifestError, match="duplicate candidate id 't-0001'"):
        resolve_files("s", ["*"], "auto", tmp_path, "w")


def test_a_file_matched_by_two_patterns_is_one_candidate(folder):
    cands = resolve_files("s", ["structs/*.cif", "structs/Cu.cif", "structs/C*.cif"], "auto", folder, "w")
    assert [c.cand_id for c in cands] == ["Cu"]


def test_glob_skips_folders_and_hidden_files_and_supports_recursion(tmp_path):
    (tmp_path / "a" / "deep").mkdir(parents=True)
    (tmp_path / "a" / "dir.cif").mkdir()  # a folder matching the pattern is not a candidate
    CU.to(filename=str(tmp_path / "a" / ".hidden.cif"), fmt="cif")
    CU.to(filename=str(tmp_path / "a" / "top.cif"), fmt="cif")
    CU.to(filename=str(tmp_path / "a" / "deep" / "low.cif"), fmt="cif")
    assert [c.cand_id for c in resolve_files("s", ["a/*.cif"], "auto", tmp_path, "w")] == ["top"]
    assert sorted(c.cand_id for c in resolve_files("s", ["a/**/*.cif"], "auto", tmp_path, "w")) == ["low", "top"]
    assert [c.cand_id for c in resolve_files("s", ["a/.*.cif"], "auto", tmp_path, "w")] == ["hidden"]
    assert [c.cand_id for c in resolve_files("s", ["a/d*/*.cif"], "auto", tmp_path, "w")] == ["low"]


def test_absolute_patterns_outside_the_manifest_folder_keep_absolute_paths(tmp_path):
    outside = tmp_path / "data"
    outside.mkdir()
    CU.to(filename=str(outside / "Cu.cif"), fmt="cif")
    base = tmp_path / "manifests"
    base.mkdir()
    (c,) = resolve_files("s", [str(outside / "*.cif")], "auto", base, "w")
    assert c.relpath == str(outside / "Cu.cif") and c.file == str(outside / "Cu.cif")
    (c2,) = resolve_files("s", ["../data/*.cif"], "auto", base, "w")
    assert c2.file == str(outside / "Cu.cif") and c2.cand_id == "Cu"


def test_pattern_matching_nothing_names_pattern_and_folder(tmp_path):
    with pytest.raises(ManifestError) as e:
        resolve_files("s", ["nowhere/*.cif"], "auto", tmp_path, "candidate_sets.1.source")
    msg = str(e.value)
    assert "nowhere/*.cif" in msg and str(tmp_path) in msg and "candidate_sets.1.source" in msg
    with pytest.raises(ManifestError, match="missing.cif"):
        resolve_files("s", ["missing.cif"], "auto", tmp_path, "w")


def test_hasher_is_asked_for_each_file_with_its_stat(folder):
    seen = {}

    def hasher(path, st):
        seen[path] = st.st_size
        return "f" * 64

    cands = resolve_files("s", ["structs/*.cif", "structs/*.vasp"], "auto", folder, "w", hasher=hasher)
    assert all(c.sha256 == "f" * 64 for c in cands)
    assert {os.path.basename(p): size for p, size in seen.items()} == {
        "Cu.cif": (folder / "structs/Cu.cif").stat().st_size, "NaCl.vasp": (folder / "structs/NaCl.vasp").stat().st_size}


def test_declared_format_overrides_the_file_name(tmp_path):
    NACL.to(filename=str(tmp_path / "NaCl.txt"), fmt="poscar")
    (c,) = resolve_files("s", ["*.txt"], "poscar", tmp_path, "w")
    assert c.fmt == "poscar" and c.cand_id == "NaCl.txt"
    assert StructureMatcher().fit(read_structure(c), NACL)
    with pytest.raises(ManifestError) as e:
        resolve_files("s", ["*.txt"], "auto", tmp_path, "w")
    assert "NaCl.txt" in str(e.value) and "cannot tell the structure format" in str(e.value)


@pytest.mark.parametrize("name, fmt", [("POSCAR", "poscar"), ("CONTCAR", "poscar"), ("POSCAR_relaxed", "poscar"),
                                       ("contcar.final", "poscar"), ("x.CIF", "cif"), ("x.vasp", "poscar"),
                                       ("x.poscar", "poscar"), ("x.extxyz", "extxyz"), ("x.xyz", "extxyz"),
                                       ("x.json", "json")])
def test_detect_format(tmp_path, name, fmt):
    assert detect_format(tmp_path / name, "auto") == fmt
    assert detect_format(tmp_path / name, "json") == "json"  # a declared format wins


def test_detect_format_refuses_unknown_suffix_naming_the_file(tmp_path):
    with pytest.raises(ManifestError) as e:
        detect_format(tmp_path / "structure.pdb", "auto")
    assert str(tmp_path / "structure.pdb") in str(e.value) and e.value.fix


def test_extxyz_without_atom_count_names_file_and_line(tmp_path):
    ase_write(str(tmp_path / "t.extxyz"), _frames()[:1], format="extxyz")
    text = (tmp_path / "t.extxyz").read_text()
    (tmp_path / "t.extxyz").write_text(text + "garbage line\n")
    with pytest.raises(ManifestError) as e:
        resolve_files("s", ["*.extxyz"], "auto", tmp_path, "w")
    n_lines = len(text.splitlines())
    assert f"t.extxyz:{n_lines + 1}:" in str(e.value) and "garbage line" in str(e.value)


def test_empty_extxyz_is_refused_naming_the_file(tmp_path):
    (tmp_path / "empty.extxyz").write_text("\n\n")
    with pytest.raises(ManifestError) as e:
        resolve_files("s", ["*.extxyz"], "auto", tmp_path, "w")
    assert "empty.extxyz" in str(e.value) and "no frame" in str(e.value)


def _src(path, fmt, frame=None, cid="bad"):
    return CandidateSource("s", cid, str(path), path.name, _sha(path), fmt, frame)


@pytest.mark.parametrize("fmt, text", [
    ("cif", "data_x\n_cell_length_a 3\n"),
    ("json", "{not json"),
    ("json", json.dumps({"lattice": "nope"})),
    ("poscar", "just one line\n"),
    ("extxyz", "2\ncomment\nCu 0 0 0\n"),
])
def test_unreadable_files_are_refused_naming_file_and_candidate(tmp_path, fmt, text):
    path = tmp_path / f"broken.{fmt}"
    path.write_text(text)
    with pytest.raises(ManifestError) as e:
        read_structure(_src(path, fmt))
    msg = str(e.value)
    assert str(path) in msg and "s/bad" in msg and f"cannot read {fmt} structure" in msg


def test_non_periodic_extxyz_frame_is_refused_naming_the_frame(tmp_path):
    frames = _frames()
    frames[1] = Atoms("NaCl", positions=[[0, 0, 0], [2.8, 0, 0]])  # a molecule, no cell
    ase_write(str(tmp_path / "mixed.extxyz"), frames, format="extxyz")
    cands = _by_id(resolve_files("s", ["*.extxyz"], "auto", tmp_path, "w"))
    assert read_structure(cands["mixed-0000"]).composition.reduced_formula == "NaCl"
    with pytest.raises(ManifestError) as e:
        read_structure(cands["mixed-0001"])
    assert f"{tmp_path / 'mixed.extxyz'} frame 1" in str(e.value) and "periodic" in str(e.value)


def test_degenerate_cell_is_refused(tmp_path):
    tiny = Structure(Lattice.cubic(0.3), ["H"], [[0, 0, 0]])
    path = tmp_path / "tiny.json"
    path.write_text(json.dumps(tiny.as_dict()))
    with pytest.raises(ManifestError) as e:
        read_structure(_src(path, "json"))
    assert str(path) in str(e.value) and "not a crystal cell" in str(e.value)


def test_generator_sources_have_stable_ids_and_provenance(tmp_path):
    ck = tmp_path / "m.pt"
    ck.write_bytes(b"checkpoint")
    src = GeneratorSource(kind="generator", model="m", count=3, seed=7)
    got = resolve_generator("gen", 2, src, ck, "m.pt", "a" * 64)
    assert [g.cand_id for g in got] == ["g7-00000", "g7-00001", "g7-00002"]
    assert [g.frame for g in got] == [0, 1, 2] and all(isinstance(g, GeneratedSource) for g in got)
    assert all(SAFE_ID.match(g.cand_id) for g in got)
    p = got[2].provenance()
    assert p == {"kind": "generator", "model": "m", "checkpoint": "m.pt", "checkpoint_sha256": "a" * 64, "seed": 7,
                 "index": 2, "n_elements": 2, "schedule": None}
    # raising the count keeps the earlier candidates exactly
    more = resolve_generator("gen", 2, GeneratorSource(kind="generator", model="m", count=5, seed=7), ck, "m.pt", "a" * 64)
    assert more[:3] == got
    sch = GeneratorSource(kind="generator", model="m", count=1, seed=0, schedule={"levels": 3, "steps": 2})
    (g,) = resolve_generator("gen", 2, sch, ck, "m.pt", "a" * 64)
    assert g.provenance()["schedule"] == {"levels": 3, "steps": 2, "step_lr": 1e-4, "min_separation": 0.5}
    assert g != got[0] and g.fmt == "generator"
