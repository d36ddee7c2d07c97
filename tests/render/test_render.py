"""Claim guardrails and reproducible, hashed outputs."""

from __future__ import annotations

import json

import pytest

import yaml

from tests.helpers import ROOT, emt_manifest, make_emt_campaign, tree_digest


def _campaign(tmp_path, cli, templates):
    m = emt_manifest(stages=("screen", "relax", "scf", "elastic"))
    path = make_emt_campaign(tmp_path, m)
    assert cli("apply", path, "-q", "--jobs", 1)[0] == 0
    m["render"] = [{"template": str(t)} for t in templates]  # after apply: apply renders declared targets itself
    path.write_text(yaml.safe_dump(m))
    return path


def test_render_twice_same_bytes_with_hashes_and_lock(tmp_path, cli):
    tpl = sorted((ROOT / "templates").glob("*.j2"))
    path = _campaign(tmp_path, cli, tpl)
    code, out, err = cli("render", path)
    assert code == 0, err
    man = tmp_path / "camp/c/manuscript"
    first = tree_digest(man)
    assert cli("render", path)[0] == 0
    assert tree_digest(man) == first
    lock = json.loads((man / "render.lock.json").read_text())
    figs = {f"manuscript/figures/{n}.{e}" for n in ("status_by_set", "failure_taxonomy", "fit_rms", "campaign_workflow")
            for e in ("png", "pdf")}  # Figure 1 always; Figure 2 only with a model
    assert {o["path"] for o in lock["outputs"]} == {f"manuscript/{t.name[:-3]}" for t in tpl} | figs
    assert all(o["sha256"] for o in lock["outputs"])
    assert lock["packages"]["pymatgen"] and lock["command"][:2] == ["aimmat", "render"]
    snap = (tmp_path / "camp/c/evidence/snapshot.json").read_text()
    assert lock["snapshot_sha256"] in (man / "validated.md").read_text().splitlines()[0]
    assert (man / "validated.tex").read_text().startswith("% aimmat")
    assert "\\toprule" in (man / "validated.tex").read_text()
    assert json.loads((man / "validated.csv.sha256.json").read_text())["provenance"].startswith("aimmat")
    assert json.loads(snap)["scopes"]["validated"]["n"] == 5
    assert "| 1-element | Cu | Cu |" in (man / "validated.md").read_text()


def test_a_validated_template_cannot_print_project_scale_numbers(tmp_path, cli):
    bad = tmp_path / "mixed.md.j2"
    bad.write_text("{#- scope: validated -#}\n{{ validated.pass_both }} of {{ validated.n }} pass,\nout of {{ public.generated }} generated\n")
    path = _campaign(tmp_path, cli, [bad])
    before = tree_digest(tmp_path / "camp")
    code, _, err = cli("render", path)
    assert code == 3
    assert "mixed.md.j2:3" in err and "'public' is undefined" in err and "reads only 'validated'" in err
    assert tree_digest(tmp_path / "camp") == before  # nothing written


def test_a_missing_value_through_a_filter_is_a_clear_error(tmp_path, cli):
    # formatting an undefined value used to escape as a bare TypeError with a traceback
    bad = tmp_path / "typo.md.j2"
    bad.write_text("{#- scope: validated -#}\nrate\n{{ validated.pass_bth_rate | pct }} and {{ validated.n | f('.1f') }}\n")
    worse = tmp_path / "kind.md.j2"
    worse.write_text("{#- scope: validated -#}\n{{ validated.dedup_keys | f('.1f') }}\n")
    for tpl, line, words in ((bad, 3, "has no attribute 'pass_bth_rate'"), (worse, 2, "TypeError")):
        path = _campaign(tmp_path, cli, [tpl])
        before = tree_digest(tmp_path / "camp")
        code, _, err = cli("render", path)
        assert code == 3, err
        assert f"{tpl.name}:{line}" in err and words in err and "Traceback" not in err
        assert tree_digest(tmp_path / "camp") == before


def test_template_must_declare_one_scope(tmp_path, cli):
    bad = tmp_path / "plain.md.j2"
    bad.write_text("{{ validated.n }}\n")
    path = _campaign(tmp_path, cli, [bad])
    code, _, err = cli("render", path)
    assert code == 3 and "plain.md.j2:1: template must declare its scope" in err
    assert cli("apply", path, "-q")[0] == 3  # found at load, before any stage runs
    m = yaml.safe_load(path.read_text())
    m["render"] = [{"template": str(ROOT / "templates/validated.md.j2"), "scope": "public"}]
    path.write_text(yaml.safe_dump(m))
    code, _, err = cli("render", path)
    assert code == 3 and "declares 'validated'" in err


