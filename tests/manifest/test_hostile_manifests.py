"""Findings of the manifest security/robustness review, one test each.

1. NUL bytes, over-long paths, 5,000-digit integers: a ManifestError (exit 3)
   naming file, line and key, never a traceback, never a plan.
2. Every number is finite and inside the physical range its description states.
3. Cross-field errors point at the field's own line, not at line 1 or the parent block.
4. Render outputs stay under <campaign>/manuscript/.
"""

from __future__ import annotations

import copy
import json
import math

import pytest
import yaml
from pydantic import ValidationError

from aimmat.manifest.models import manifest_model
from tests.helpers import emt_manifest, make_emt_campaign, tree_digest

SHA = "0" * 64
QE = {"kind": "qe", "pseudo": {"family": "debian"}, "ecutwfc_ry": 30}


def _line(text: str, needle: str, nth: int = 0) -> int:
    hits = [i for i, t in enumerate(text.splitlines(), 1) if needle in t]
    assert len(hits) > nth, (needle, text)
    return hits[nth]


def _write(tmp_path, m: dict | None = None, edit=None):
    path = make_emt_campaign(tmp_path, m or emt_manifest())
    if edit is not None:
        path.write_text(edit(path.read_text()))
    return path, path.read_text()


def _refused(cli, path, *expected: str) -> str:
    before = tree_digest(path.parent)
    code, out, err = cli("diff", "--exit-code", path)
    assert code == 3, (code, out, err)
    assert "Traceback" not in err and out == ""
    for e in expected:
        assert e in err, (e, err)
    after = tree_digest(path.parent)
    assert after == before
    return err


# ---------------------------------------------------------------- 1. NUL, long, huge
def test_nul_in_campaign_root_is_refused_not_planned(tmp_path, cli):
    m = emt_manifest()
    m["campaign"]["root"] = "ca\0mp"
    path, text = _write(tmp_path, m)
    _refused(cli, path, f"manifest.yaml:{_line(text, 'root:')}: campaign.root", "NUL")


def test_nul_in_source_glob(tmp_path, cli):
    m = emt_manifest()
    m["candidate_sets"][0]["source"]["glob"] = "struct\0ures/1-element/*.cif"
    path, text = _write(tmp_path, m)
    _refused(cli, path, f"manifest.yaml:{_line(text, 'struct')}: candidate_sets.0.source.glob", "NUL")


def test_nul_in_a_key(tmp_path, cli):
    m = emt_manifest()
    m["profiles"]["emt"]["max\0steps"] = 3
    path, text = _write(tmp_path, m)
    _refused(cli, path, "manifest.yaml:", "profiles.emt", "NUL")


def test_nul_refused_by_the_models_too():
    """Without the YAML loader (the model used directly), paths still refuse NUL."""
    m = emt_manifest()
    m["campaign"]["root"] = "a\0b"
    with pytest.raises(ValidationError, match="NUL"):
        manifest_model().model_validate(m)


@pytest.mark.parametrize("root, expected", [
    ("a" * 5000, "at most 1024 characters"),
    ("x/" + "b" * 300 + "/y", "longer than 255 bytes"),
    ("", "at least 1 character"),
])
def test_long_campaign_root(root, expected, tmp_path, cli):
    m = emt_manifest()
    m["campaign"]["root"] = root
    path, text = _write(tmp_path, m)
    _refused(cli, path, f"manifest.yaml:{_line(text, 'root:')}: campaign.root", expected)


