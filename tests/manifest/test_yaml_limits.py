"""Hostile YAML is refused quickly with a ManifestError: alias bombs, recursive
anchors, absurd nesting, huge files. Ordinary anchors and aliases still work."""

from __future__ import annotations

import pytest

from aimmat.cli.main import run
from aimmat.errors import ManifestError
from aimmat.manifest.load import load_manifest
from aimmat.manifest.yamlpos import MAX_MANIFEST_BYTES, load_yaml_with_lines
from tests.helpers import emt_manifest, make_emt_campaign

HEAD = "campaign: {name: c, root: camp}\n"


def _laughs(levels: int = 9, width: int = 9) -> str:
    """~0.5 KB expanding to width**levels nodes."""
    out = [HEAD, 'a0: &a0 [' + ",".join(['"lol"'] * width) + "]\n"]
    for i in range(1, levels + 1):
        out.append(f"a{i}: &a{i} [" + ",".join([f"*a{i - 1}"] * width) + "]\n")
    out.append(f"candidate_sets: *a{levels}\n")
    return "".join(out)


def _merge_laughs(levels: int = 9, width: int = 9) -> str:
    """The same blow-up through merge keys (flatten_mapping copies merged pairs)."""
    out = [HEAD, "m0: &m0 {" + ", ".join(f"k{j}: v" for j in range(width)) + "}\n"]
    for i in range(1, levels + 1):
        out.append(f"m{i}: &m{i} {{<<: [" + ", ".join([f"*m{i - 1}"] * width) + "]}\n")
    return "".join(out)


@pytest.mark.timeout(20)
@pytest.mark.parametrize("text", [_laughs(), _merge_laughs()], ids=["sequence-aliases", "merge-keys"])
def test_billion_laughs_refused_quickly(text, tmp_path):
    path = tmp_path / "bomb.yaml"
    path.write_text(text)
    assert path.stat().st_size < 1500
    with pytest.raises(ManifestError) as err:
        load_yaml_with_lines(path)
    assert str(path) in str(err.value) and "aliases are limited" in str(err.value)


@pytest.mark.parametrize("text, line", [
    ("a: &a [*a]\n", 1),
    (HEAD + "profiles:\n  p: &p\n    kind: emt\n    self: *p\n", 3),  # the line of the anchor
    ("k: &k {x: [1, {y: *k}]}\n", 1),
])
def test_recursive_anchor_refused(text, line, tmp_path):
    path = tmp_path / "rec.yaml"
    path.write_text(text)
    with pytest.raises(ManifestError, match=f"rec.yaml:{line}: recursive YAML alias"):
        load_yaml_with_lines(path)


def test_deep_nesting_refused(tmp_path):
    path = tmp_path / "deep.yaml"
    path.write_text("a: " + "[" * 50_000 + "]" * 50_000 + "\n")
    with pytest.raises(ManifestError, match="nested too deeply"):
        load_yaml_with_lines(path)


def test_oversized_file_refused_before_parsing(tmp_path):
    path = tmp_path / "big.yaml"
    path.write_bytes(b"a: [" + b"1," * (MAX_MANIFEST_BYTES // 2) + b"]\n")
    with pytest.raises(ManifestError, match="larger than 10 MB; refused before parsing"):
        load_yaml_with_lines(path)


def test_aliases_within_the_budget_still_expand(tmp_path):
    path = tmp_path / "ok.yaml"
    path.write_text(_laughs(levels=3, width=9))  # ~16,000 nodes once expanded
    data, _ = load_yaml_with_lines(path)
    assert len(data["candidate_sets"]) == 9 and data["candidate_sets"][0][0][0] == ["lol"] * 9


def _aliased_manifest(tmp_path, **profile_override):
    """The EMT manifest with its profile anchored once and reused by a second id."""
    m = emt_manifest(stages=("screen", "relax"))
    m["profiles"]["emt"].update(profile_override)
    m["profiles"]["emt2"] = m["profiles"]["emt"]  # same object: safe_dump writes &id001 / *id001
    m["stages"]["relax"]["profile"] = "emt2"
    path = make_emt_campaign(tmp_path, m)
    assert "&id001" in path.read_text() and "*id001" in path.read_text()
    return path


def test_profile_reused_through_an_alias_loads(tmp_path):
    spec = load_manifest(_aliased_manifest(tmp_path))
    profiles = spec.manifest.profiles
    assert profiles["emt2"] == profiles["emt"]


def test_error_in_aliased_block_names_the_anchor_line(tmp_path, cli):
    path = _aliased_manifest(tmp_path, max_steps="lots")
    text = path.read_text()
    line = next(i for i, t in enumerate(text.splitlines(), 1) if "max_steps" in t)  # written once, under the anchor
    code, _, err = cli("diff", path)
    assert code == 3
    assert f"manifest.yaml:{line}: profiles.emt.max_steps" in err
    assert f"manifest.yaml:{line}: profiles.emt2.max_steps" in err


def test_error_after_an_alias_names_its_own_line(tmp_path, cli):
    path = _aliased_manifest(tmp_path)
    text = path.read_text().replace("  relax:\n", "  relax:\n    magnitudes: [0.01]\n")
    path.write_text(text)
    line = next(i for i, t in enumerate(text.splitlines(), 1) if "magnitudes" in t)
    code, _, err = cli("diff", path)
    assert code == 3 and f"manifest.yaml:{line}: stages.relax.magnitudes" in err


@pytest.mark.timeout(20)
def test_cli_diff_refuses_bomb_and_creates_nothing(tmp_path, capsys):
    path = tmp_path / "bomb.yaml"
    path.write_text(_laughs())
    assert run(["diff", str(path)]) == 3
    err = capsys.readouterr().err
    assert "aliases are limited" in err and "Traceback" not in err
    assert not (tmp_path / "camp").exists()

