"""Every kind of bad manifest exits 3, names the key, and leaves the
campaign folder byte-identical (diff and apply alike)."""

from __future__ import annotations

import copy
import shutil

import pytest
import yaml

from tests.helpers import emt_manifest, make_emt_campaign, tree_digest


def _set(path, value):
    def mutate(m):
        node = m
        for p in path[:-1]:
            node = node[p]
        node[path[-1]] = value
        return m

    return mutate


def _del(path):
    def mutate(m):
        node = m
        for p in path[:-1]:
            node = node[p]
        del node[path[-1]]
        return m

    return mutate


def _extra_file(name, text):
    def mutate(m, tmp):
        (tmp / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp / name).write_text(text)
        return m

    return mutate


CASES = {
    # name: (mutation of the manifest dict, or raw YAML text; text expected in the message)
    "unknown top-level key": (_set(("campain",), {"name": "x"}), "campain"),
    "profile typo": (_set(("profiles", "emt", "fmax_ev_per_aa"), 0.1), "profiles.emt.fmax_ev_per_aa"),
    "wrong type": (_set(("profiles", "emt", "max_steps"), "lots"), "profiles.emt.max_steps"),
    "negative threshold": (_set(("profiles", "emt", "fmax_ev_per_a"), -0.1), "profiles.emt.fmax_ev_per_a"),
    "dotdot set id": (_set(("candidate_sets", 0, "name"), "../evil"), "candidate_sets.0.name"),
    "slash campaign name": (_set(("campaign", "name"), "a/b"), "campaign.name"),
    "glob matches nothing": (_set(("candidate_sets", 0, "source", "glob"), "nowhere/*.cif"), "nowhere/*.cif"),
    "duplicate set id": (_set(("candidate_sets", 1, "name"), "1-element"), "duplicate set id"),
    "set named like a reserved folder": (_set(("candidate_sets", 1, "name"), "learning"), "keeps for itself"),
    "learning parent not a model": (_set(("learning",), {"name": "c1", "parent": "small"}), "learning.parent"),
    "unknown profile in stage": (_set(("stages", "relax", "profile"), "vasp-fast"), "stages.relax.profile"),
    "unknown engine kind": (_set(("profiles", "emt", "kind"), "vasp"), "profiles.emt"),
    "scf without relax": (lambda m: (m["stages"].pop("relax"), m["stages"].pop("elastic"), m)[-1], "stages.scf"),
    "zero strain": (_set(("stages", "elastic", "magnitudes"), [0.0, 0.01]), "stages.elastic.magnitudes"),
    "huge strain": (_set(("stages", "elastic", "magnitudes"), [-0.5, 0.5]), "stages.elastic.magnitudes"),
    "unknown strain set": (_set(("stages", "elastic", "strain_set"), "thermo_pw"), "stages.elastic.strain_set"),
    "density bounds inverted": (_set(("stages", "screen"), {"density_min_g_cm3": 30, "density_max_g_cm3": 20}), "stages.screen"),
    "missing candidate_sets": (_del(("candidate_sets",)), "candidate_sets"),
    "empty candidate_sets": (_set(("candidate_sets",), []), "candidate_sets"),
    "unsupported version": (_set(("version",), 2), "version"),
    "unknown stage": (_set(("stages", "phonon"), {"profile": "emt"}), "stages.phonon"),
    "zero max_attempts": (_set(("retry",), {"max_attempts": 0}), "retry.max_attempts"),
    "unknown source kind": (_set(("candidate_sets", 0, "source", "kind"), "mp_api"), "candidate_sets.0.source"),
    "zero min distance": (_set(("stages", "screen"), {"min_distance_a": 0}), "stages.screen.min_distance_a"),
    "unknown optimizer": (_set(("profiles", "emt", "optimizer"), "SGD"), "profiles.emt.optimizer"),
    "elements mismatch": (_set(("candidate_sets", 0, "elements"), 2), "declares elements: 2"),
    "campaign missing name": (_del(("campaign", "name")), "campaign.name"),
    "qe profile typo": (
        _set(("profiles", "q"), {"kind": "qe", "pseudo": {"family": "debian"}, "ecutwfc_ry": 30, "ecutwfc_ryy": 40}),
        "profiles.q.ecutwfc_ryy: unknown key",
    ),
    "qe pseudo dir and family": (
        _set(("profiles", "q"), {"kind": "qe", "pseudo": {"family": "debian", "dir": "/x"}, "ecutwfc_ry": 30}),
        "profiles.q.pseudo: give exactly one of `dir` or `family`",
    ),
    "qe negative cutoff": (_set(("profiles", "q"), {"kind": "qe", "pseudo": {"family": "debian"}, "ecutwfc_ry": -30}), "profiles.q.ecutwfc_ry"),
    "missing render template": (_set(("render",), [{"template": "nope.md.j2"}]), "render.0.template"),
    "yaml syntax error": ("campaign: {name: c, root: camp\nprofiles: [\n", "YAML syntax error"),
    "duplicate profile key": (
        "campaign: {name: c, root: camp}\nprofiles:\n  emt: {kind: emt}\n  emt: {kind: emt}\n"
        "candidate_sets: [{name: a, elements: 1, source: {kind: files, glob: 'structures/1-element/*.cif'}}]\n",
        "duplicate key 'profiles.emt'",
    ),
    "manifest not a mapping": ("- just\n- a list\n", "must be a YAML mapping"),
}


