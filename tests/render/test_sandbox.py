"""Templates are untrusted: they render in Jinja's sandbox and load files only
from their own folder. Each payload below runs code on an unsandboxed
Environment; here it must fail with a RenderError and leave no file behind."""

from __future__ import annotations

import pytest

from aimmat.errors import AimmatError, RenderError
from aimmat.render.scoped import declared_scope, render_template
from tests.helpers import ROOT, emt_manifest, make_emt_campaign

SNAPSHOT = {"scopes": {"public": {"generated": 7, "structures": 12, "contributions_uploaded": 0, "milestones": [],
                                  "project": None}}}
META = {"campaign": "c", "as_of": "2024-01-01", "snapshot_sha256": "ab" * 32}

# "{marker}" is replaced by a path under tmp_path: each payload tries to create it.
PAYLOADS = {
    "lipsum globals": "{{ lipsum.__globals__['os'].system('touch {marker}') }}",
    "object subclasses": (
        "{% for c in ''.__class__.__mro__[1].__subclasses__() if c.__name__ == 'catch_warnings' %}"
        "{{ c()._module.__builtins__['open']('{marker}', 'w') }}{% endfor %}"
    ),
    "cycler init globals": "{{ cycler.__init__.__globals__.os.system('touch {marker}') }}",
    "template reference context": (
        "{{ self._TemplateReference__context.cycler.__init__.__globals__.os.system('touch {marker}') }}"
    ),
}


def _template(folder, name, body, scope="public"):
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(f"{{#- scope: {scope} -#}}\n{body}\n")
    return path


@pytest.mark.parametrize("case", sorted(PAYLOADS))
def test_payload_is_refused_and_runs_nothing(case, tmp_path):
    marker = tmp_path / "pwned"
    path = _template(tmp_path / "templates", "evil.md.j2", PAYLOADS[case].replace("{marker}", str(marker)))
    with pytest.raises(RenderError) as err:
        render_template(path, SNAPSHOT, META)
    assert "evil.md.j2:2" in str(err.value) and "sandbox" in str(err.value)
    assert not marker.exists()


@pytest.mark.parametrize("name", ["lipsum", "cycler", "joiner", "namespace", "range", "dict"])
@pytest.mark.parametrize("attr", ["__init__.__globals__", "__class__.__mro__", "__dict__"])
def test_globals_do_not_reach_python_internals(name, attr, tmp_path):
    path = _template(tmp_path / "templates", "g.md.j2", f"{{{{ {name}.{attr} }}}}")
    with pytest.raises(RenderError, match="blocked by the template sandbox"):
        render_template(path, SNAPSHOT, META)


def test_snapshot_values_cannot_be_modified(tmp_path):
    snap = {"scopes": {"public": {"generated": 12, "tags": ["a"]}}}
    path = _template(tmp_path / "templates", "m.md.j2", "{{ public.tags.append('b') }}{{ public.update({'generated': 0}) }}")
    with pytest.raises(RenderError, match="sandbox"):
        render_template(path, snap, META)
    assert snap["scopes"]["public"] == {"generated": 12, "tags": ["a"]}


def test_symlinked_template_outside_its_folder_is_refused(tmp_path):
    secret = _template(tmp_path / "outside", "secret.md.j2", "{{ meta.campaign }}")
    link = tmp_path / "templates" / "link.md.j2"
    link.parent.mkdir()
    link.symlink_to(secret)
    for call in (lambda: render_template(link, SNAPSHOT, META), lambda: declared_scope(link)):
        with pytest.raises(RenderError) as err:
            call()
        assert "link.md.j2" in str(err.value) and "outside its folder" in str(err.value)


@pytest.mark.parametrize("tag", ["include", "extends", "import", "from"])
@pytest.mark.parametrize("target", ["../../etc/passwd", "/etc/passwd", "../outside/secret.md.j2", "sub/../../outside/secret.md.j2"])
def test_include_outside_the_folder_is_refused(tag, target, tmp_path):
    _template(tmp_path / "outside", "secret.md.j2", "SECRET")
    statement = {"import": f"import '{target}' as m", "from": f"from '{target}' import x"}.get(tag, f"{tag} '{target}'")
    path = _template(tmp_path / "templates", "inc.md.j2", f"{{% {statement} %}}")
    with pytest.raises(RenderError) as err:
        render_template(path, SNAPSHOT, META)
    assert f"inc.md.j2:2: '{target}' resolves outside the template folder" in str(err.value)


def test_include_of_a_symlink_leading_out_is_refused(tmp_path):
    secret = _template(tmp_path / "outside", "secret.md.j2", "SECRET")
    (tmp_path / "templates").mkdir()
    (tmp_path / "templates" / "part.md.j2").symlink_to(secret)
    path = _template(tmp_path / "templates", "inc.md.j2", "{% include 'part.md.j2' %}")
    with pytest.raises(RenderError, match="'part.md.j2' resolves outside"):
        render_template(path, SNAPSHOT, META)


def test_include_inside_the_folder_still_works(tmp_path):
    _template(tmp_path / "templates", "part.md.j2", "generated {{ public.generated }}")
    path = _template(tmp_path / "templates", "whole.md.j2", "{% include 'part.md.j2' %}, campaign {{ meta.campaign }}")
    assert render_template(path, SNAPSHOT, META) == "generated 7\n, campaign c\n"  # part keeps its newline


