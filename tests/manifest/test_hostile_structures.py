"""Hostile structure files (found by an outside harness) are refused at
import: a ManifestError (exit 3) that names the file and the manifest key
``candidate_sets.<i>.source``, before anything is written, for diff and
apply alike. Also: globs that reach system folders, or match files that are
not structures, name ``candidate_sets.<i>.source.glob``."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest
import yaml

from aimmat.errors import ManifestError
from aimmat.manifest import structure_checks
from aimmat.manifest.sources import CandidateSource, read_structure, resolve_files
from tests.helpers import emt_manifest, make_emt_campaign, tree_digest

_CIF_HEAD = """data_{name}
_cell_length_a {a}
_cell_length_b {a}
_cell_length_c {a}
_cell_angle_alpha 90
_cell_angle_beta 90
_cell_angle_gamma 90
_symmetry_space_group_name_H-M 'P 1'
loop_
_symmetry_equiv_pos_as_xyz
'x, y, z'
loop_
_atom_site_label
_atom_site_type_symbol
_atom_site_fract_x
_atom_site_fract_y
_atom_site_fract_z
_atom_site_occupancy
"""


def _cif(name: str, a: float, sites: str) -> str:
    return _CIF_HEAD.format(name=name, a=a) + sites


DISORDERED_CIF = _cif("CuAu", 3.75, "Cu1 Cu 0 0 0 0.5\nAu1 Au 0 0 0 0.5\nCu2 Cu 0.5 0.5 0.5 1.0\n")
UNKNOWN_ELEMENT_CIF = _cif("Xx", 3.6, "Xx1 Xx 0 0 0 1.0\n")
TWO_BLOCK_CIF = _cif("A", 3.6, "Cu1 Cu 0 0 0 1.0\n") + _cif("B", 4.05, "Al1 Al 0 0 0 1.0\n")
VACANCY_CIF = _cif("Cu_half", 3.6, "Cu1 Cu 0 0 0 0.5\n")
NAN_POSCAR = "Cu\n1.0\n3.6 0 0\n0 3.6 0\n0 0 3.6\nCu\n2\ndirect\n0 0 0\nnan 0.5 0.5\n"
EXTRA_POSITIONS_POSCAR = "Cu\n1.0\n3.6 0 0\n0 3.6 0\n0 0 3.6\nCu\n2\ndirect\n0 0 0\n0.5 0.5 0\n0.5 0 0.5\n0 0.5 0.5\n"
INF_LATTICE_POSCAR = "Cu\n1.0\ninf 0 0\n0 3.6 0\n0 0 3.6\nCu\n1\ndirect\n0 0 0\n"
SINGULAR_POSCAR = "Cu\n1.0\n3.6 0 0\n7.2 0 0\n0 0 3.6\nCu\n1\ndirect\n0 0 0\n"
FLAT_POSCAR = "Cu\n1.0\n100 0 0\n0 100 0\n100 0 0.001\nCu\n1\ndirect\n0 0 0\n"  # volume 10 A^3, angle ~0
NO_SYMBOLS_POSCAR = "Cu\n1.0\n3.6 0 0\n0 3.6 0\n0 0 3.6\n1\ndirect\n0 0 0\n"  # VASP 4: pymatgen would say H
CONTCAR_WITH_VELOCITIES = ("Cu\n1.0\n3.6 0 0\n0 3.6 0\n0 0 3.6\nCu\n2\ndirect\n0 0 0\n0.5 0.5 0.5\n"
                           "\n0.001 0 0\n0 0.001 0\n")  # after the blank line: velocities, not positions
_LATTICE = 'Lattice="3.6 0 0 0 3.6 0 0 0 3.6" Properties=species:S:1:pos:R:3 pbc="T T T"'
NAN_EXTXYZ = f"2\n{_LATTICE}\nCu 0 0 0\nCu nan 1.8 1.8\n"
DUMMY_EXTXYZ = f"1\n{_LATTICE}\nX 0 0 0\n"


def _json_structure(**over) -> str:
    d = {"@module": "pymatgen.core.structure", "@class": "Structure", "charge": 0, "properties": {},
         "lattice": {"matrix": [[3.6, 0, 0], [0, 3.6, 0], [0, 0, 3.6]], "pbc": [True, True, True]},
         "sites": [{"species": [{"element": "Cu", "occu": 1}], "abc": [0, 0, 0], "label": "Cu", "properties": {}}]}
    d.update(over)
    return json.dumps(d)


def _poscar_many(n: int) -> str:
    side = 30.0
    k = round(n ** (1 / 3)) + 1
    pos = [f"{i / k} {j / k} {m / k}" for i in range(k) for j in range(k) for m in range(k)][:n]
    return f"big\n1.0\n{side} 0 0\n0 {side} 0\n0 0 {side}\nCu\n{n}\ndirect\n" + "\n".join(pos) + "\n"


WHERE = "m.yaml: candidate_sets.4.source"

# name: (file name, text, format, words the message must hold)
PARSE_CASES = {
    "disordered cif": ("CuAu.cif", DISORDERED_CIF, "cif",
                       ["disordered", "1 of 2 site(s) are partially occupied", "OrderDisorderedStructureTransformation"]),
    "vacancy (occupancy 0.5)": ("Cu_half.cif", VACANCY_CIF, "cif", ["1 of 1 site(s) are partially occupied"]),
    "unknown element Xx": ("Xx.cif", UNKNOWN_ELEMENT_CIF, "cif", ["not elements: Xx"]),
    "two data blocks": ("two.cif", TWO_BLOCK_CIF, "cif", ["holds 2 structure blocks", "data_A", "data_B", "split"]),
    "nan coordinate": ("nan.vasp", NAN_POSCAR, "poscar", ["non-finite coordinates", "site 2"]),
    "more positions than atoms": ("extra.vasp", EXTRA_POSITIONS_POSCAR, "poscar",
                                  ["declares 2 atom(s)", "lists 4 position lines"]),
    "inf lattice": ("inf.vasp", INF_LATTICE_POSCAR, "poscar", ["lattice has non-finite values"]),
    "singular lattice": ("sing.vasp", SINGULAR_POSCAR, "poscar", ["not a crystal cell", "singular or degenerate"]),
    "flat lattice": ("flat.vasp", FLAT_POSCAR, "poscar", ["not a crystal cell"]),
    "no element symbols": ("v4.vasp", NO_SYMBOLS_POSCAR, "poscar", ["names no elements"]),
    "too many atoms": ("big.vasp", _poscar_many(1001), "poscar", ["1001 atoms, more than 1000"]),
    "nan in json lattice": ("nanlat.json", _json_structure(lattice={"matrix": [[float("nan"), 0, 0], [0, 3.6, 0],
                                                                               [0, 0, 3.6]]}),
                            "json", ["non-finite"]),
    "dummy species in json": ("dummy.json", _json_structure(
        sites=[{"species": [{"element": "X", "oxidation_state": 0.0, "occu": 1}], "abc": [0, 0, 0], "label": "X0+",
                "properties": {}}]),
        "json", ["not elements: X"]),
    "zero atoms in json": ("empty.json", _json_structure(sites=[]), "json", ["empty.json"]),
    "nan in extxyz": ("nan.extxyz", NAN_EXTXYZ, "extxyz", ["non-finite coordinates"]),
    "dummy in extxyz": ("dummy.extxyz", DUMMY_EXTXYZ, "extxyz", ["not elements: X"]),
}


def _src(path: Path, fmt: str) -> CandidateSource:
    return CandidateSource("s", path.stem, str(path), path.name, hashlib.sha256(path.read_bytes()).hexdigest(), fmt, None)


@pytest.mark.parametrize("case", sorted(PARSE_CASES))
def test_hostile_file_is_refused_naming_file_and_key(case, tmp_path):
    name, text, fmt, words = PARSE_CASES[case]
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(ManifestError) as e:
        read_structure(_src(path, fmt), where=WHERE)
    msg = str(e.value)
    assert e.value.exit_code == 3
    assert str(path) in msg and "candidate_sets.4.source" in msg, msg
    for w in words:
        assert w in msg, (w, msg)


def test_disorder_message_counts_sites_and_suggests_ordering(tmp_path):
    sites = "".join(f"Cu{i} Cu {i / 4} 0 0 0.75\n" for i in range(3)) + "Au1 Au 0.75 0 0 1.0\n"
    path = tmp_path / "dis.cif"
    path.write_text(_cif("dis", 8.0, sites))
    with pytest.raises(ManifestError) as e:
        read_structure(_src(path, "cif"), where=WHERE)
    assert "3 of 4 site(s) are partially occupied" in e.value.message
    assert "OrderDisorderedStructureTransformation" in e.value.fix


def test_ordered_files_that_look_odd_still_parse(tmp_path):
    """What the checks must not refuse: velocities after a CONTCAR's blank
    line, a metadata-only CIF block beside the structure, 1000 atoms."""
    p = tmp_path / "CONTCAR"
    p.write_text(CONTCAR_WITH_VELOCITIES)
    assert len(read_structure(_src(p, "poscar"), where=WHERE)) == 2
    p = tmp_path / "global.cif"
    p.write_text("data_global\n_journal_name_full 'J'\n" + _cif("Cu", 3.6, "Cu1 Cu 0 0 0 1.0\n"))
    assert read_structure(_src(p, "cif"), where=WHERE).composition.reduced_formula == "Cu"
    p = tmp_path / "big.vasp"
    p.write_text(_poscar_many(1000))
    assert len(read_structure(_src(p, "poscar"))) == 1000


def test_oversized_file_is_refused_before_parsing(tmp_path, monkeypatch):
    monkeypatch.setattr(structure_checks, "MAX_FILE_BYTES", 100)
    path = tmp_path / "Cu.cif"
    path.write_text(_cif("Cu", 3.6, "Cu1 Cu 0 0 0 1.0\n"))
    with pytest.raises(ManifestError) as e:
        read_structure(_src(path, "cif"), where=WHERE)
    assert str(path) in str(e.value) and "MiB" in str(e.value) and "candidate_sets.4.source" in str(e.value)


# --- globs -----------------------------------------------------------------


def test_relative_glob_climbing_to_the_filesystem_root_is_refused(tmp_path):
    pattern = "../" * (len(tmp_path.parts) + 3) + "etc/*"
    with pytest.raises(ManifestError) as e:
        resolve_files("s", [pattern], "auto", tmp_path, "m.yaml:7: candidate_sets.0.source")
    msg = str(e.value)
    assert "candidate_sets.0.source.glob" in msg and pattern in msg and "climbs out" in msg and e.value.exit_code == 3


def test_relative_glob_to_a_sibling_folder_and_absolute_globs_keep_working(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "manifests").mkdir()
    (tmp_path / "data" / "Cu.cif").write_text(_cif("Cu", 3.6, "Cu1 Cu 0 0 0 1.0\n"))
    (c,) = resolve_files("s", ["../data/*.cif"], "auto", tmp_path / "manifests", "w")
    assert c.file == str(tmp_path / "data" / "Cu.cif")
    (c,) = resolve_files("s", [str(tmp_path / "data" / "*.cif")], "auto", tmp_path / "manifests", "w")
    assert c.file == str(tmp_path / "data" / "Cu.cif")


@pytest.mark.skipif(not os.path.isfile("/etc/passwd"), reason="needs a Unix /etc")
def test_absolute_glob_into_a_system_folder_names_the_key_and_a_file():
    with pytest.raises(ManifestError) as e:
        resolve_files("s", ["/etc/*"], "auto", Path("/tmp"), "m.yaml:7: candidate_sets.1.source")
    msg = str(e.value)
    assert "candidate_sets.1.source.glob" in msg and "/etc/" in msg and "'/etc/*'" in msg, msg


def test_glob_matching_a_file_without_structure_suffix_names_the_key(tmp_path):
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / "Cu.cif").write_text(_cif("Cu", 3.6, "Cu1 Cu 0 0 0 1.0\n"))
    (tmp_path / "s" / "README").write_text("not a structure\n")
    with pytest.raises(ManifestError) as e:
        resolve_files("s", ["s/*.cif", "s/*"], "auto", tmp_path, "m.yaml:7: candidate_sets.2.source")
    msg = str(e.value)
    assert "candidate_sets.2.source.glob" in msg and "README" in msg and "'s/*'" in msg, msg


def test_unreadable_match_names_the_key_and_file(tmp_path):
    (tmp_path / "Cu.cif").write_text("x")

    def hasher(path, st):
        raise PermissionError(13, "Permission denied")

    with pytest.raises(ManifestError) as e:
        resolve_files("s", ["*.cif"], "auto", tmp_path, "m.yaml:7: candidate_sets.0.source", hasher=hasher)
    assert "candidate_sets.0.source.glob" in str(e.value) and "Cu.cif" in str(e.value)


@pytest.mark.timeout(20)  # the frame counter looped forever on a negative count
@pytest.mark.parametrize("text, line", [
    ("-2\nx\n", 1),  # a negative atom count
    (f"2\n{_LATTICE}\nCu 0 0 0\nCu 1.8 1.8 0\nCu 1.8 0 1.8\nCu 0 1.8 1.8\n", 5),  # 2 declared, 4 listed
])
def test_extxyz_bad_atom_counts_are_refused_naming_key_file_and_line(tmp_path, text, line):
    (tmp_path / "t.extxyz").write_text(text)
    with pytest.raises(ManifestError) as e:
        resolve_files("s", ["*.extxyz"], "auto", tmp_path, "m.yaml:7: candidate_sets.0.source")
    assert "candidate_sets.0.source.glob" in str(e.value) and f"t.extxyz:{line}:" in str(e.value)


# --- the CLI: exit 3, the folder untouched, diff and apply alike -------------------


@pytest.fixture(scope="module")
def applied(tmp_path_factory):
    from aimmat.cli.main import run

    tmp = tmp_path_factory.mktemp("hostile")
    path = make_emt_campaign(tmp, emt_manifest(stages=("screen",)))
    assert run(["apply", str(path), "-q"]) == 0
    return tmp


# name: (files written to structures/hostile/, the third set's glob and format, words in the message)
CLI_CASES = {
    "disordered cif": ({"CuAu_dis.cif": DISORDERED_CIF}, "*.cif", "auto", ["partially occupied"]),
    "unknown element": ({"Xx.cif": UNKNOWN_ELEMENT_CIF}, "*.cif", "auto", ["not elements: Xx"]),
    "nan coordinate": ({"nan.vasp": NAN_POSCAR}, "*.vasp", "auto", ["non-finite coordinates"]),
    "more positions than atoms": ({"extra.vasp": EXTRA_POSITIONS_POSCAR}, "*.vasp", "auto", ["declares 2 atom(s)"]),
    "two data blocks": ({"two.cif": TWO_BLOCK_CIF}, "*.cif", "auto", ["holds 2 structure blocks"]),
    "not structures, auto format": ({"notes.txt": "hello\n"}, "*", "auto", ["notes.txt", ".source.glob"]),
    "not structures, declared format": ({"passwd": "root:x:0:0:root:/root:/bin/bash\n"}, "*", "cif",
                                        ["passwd", ".source.glob"]),
}


@pytest.mark.parametrize("case", sorted(CLI_CASES))
@pytest.mark.parametrize("command", ["diff", "apply"])
def test_hostile_file_exits_3_and_writes_nothing(case, command, applied, tmp_path, cli):
    work = tmp_path / "w"
    shutil.copytree(applied, work)
    before = tree_digest(work / "camp")
    files, glob, fmt, words = CLI_CASES[case]
    (work / "structures" / "hostile").mkdir()
    for name, text in files.items():
        (work / "structures" / "hostile" / name).write_text(text)
    m = emt_manifest(stages=("screen",))
    m["candidate_sets"].append({"name": "hostile", "elements": 2, "check_elements": False,
                                "source": {"kind": "files", "glob": f"structures/hostile/{glob}", "format": fmt}})
    path = work / "m.yaml"
    path.write_text(yaml.safe_dump(m, sort_keys=False))
    code, out, err = cli(command, path)
    assert code == 3, (case, out, err)
    assert "candidate_sets.2.source" in err and str(work / "structures" / "hostile") in err, err
    for w in words:
        assert w in err, (w, err)
    assert tree_digest(work / "camp") == before


@pytest.mark.parametrize("command", ["diff", "apply"])
def test_glob_climbing_into_a_system_folder_exits_3_and_writes_nothing(command, applied, tmp_path, cli):
    work = tmp_path / "w"
    shutil.copytree(applied, work)
    before = tree_digest(work / "camp")
    m = emt_manifest(stages=("screen",))
    m["candidate_sets"][1]["source"]["glob"] = "../" * (len(work.parts) + 3) + "usr/share/*"
    path = work / "m.yaml"
    path.write_text(yaml.safe_dump(m, sort_keys=False))
    code, _, err = cli(command, path)
    assert code == 3 and "candidate_sets.1.source.glob" in err and "climbs out" in err, err
    assert tree_digest(work / "camp") == before