@pytest.fixture(scope="module")
def applied(tmp_path_factory):
    """A campaign applied once (screen + relax), to check it stays byte-identical."""
    from aimmat.cli.main import run

    tmp = tmp_path_factory.mktemp("applied")
    m = emt_manifest(stages=("screen", "relax"))
    path = make_emt_campaign(tmp, m)
    assert run(["apply", str(path), "-q"]) == 0
    return tmp


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("command", ["diff", "apply"])
def test_bad_manifest_exit_3_folder_untouched(case, command, applied, tmp_path, cli):
    work = tmp_path / "w"
    shutil.copytree(applied, work)
    before = tree_digest(work / "camp")
    mutation, expected = CASES[case]
    path = work / "bad.yaml"
    if isinstance(mutation, str):
        path.write_text(mutation)
    else:
        m = emt_manifest()
        m = mutation(copy.deepcopy(m))
        path.write_text(yaml.safe_dump(m, sort_keys=False))
    code, out, err = cli(command, path)
    assert code == 3, (case, out, err)
    assert expected in err, (case, err)
    assert str(path) in err or "bad.yaml" in err, err
    assert tree_digest(work / "camp") == before


def test_unparseable_structure_file(applied, tmp_path, cli):
    work = tmp_path / "w"
    shutil.copytree(applied, work)
    before = tree_digest(work / "camp")
    (work / "structures" / "1-element" / "Broken.cif").write_text("data_x\n_cell_length_a oops\n")
    path = work / "m.yaml"
    path.write_text(yaml.safe_dump(emt_manifest(stages=("screen", "relax"))))
    for command in ("diff", "apply"):
        code, _, err = cli(command, path)
        assert code == 3
        assert "Broken.cif" in err and "1-element/Broken" in err
    assert tree_digest(work / "camp") == before


def test_duplicate_candidate_ids_from_two_files(applied, tmp_path, cli):
    work = tmp_path / "w"
    shutil.copytree(applied, work)
    (work / "structures" / "1-element" / "Cu.vasp").write_text("Cu\n1.0\n0 1.8 1.8\n1.8 0 1.8\n1.8 1.8 0\nCu\n1\ndirect\n0 0 0\n")
    path = work / "m.yaml"
    m = emt_manifest(stages=("screen",))
    m["candidate_sets"][0]["source"]["glob"] = ["structures/1-element/*.cif", "structures/1-element/*.vasp"]
    path.write_text(yaml.safe_dump(m))
    code, _, err = cli("diff", path)
    assert code == 3
    assert "duplicate candidate id 'Cu'" in err


def test_missing_manifest_file(tmp_path, cli):
    code, _, err = cli("diff", tmp_path / "nope.yaml")
    assert code == 3
    assert "nope.yaml" in err


def test_error_names_line(tmp_path, cli):
    path = make_emt_campaign(tmp_path)
    text = path.read_text().replace("max_steps: 300", "max_steps: 300\n    ecutwfc_ryy: 40")
    path.write_text(text)
    line = next(i for i, t in enumerate(text.splitlines(), 1) if "ecutwfc_ryy" in t)
    code, _, err = cli("diff", path)
    assert code == 3
    assert f"manifest.yaml:{line}: profiles.emt.ecutwfc_ryy: unknown key" in err