def test_real_scoped_and_composite_templates_still_render():
    text = render_template(ROOT / "templates" / "project.md.j2", SNAPSHOT, META)
    assert "12 structures in the campaign, 7 of them generated by the model" in text
    blocks = {n: f"[{n}]\n" for n in ("project.md", "protocol.md", "status_by_set.md", "rerun_priority.md", "validated.md")}
    main = render_template(ROOT / "manuscript" / "main.md.j2", {}, META, blocks, ["figures/fit_rms.png", "figures/fit_rms.pdf"])
    assert "[project.md]" in main and "[validated.md]" in main and "![figures/fit_rms.png]" in main
    assert "fit_rms.pdf" not in main
    html = render_template(ROOT / "templates" / "report.html.j2", {}, {**META, "aimmat": "0"}, {**blocks, "project.md": "| a |\n|---|\n| 1 |\n"})
    assert "<td>1</td>" in html


def test_cli_reports_a_payload_without_traceback(tmp_path, cli):
    marker = tmp_path / "pwned"
    evil = _template(tmp_path / "t", "evil.md.j2", PAYLOADS["lipsum globals"].replace("{marker}", str(marker)))
    path = make_emt_campaign(tmp_path, emt_manifest(stages=("screen",), render=[{"template": str(evil)}]))
    code, _, err = cli("render", path)
    assert code == 3 and "blocked by the template sandbox" in err and "Traceback" not in err
    assert not marker.exists() and not (tmp_path / "camp").exists()
    assert issubclass(RenderError, AimmatError)


def test_cli_refuses_a_manifest_template_linked_out_of_its_folder(tmp_path, cli):
    secret = _template(tmp_path / "outside", "secret.md.j2", "SECRET {{ meta.campaign }}")
    (tmp_path / "t").mkdir()
    (tmp_path / "t" / "link.md.j2").symlink_to(secret)
    path = make_emt_campaign(tmp_path, emt_manifest(stages=("screen",), render=[{"template": "t/link.md.j2"}]))
    code, _, err = cli("render", path)
    assert code == 3 and "link.md.j2" in err and "outside its folder" in err
    assert not (tmp_path / "camp").exists()


# A composite template places rendered blocks; each of these reads a number out of one (review finding: with
# blocks as plain strings every one of them rendered, so main.md could set validated numbers beside project ones).
BLOCK_READS = {
    "string method": '{{ blocks["validated.md"].split("|")[3] }}',
    "slice": '{{ blocks["validated.md"][10:15] }}',
    "concatenate then slice": '{{ (blocks["validated.md"] ~ "")[10:15] }}',
    "string filter": '{{ (blocks["validated.md"] | string)[10:15] }}',
    "replace filter": '{{ blocks["validated.md"] | replace("3.2", "9.9") }}',
    "capture with set block": '{% set s %}{{ blocks["validated.md"] }}{% endset %}{{ s[10:15] }}',
    "filter block": '{% filter replace("3.2", "9.9") %}{{ blocks["validated.md"] }}{% endfilter %}',
    "macro": '{% macro m() %}{{ blocks["validated.md"] }}{% endmacro %}{{ m()[1:4] }}',
    "template block": '{% block b %}{{ blocks["validated.md"] }}{% endblock %}{{ self.b()[1:4] }}',
    "percent format": '{{ "%s" % blocks["validated.md"] }}',
    "str.format": '{{ "{}".format(blocks["validated.md"]) }}',
    "membership": '{{ "3.2" in blocks["validated.md"] }}',
    "iteration": '{% for c in blocks["validated.md"] %}{{ c }}{% endfor %}',
    "md_html output": '{{ (blocks["validated.md"] | md_html).split("<td>")[1] }}',
    "private attribute": '{{ blocks["validated.md"]._text[1:4] }}',
    "recursive loop": ('{% for item in [0] recursive %}{% if loop.depth == 1 %}{% set s = loop([blocks["validated.md"]]) %}'
                       '{{ s.split("|")[1] }}{% else %}{{ item }}{% endif %}{% endfor %}'),  # found by review
}


@pytest.mark.parametrize("case", sorted(BLOCK_READS))
def test_composite_templates_cannot_read_numbers_out_of_blocks(case, tmp_path):
    path = _template(tmp_path / "templates", "main.md.j2", BLOCK_READS[case], scope="composite")
    blocks = {"validated.md": "| G_H |\n|---|\n| 3.2 |\n", "project.md": "12 candidates\n"}
    with pytest.raises(RenderError) as err:
        render_template(path, {}, META, blocks, [])
    assert "main.md.j2:2" in str(err.value)
    assert "3.2" not in str(err.value)


def test_composite_templates_still_place_blocks_and_convert_them(tmp_path):
    body = '{{ blocks["project.md"] }}{{ blocks["validated.md"] | md_html }}{{ blocks.get("none.md", "") | md_html }}' \
           '{% for name, b in blocks.items() %}[{{ name }}]{% endfor %}'
    path = _template(tmp_path / "templates", "main.md.j2", body, scope="composite")
    out = render_template(path, {}, META, {"validated.md": "| G_H |\n|---|\n| **3.2** |\n", "project.md": "12 candidates\n"}, [])
    assert out.startswith("12 candidates\n<table>") and "<td><strong>3.2</strong></td>" in out
    assert "[validated.md]" in out and "[project.md]" in out
