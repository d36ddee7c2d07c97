"""`aimmat export handoff`: the package a collaborator receives, checked file by file."""

from __future__ import annotations

import hashlib
import json
import zipfile

import pytest
from pymatgen.analysis.structure_matcher import StructureMatcher
from pymatgen.core import Structure

from tests.helpers import emt_manifest, make_emt_campaign, tree_digest


@pytest.fixture(scope="module")
def campaign(tmp_path_factory, ):
    from click.testing import CliRunner

    from aimmat.cli.main import cli

    tmp = tmp_path_factory.mktemp("handoff")
    m = emt_manifest()
    m["stages"]["screen"] = {"density_max_g_cm3": 8.0}  # Au-containing cells are screened out
    path = make_emt_campaign(tmp, m)
    res = CliRunner().invoke(cli, ["apply", str(path), "-q", "--jobs", "1"])
    assert res.exit_code == 0, res.output
    return tmp, path


def _sums(folder):
    lines = (folder / "SHA256SUMS").read_text().splitlines()
    return {ln.split("  ", 1)[1]: ln.split("  ", 1)[0] for ln in lines}


def test_package_of_an_elastic_ready_candidate(campaign, cli):
    tmp, path = campaign
    code, out, err = cli("export", "handoff", path, "1-element/Al", "--zip")
    assert code == 0, err
    pkg = tmp / "camp/c/handoff/1-element/Al"
    assert f"wrote {pkg}/" in out
    files = {str(p.relative_to(pkg)) for p in pkg.rglob("*") if p.is_file()}
    sums = _sums(pkg)
    # every file but SHA256SUMS is listed, with its hash
    assert set(sums) == files - {"SHA256SUMS"}
    for rel, h in sums.items():
        assert hashlib.sha256((pkg / rel).read_bytes()).hexdigest() == h, rel
    for need in ("RATIONALE.md", "properties.json", "candidate.json", "elastic/fit.json", "elastic/tensor_voigt_gpa.csv",
                 "stages/relax/record.json", "stages/elastic/record.json", "stages/screen/record.json"):
        assert need in files, need
    assert any(f.startswith("stages/elastic/attempt-1/") for f in files)
    # structures round-trip: CIF, POSCAR and JSON all give the relaxed structure the elastic stage used
    relaxed = Structure.from_dict(json.loads((tmp / "camp/c/1-element/Al/relax/record.json").read_text())["outputs"]["structure"])
    for ext in ("cif", "POSCAR", "json"):
        s = Structure.from_file(pkg / f"structure/relaxed.{ext}")
        assert StructureMatcher(ltol=1e-4, stol=1e-4, angle_tol=1e-3, primitive_cell=False, scale=False).fit(s, relaxed), ext
        assert abs(s.volume - relaxed.volume) < 1e-3 * relaxed.volume
    props = json.loads((pkg / "properties.json").read_text())
    el = json.loads((tmp / "camp/c/1-element/Al/elastic/record.json").read_text())["outputs"]
    assert props["status"] == "elasticready" and props["computed"]["g_h_gpa"] == el["g_h_gpa"]
    assert props["gates"]["pass_fit_rms"]["threshold"] == 2.0 and props["gates"]["pass_both"] == el["pass_both"]
    rows = (pkg / "elastic/tensor_voigt_gpa.csv").read_text().splitlines()
    assert rows[0] == "row,c1,c2,c3,c4,c5,c6" and abs(float(rows[1].split(",")[1]) - el["tensor_voigt_gpa"][0][0]) < 1e-5
    text = (pkg / "RATIONALE.md").read_text()
    assert "# Al (1-element/Al)" in text and "## What is uncertain" in text and "not DFT" in text  # EMT, said plainly
    # the zip holds the same bytes; a second export gives identical files
    with zipfile.ZipFile(pkg.with_suffix(".zip")) as z:
        assert {n.split("/", 1)[1]: hashlib.sha256(z.read(n)).hexdigest() for n in z.namelist()} == \
            {**sums, "SHA256SUMS": hashlib.sha256((pkg / "SHA256SUMS").read_bytes()).hexdigest()}
    before = tree_digest(tmp / "camp/c/handoff")
    assert cli("export", "handoff", path, "1-element/Al", "--zip")[0] == 0
    assert tree_digest(tmp / "camp/c/handoff") == before
    # the campaign still reads as before: handoff/ is not a candidate set
    code, out, _ = cli("diff", path, "--exit-code")
    assert code == 0, out


def test_a_candidate_that_is_not_elastic_ready_is_refused_unless_partial(campaign, cli):
    tmp, path = campaign
    before = tree_digest(tmp / "camp")
    code, _, err = cli("export", "handoff", path, "2-element/CuAu")
    assert code == 4 and "screened_out" in err and "--partial" in err
    assert tree_digest(tmp / "camp") == before
    code, _, err = cli("export", "handoff", path, "2-element/CuAu", "--partial", "--out", tmp / "outside")
    assert code == 0, err
    pkg = tmp / "outside" / "2-element-CuAu"
    props = json.loads((pkg / "properties.json").read_text())
    assert props["status"] == "screened_out" and "computed" not in props
    assert (pkg / "structure/input.cif").is_file() and not (pkg / "elastic").exists()
    assert "No elastic tensor" in (pkg / "RATIONALE.md").read_text()
    assert tree_digest(tmp / "camp") == before  # --out writes nothing in the campaign


def test_unknown_candidate_and_a_symlinked_handoff_folder_are_refused(campaign, cli, tmp_path):
    tmp, path = campaign
    code, _, err = cli("export", "handoff", path, "1-element/Zz")
    assert code == 2 and "no candidate 'Zz'" in err
    code, _, err = cli("export", "handoff", path, "1-element")
    assert code == 2 and "SET/CANDIDATE" in err
    area = tmp / "camp/c/handoff"
    moved = tmp / "handoff-real"
    if area.exists():
        area.rename(moved)
    area.symlink_to(tmp_path)
    try:
        code, _, err = cli("export", "handoff", path, "1-element/Al")
        assert code == 4 and "symlink" in err
        assert list(tmp_path.iterdir()) == []
    finally:
        area.unlink()
        if moved.exists():
            moved.rename(area)


def test_zip_names_and_non_finite_numbers():
    # review findings: Al.v1 and Al.v2 both zipped to Al.zip; a NaN in a record was a traceback
    from pathlib import Path

    from aimmat.export.handoff import _json, _zip_path

    assert _zip_path(Path("h/s/Al.v1")) == Path("h/s/Al.v1.zip") and _zip_path(Path("h/s/Al")) == Path("h/s/Al.zip")
    assert json.loads(_json({"fit_rms_gpa": float("nan"), "x": [float("inf"), 1.5]})) == {"fit_rms_gpa": None, "x": [None, 1.5]}