def test_changing_one_record_changes_snapshot_and_every_header(tmp_path, cli):
    tpl = [ROOT / "templates" / n for n in ("project.md.j2", "status_by_set.md.j2", "validated.md.j2", "validated.tex.j2")]
    path = _campaign(tmp_path, cli, tpl)
    assert cli("render", path)[0] == 0
    man = tmp_path / "camp/c/manuscript"
    before = json.loads((man / "render.lock.json").read_text())["snapshot_sha256"]
    rec_path = tmp_path / "camp/c/1-element/Cu/elastic/record.json"
    rec = json.loads(rec_path.read_text())
    rec["outputs"]["fit_rms_gpa"] += 0.001  # one number in one record
    rec_path.write_text(json.dumps(rec))
    assert cli("render", path)[0] == 0
    after = json.loads((man / "render.lock.json").read_text())["snapshot_sha256"]
    assert after != before
    for name in ("project.md", "status_by_set.md", "validated.md", "validated.tex"):
        first = (man / name).read_text().splitlines()[0]
        assert after in first and before not in first


def _validated_scope():
    from aimmat.evidence.validated import physics_flags

    base = {"set": "s", "campaign": "c", "fit_rms_gpa": 0.1, "min_eigenvalue_gpa": 20.0, "pass_fit_rms": True,
            "pass_pd": True, "pass_both": True, "inconsistent_gates": [], "complete": True, "structure_sha256": None}
    rows = [dict(base, candidate="ok", relpath="s/ok", formula="MgO", b_h_gpa=160.0, g_h_gpa=130.0, e_h_gpa=307.0, poisson_h=0.18),
            dict(base, candidate="aux", relpath="s/aux", formula="CsI", b_h_gpa=12.0, g_h_gpa=-2.0, e_h_gpa=-6.1, poisson_h=0.52),
            dict(base, candidate="lie", relpath="s/lie", formula="NaCl", b_h_gpa=25.0, g_h_gpa=14.0, e_h_gpa=35.0, poisson_h=0.26,
                 min_eigenvalue_gpa=-1.0, pass_pd=False, pass_both=False, inconsistent_gates=["pass_pd"])]
    for r in rows:
        r["flags"] = physics_flags(r)
    best = {"relpath": "s/ok", "formula": "MgO", "by": "g_h_gpa", "order": "desc", "require": "pass_both", "value": 130.0,
            "b_h_gpa": 160.0, "g_h_gpa": 130.0, "e_h_gpa": 307.0, "poisson_h": 0.18, "candidates_considered": 1}
    return {"dedup_keys": ["campaign", "relpath"], "n": 3, "duplicates_removed": 0, "pass_fit_rms": 3, "pass_pd": 2,
            "pass_both": 2, "pass_both_rate": 2 / 3, "pass_both_wilson95": [0.2, 0.94], "fit_rms_max_gpa": 0.75,
            "pd_min_eigenvalue_gpa": 0.0, "inconsistent": 1, "flagged": 1, "best": best, "rows": rows, "milestones": []}


@pytest.mark.parametrize("name", ["validated.md.j2", "validated.csv.j2", "validated.tex.j2"])
def test_every_validated_table_flags_unphysical_moduli_and_inconsistent_gates(name):
    from aimmat.render.scoped import render_template

    text = render_template(ROOT / "templates" / name, {"scopes": {"validated": _validated_scope()}}, {"as_of": "t"})
    line = {k: next(ln for ln in text.splitlines() if k in ln and ("|" in ln or "," in ln or "&" in ln))
            for k in ("CsI", "NaCl", "MgO")}
    if name.endswith(".tex.j2"):
        assert r"CsI\textsuperscript{*}" in line["CsI"] and r"NaCl\textsuperscript{\dag}" in line["NaCl"]
        assert "textsuperscript" not in line["MgO"] and "0.75~GPa" in text
    else:
        assert "G_H <= 0" in line["CsI"] and "nu outside (-1, 0.5)" in line["CsI"]
        assert "pass_pd" in line["NaCl"] and "<=" not in line["MgO"] and "pass_pd" not in line["MgO"]
    if name.endswith(".md.j2"):
        assert "Best by g_h_gpa" in text and "s/ok (MgO)" in text and "fit RMS < 0.75 GPa" in text
    if name.endswith(".csv.j2"):
        import csv
        import io

        rows = list(csv.DictReader(io.StringIO(text)))
        assert [r["best"] for r in rows] == ["True", "False", "False"]