@pytest.mark.parametrize("old, new, needle, key", [
    ("max_steps: 300", "max_steps: " + "9" * 5000, "max_steps", "profiles.emt.max_steps"),  # int field
    ("fmax_ev_per_a: 0.05", "fmax_ev_per_a: " + "9" * 5000, "fmax_ev_per_a", "profiles.emt.fmax_ev_per_a"),  # float field
    ("max_steps: 300", "max_steps: 0x" + "f" * 5000, "max_steps", "profiles.emt.max_steps"),  # hex: no digit limit
    ("max_steps: 300", "max_steps: 300\n    ? " + "7" * 5000 + "\n    : 1", "7777", "profiles.emt"),  # as a key
    ("max_steps: 300", "max_steps: '" + "9" * 5000 + "'", "max_steps", "profiles.emt.max_steps"),  # a string pydantic parses
    ("max_steps: 300", "max_steps: 2024-13-45", "max_steps", "profiles.emt.max_steps"),  # impossible date: ValueError in yaml
    ("root: camp", "root: !!binary AAAA", "root:", "campaign.root"),  # bytes would decode to a NUL string
])
def test_numbers_python_cannot_print_and_odd_scalars(old, new, needle, key, tmp_path, cli):
    path, text = _write(tmp_path, edit=lambda t: t.replace(old, new))
    assert new in text
    err = _refused(cli, path, f"manifest.yaml:{_line(text, needle)}: {key}: ")
    assert len(err) < 2000  # the 5,000 digits are not echoed back


# ---------------------------------------------------------------- 2. finite, in range
def _profile_q(**kw):
    return lambda m: m["profiles"].__setitem__("q", {**QE, **kw})


def _stage(stage, **kw):
    return lambda m: m["stages"].__setitem__(stage, {**m["stages"].get(stage, {}), **kw})


NAN, INF = float("nan"), float("inf")
OUT_OF_RANGE = {
    # name: (mutation, key named, text of its line)
    "nan strain": (_stage("elastic", magnitudes=[NAN, 0.01]), "stages.elastic.magnitudes.0", "- .nan"),
    "inf strain": (_stage("elastic", magnitudes=[-INF, 0.01]), "stages.elastic.magnitudes.0", "- -.inf"),
    "nan pd gate": (_stage("elastic", pd_min_eigenvalue_gpa=NAN), "stages.elastic.pd_min_eigenvalue_gpa", None),
    "inf pd gate": (_stage("elastic", pd_min_eigenvalue_gpa=INF), "stages.elastic.pd_min_eigenvalue_gpa", None),
    "-inf pd gate": (_stage("elastic", pd_min_eigenvalue_gpa=-INF), "stages.elastic.pd_min_eigenvalue_gpa", None),
    "huge pd gate": (_stage("elastic", pd_min_eigenvalue_gpa=1e6), "stages.elastic.pd_min_eigenvalue_gpa", None),
    "nan fit rms": (_stage("elastic", fit_rms_max_gpa=NAN), "stages.elastic.fit_rms_max_gpa", None),
    "inf min distance": (_stage("screen", min_distance_a=INF), "stages.screen.min_distance_a", None),
    "1e6 min distance": (_stage("screen", min_distance_a=1.0e6), "stages.screen.min_distance_a", None),
    "inf density max": (_stage("screen", density_max_g_cm3=INF), "stages.screen.density_max_g_cm3", None),
    "nan density min": (_stage("screen", density_min_g_cm3=NAN), "stages.screen.density_min_g_cm3", None),
    "osmium x 2 density": (_stage("screen", density_max_g_cm3=45.0), "stages.screen.density_max_g_cm3", None),
    "inf fmax": (lambda m: m["profiles"]["emt"].update(fmax_ev_per_a=INF), "profiles.emt.fmax_ev_per_a", None),
    "11 eV/A fmax": (lambda m: m["profiles"]["emt"].update(fmax_ev_per_a=11.0), "profiles.emt.fmax_ev_per_a", None),
    "huge cutoff": (_profile_q(ecutwfc_ry=1e9), "profiles.q.ecutwfc_ry", None),
    "inf density cutoff": (_profile_q(ecutrho_ry=INF), "profiles.q.ecutrho_ry", None),
    "kspacing 10/A": (_profile_q(kspacing_per_a=10.0), "profiles.q.kspacing_per_a", None),
    "nan degauss": (_profile_q(degauss_ry=NAN), "profiles.q.degauss_ry", None),
    "degauss 5 Ry": (_profile_q(degauss_ry=5.0), "profiles.q.degauss_ry", None),
    "walltime a year": (_profile_q(walltime_s=365 * 86400.0), "profiles.q.walltime_s", None),
    "a million ranks": (_profile_q(mpi_ranks=10**6), "profiles.q.mpi_ranks", None),
    "k-mesh 1000": (_profile_q(kpoints=[1000, 1, 1]), "profiles.q.kpoints.0", "- 1000"),
    "inf free memory": (_profile_q(min_free_mem_mb=INF), "profiles.q.min_free_mem_mb", None),
    "negative trust radius": (lambda m: m.update(retry={"trust_radius_ini_bohr": -1.0}), "retry.trust_radius_ini_bohr", None),
    "nan rank weight": (lambda m: m["candidate_sets"][0].update(rank={"model": "mm", "weights": {"uncertainty": NAN}}),
                        "candidate_sets.0.rank.weights.uncertainty", None),
    "seed past int64": (lambda m: m["candidate_sets"][0].update(source={"kind": "generator", "model": "mm", "count": 1,
                                                                         "seed": 2**63}),
                        "candidate_sets.0.source.seed", None),
    "slurm walltime a year": (lambda m: m.update(executor={"kind": "parsl", "provider": "slurm", "walltime": "8760:00:00",
                                                           "cores_per_node": 4}), "executor.walltime", None),
    "inf cores per worker": (lambda m: m.update(executor={"kind": "parsl", "cores_per_worker": INF}),
                             "executor.cores_per_worker", None),
}


@pytest.mark.parametrize("case", sorted(OUT_OF_RANGE))
def test_non_finite_and_absurd_numbers_refused(case, tmp_path, cli):
    mutate, key, needle = OUT_OF_RANGE[case]
    m = emt_manifest()
    m["models"] = {"mm": {"path": "mm.pt", "sha256": SHA}}
    mutate(m)
    path, text = _write(tmp_path, m)
    _refused(cli, path, f"manifest.yaml:{_line(text, needle or key.split('.')[-1] + ':')}: {key}: ")


def _numeric_properties(schema: dict):
    """(model, field, property schema, number schemas) of every int/float field in the JSON schema."""
    def numbers(node):
        if not isinstance(node, dict):
            return []
        if node.get("type") in ("number", "integer"):
            return [node]
        out = []
        for k in ("anyOf", "oneOf", "allOf", "prefixItems"):
            for sub in node.get(k, []):
                out += numbers(sub)
        for k in ("items", "additionalProperties"):
            out += numbers(node.get(k))
        return out

    for model, sub in schema["$defs"].items():
        for field, prop in sub.get("properties", {}).items():
            if "const" in prop or "enum" in prop:
                continue
            nums = numbers(prop)
            if nums:
                yield model, field, prop, nums


def test_every_number_field_is_bounded_and_its_description_says_so():
    schema = manifest_model().model_json_schema()
    seen = 0
    for model, field, prop, nums in _numeric_properties(schema):
        seen += 1
        for n in nums:
            lo = n.get("minimum", n.get("exclusiveMinimum"))
            hi = n.get("maximum", n.get("exclusiveMaximum"))
            assert lo is not None and hi is not None, (model, field, n)
            assert math.isfinite(lo) and math.isfinite(hi) and lo < hi
            assert str(hi) in prop.get("description", ""), (model, field, prop.get("description"))
    assert seen >= 50  # models, stage configs, qe profile, executor


def test_every_model_refuses_nan_and_inf():
    from pydantic import BaseModel

    def models(cls, out):
        for f in cls.model_fields.values():
            for t in _types(f.annotation):
                if isinstance(t, type) and issubclass(t, BaseModel) and t not in out:
                    out.add(t)
                    models(t, out)
        return out

    found = models(manifest_model(), set())
    assert len(found) > 15
    for cls in found:
        assert cls.model_config.get("allow_inf_nan") is False, cls


def _types(annotation):
    import typing

    out = [annotation]
    for a in typing.get_args(annotation):
        out += _types(a)
    return out


# ---------------------------------------------------------------- 3. cross-field errors at the field's line
def _with_q(m, **kw):
    m["profiles"]["q"] = {**QE, **kw}


CROSS = {
    # name: (mutation, key the error names, (text of that line, which occurrence))
    "unknown profile": (lambda m: m["stages"]["relax"].update(profile="vasp"), "stages.relax.profile", ("profile: vasp", 0)),
    "unknown model": (lambda m: m["candidate_sets"][0].update(source={"kind": "generator", "model": "nope", "count": 2}),
                      "candidate_sets.0.source.model", ("model: nope", 0)),
    "scf without relax": (lambda m: (m["stages"].pop("relax"), m["stages"].pop("elastic")), "stages.scf", ("  scf:", 0)),
    "duplicate set name": (lambda m: m["candidate_sets"][1].update(name="1-element"), "candidate_sets.1.name",
                           ("name: 1-element", 1)),
    "prerelax with a qe profile": (lambda m: (_with_q(m), m["stages"].update(screen={"prerelax_profile": "q"})),
                                   "stages.screen.prerelax_profile", ("prerelax_profile: q", 0)),
    "ablation prerelax with a qe profile": (
        lambda m: (_with_q(m), m.update(ablations=[{"name": "v", "screen": {"prerelax_profile": "q"}}])),
        "ablations.0.screen.prerelax_profile", ("prerelax_profile: q", 0)),
    "mpi_ranks above cores_per_worker": (
        lambda m: (_with_q(m, mpi_ranks=4), m.update(executor={"kind": "parsl", "cores_per_worker": 2})),
        "profiles.q.mpi_ranks", ("mpi_ranks: 4", 0)),
    "density bounds inverted": (lambda m: m["stages"].update(screen={"density_min_g_cm3": 20.0, "density_max_g_cm3": 10.0}),
                                "stages.screen.density_min_g_cm3", ("density_min_g_cm3", 0)),
    "ablation density bounds inverted": (
        lambda m: m.update(ablations=[{"name": "v", "screen": {"density_max_g_cm3": 1.0, "density_min_g_cm3": 2.0}}]),
        "ablations.0.screen.density_min_g_cm3", ("density_min_g_cm3", 0)),
    "duplicate ablation name": (lambda m: m.update(ablations=[{"name": "twin"}, {"name": "twin"}]), "ablations.1.name",
                                ("name: twin", 1)),
    "unknown rank model": (lambda m: m["candidate_sets"][0].update(rank={"model": "nope2"}), "candidate_sets.0.rank.model",
                           ("model: nope2", 0)),
    "generator with 6 elements": (
        lambda m: m["candidate_sets"][0].update(elements=6, source={"kind": "generator", "model": "mm", "count": 2}),
        "candidate_sets.0.elements", ("elements: 6", 0)),
    "unknown ranking term": (lambda m: m["candidate_sets"][0].update(rank={"model": "mm", "weights": {"hardness": 1.0}}),
                             "candidate_sets.0.rank.weights", ("weights:", 0)),
    "min_blocks above max_blocks": (lambda m: m.update(executor={"kind": "parsl", "max_blocks": 2, "min_blocks": 3}),
                                    "executor.min_blocks", ("min_blocks", 0)),
    "heartbeat threshold below period": (
        lambda m: m.update(executor={"kind": "parsl", "heartbeat_period_s": 60, "heartbeat_threshold_s": 30}),
        "executor.heartbeat_threshold_s", ("heartbeat_threshold_s", 0)),
    "slurm node smaller than a worker": (
        lambda m: m.update(executor={"kind": "parsl", "provider": "slurm", "walltime": "01:00:00", "cores_per_worker": 8,
                                     "cores_per_node": 4}),
        "executor.cores_per_node", ("cores_per_node", 0)),
}


@pytest.mark.parametrize("case", sorted(CROSS))
def test_cross_field_error_names_the_field_line(case, tmp_path, cli):
    mutate, key, (needle, nth) = CROSS[case]
    m = emt_manifest()
    m["models"] = {"mm": {"path": "mm.pt", "sha256": SHA}}
    mutate(m)
    path, text = _write(tmp_path, m)
    err = _refused(cli, path)
    assert f"manifest.yaml:{_line(text, needle, nth)}: {key}: " in err, err
    assert "(top level)" not in err


def test_top_level_message_with_a_key_path_is_placed_at_that_key():
    """A plain ValueError of the top-level model whose message starts with a key path is placed there too."""
    from aimmat.manifest.load import _error_at

    lines = {("candidate_sets",): 5, ("candidate_sets", 1): 9, ("candidate_sets", 1, "name"): 9}
    err = {"type": "value_error", "loc": (), "msg": "Value error, candidate_sets.1.name: twice"}
    assert _error_at(err, lines) == (("candidate_sets", 1, "name"), "twice")
    err = {"type": "value_error", "loc": (), "msg": "Value error, not a key path: something"}
    assert _error_at(err, lines) == ((), "not a key path: something")


# ---------------------------------------------------------------- 4. render outputs stay in the manuscript folder
def _render(tmp_path, output, template="t.md.j2"):
    (tmp_path / "t.md.j2").write_text("{#- scope: public -#}\nhello\n")
    m = emt_manifest(stages=("screen",))
    m["render"] = [{"template": template} if output is None else {"template": template, "output": output}]
    return _write(tmp_path, m)


@pytest.mark.parametrize("output, problem", [
    ("/abs/x.md", "is an absolute path"),
    ("../../../x.md", "contains a '..' part"),
    ("tables/../../x.md", "contains a '..' part"),
    ("..", "contains a '..' part"),
    ("tables\\..\\..\\x.md", "contains a backslash"),
    ("C:\\x.md", "contains a backslash"),
    (".", "names no file"),
    ("tables/", "names no file"),
    ("x\0.md", "NUL"),
    ("", "at least 1 character"),
])
def test_render_output_outside_the_manuscript_is_refused(output, problem, tmp_path, cli):
    path, text = _render(tmp_path, output)
    _refused(cli, path, f"manifest.yaml:{_line(text, 'output:')}: render.0.output", problem)


def test_render_default_output_from_an_odd_template_name(tmp_path, cli):
    path, text = _render(tmp_path, None, template="..j2")
    (tmp_path / "..j2").write_text("{#- scope: public -#}\nhello\n")
    _refused(cli, path, "render.0.output", "names no file")


def test_two_render_targets_with_one_output(tmp_path, cli):
    (tmp_path / "t.md.j2").write_text("{#- scope: public -#}\nhello\n")
    m = emt_manifest(stages=("screen",))
    m["render"] = [{"template": "t.md.j2", "output": "a/x.md"}, {"template": "t.md.j2", "output": "a/./x.md"}]
    path, text = _write(tmp_path, m)
    _refused(cli, path, f"manifest.yaml:{_line(text, 'output:', 1)}: render.1.output", "also the output of render.0")


def test_render_absolute_output_is_not_written_by_apply(tmp_path, cli):
    outside = tmp_path / "outside" / "x.md"
    path, _ = _render(tmp_path, str(outside))
    code, _, err = cli("apply", path, "-q")
    assert code == 3 and "render.0.output" in err
    assert not outside.exists() and not (tmp_path / "camp").exists()


def test_render_relative_output_still_loads(tmp_path):
    from aimmat.manifest.load import load_manifest

    path, _ = _render(tmp_path, "tables/summary.md")
    spec = load_manifest(path)
    assert spec.manifest.render[0].output == "tables/summary.md"


def test_schema_describes_ranges(cli):
    code, out, _ = cli("schema")
    assert code == 0
    props = json.loads(out)["$defs"]["ScreenStage"]["properties"]
    assert "Range: (0, 5]" in props["min_distance_a"]["description"]
    assert "Range: [0, 30]" in props["density_min_g_cm3"]["description"]


def test_valid_manifests_still_load(tmp_path):
    """The ranges leave room for every example manifest and preset."""
    from aimmat.manifest.qe_profile import QeProfile, presets

    for name in presets():
        QeProfile.model_validate({**QE, "preset": name})
    for example in ("manifests/demo.yaml", "manifests/qe-demo.yaml"):
        from tests.helpers import ROOT

        data = yaml.safe_load((ROOT / example).read_text())
        manifest_model().model_validate(copy.deepcopy(data))
