"""Figures of the snapshot: PNG and PDF bytes, reproducible byte for byte,
each read from its declared scope, and sensible when there is nothing to show."""

from __future__ import annotations

import copy
import io

import pytest
from matplotlib.image import imread

from aimmat.evidence.figures import FIGURES, SIZES, render_figures
from aimmat.state.status import STATUSES

NAMES = ("status_by_set", "failure_taxonomy", "fit_rms", "campaign_workflow")  # no triage, no model declared


def _status(**counts) -> dict:
    return {st: counts.get(st, 0) for st in STATUSES}


def _snapshot(failures=None, rows=None) -> dict:
    failures = {"relax: not_converged": 2, "scf: scf_not_converged": 1} if failures is None else failures
    rows = ([{"fit_rms_gpa": 0.1 * i, "pass_fit_rms": 0.1 * i <= 2.0} for i in range(1, 30)]
            if rows is None else rows)
    return {
        "scopes": {
            "public": {"generated": 10},
            "screening": {
                "sets": {"1-element": {"status": _status(elasticready=2, failed=1, screened_out=3), "candidates": 6},
                         "2-element": {"status": _status(pending=1, relaxdone=2, failed=2), "candidates": 5}},
                "overall": {"status": _status(), "failures": failures, "candidates": 9,
                            "coverage": {"relax_outputs": 4, "scf_outputs": 3, "elastic_outputs": 2}},
            },
            "validated": {"n": len(rows), "rows": rows},
        },
        "protocol": {"stages": {"screen": {}, "relax": {}, "scf": {}, "elastic": {"fit_rms_max_gpa": 2.0,
                                                                             "pd_min_eigenvalue_gpa": 0.0}}},
    }


def _png(data: bytes):
    return imread(io.BytesIO(data), format="png")


def _red_pixels(data: bytes) -> int:
    """Pixels of the taxonomy bars' colour (tab:red = 0.84, 0.15, 0.16)."""
    img = _png(data)
    return int(((img[..., 0] > 0.75) & (img[..., 1] < 0.3) & (img[..., 2] < 0.3)).sum())


@pytest.fixture(scope="module")
def base():
    return render_figures(_snapshot())


def test_every_figure_in_png_and_pdf_with_its_scope(base):
    out = base
    assert set(out) == {f"{n}.{e}" for n in NAMES for e in ("png", "pdf")}
    for name, (scope, data) in out.items():
        assert scope == FIGURES[name.rsplit(".", 1)[0]][0]
        if name.endswith(".png"):
            assert data.startswith(b"\x89PNG\r\n\x1a\n")
            img = _png(data)
            w, h = SIZES.get(name.rsplit(".", 1)[0], (5, 3.2))
            assert img.shape[:2] == (round(h * 150), round(w * 150))  # figsize x dpi
        else:
            assert data.startswith(b"%PDF-") and data.rstrip().endswith(b"%%EOF")
    assert out["status_by_set.png"][0] == "screening" and out["fit_rms.pdf"][0] == "validated"


def test_bytes_are_identical_across_calls(base):
    a = base
    b = render_figures(_snapshot())
    assert a == b
    # no time stamp or producer version leaks into the PDF
    for name, (_, data) in a.items():
        if name.endswith(".pdf"):
            assert b"CreationDate" not in data and b"ModDate" not in data


def test_figures_show_the_data(base):
    more = _snapshot()
    more["scopes"]["screening"]["sets"]["1-element"]["status"]["failed"] = 7
    changed = render_figures(more)
    assert changed["status_by_set.png"] != base["status_by_set.png"]
    # a figure reads only its own scope: the others are byte-identical
    assert changed["fit_rms.png"] == base["fit_rms.png"]
    assert changed["fit_rms.pdf"] == base["fit_rms.pdf"]
    rows = _snapshot(rows=[{"fit_rms_gpa": 3.0, "pass_fit_rms": False}] * 4)
    assert render_figures(rows)["fit_rms.png"] != base["fit_rms.png"]


def test_empty_failure_taxonomy_is_drawn_as_a_message(base):
    out = render_figures(_snapshot(failures={}))
    scope, png = out["failure_taxonomy.png"]
    assert scope == "screening" and png.startswith(b"\x89PNG")
    assert png != base["failure_taxonomy.png"][1]
    # no bars: nothing red in the picture, where the taxonomy with failures has red bars
    assert _red_pixels(png) == 0
    assert _red_pixels(base["failure_taxonomy.png"][1]) > 1000
    assert out["failure_taxonomy.pdf"][1].startswith(b"%PDF-")


def test_no_validated_candidates_still_renders():
    # the evidence snapshot of a campaign before any elastic result: validated.n == 0
    out = render_figures(_snapshot(rows=[]))
    assert out["fit_rms.png"][1].startswith(b"\x89PNG") and out["fit_rms.pdf"][1].startswith(b"%PDF-")


def test_input_snapshot_is_not_modified():
    snap = _snapshot()
    before = copy.deepcopy(snap)
    render_figures(snap)
    assert snap == before


def test_missing_scope_is_an_error_not_a_blank_figure():
    snap = _snapshot()
    del snap["scopes"]["validated"]
    with pytest.raises(KeyError):
        render_figures(snap)


def test_fit_rms_gate_line_is_the_manifests_threshold():
    # review finding: the dashed line sat at 2.0 GPa whatever the manifest's fit_rms_max_gpa said
    import matplotlib.pyplot as plt

    from aimmat.evidence.figures import _fit_rms

    for threshold in (0.5, 2.0, 7.5):
        validated = {"n": 3, "fit_rms_max_gpa": threshold,
                     "rows": [{"fit_rms_gpa": x, "pass_fit_rms": x < threshold} for x in (0.2, 1.0, 5.0)]}
        fig, ax = plt.subplots()
        _fit_rms(validated, ax)
        xs = [line.get_xdata()[0] for line in ax.get_lines()]
        plt.close(fig)
        assert xs == [threshold]
    validated["fit_rms_max_gpa"] = None  # no elastic stage declared: no gate line rather than a made-up one
    fig, ax = plt.subplots()
    _fit_rms(validated, ax)
    assert ax.get_lines() == []
    plt.close(fig)


def _texts(ax) -> list[str]:
    return [t.get_text() for t in ax.texts if t.get_text()]  # (arrows are empty annotations)


def test_figure_1_draws_the_declared_chain_with_the_snapshot_counts():
    import matplotlib.pyplot as plt

    from aimmat.evidence.figures import _workflow

    snap = _snapshot()
    scr = snap["scopes"]["screening"]
    scr["overall"]["status"].update(screened_out=2, not_shortlisted=3, elasticready=2)
    scr["ranking"] = {"1-element": {}}
    protocol = {"stages": {"screen": {}, "relax": {}, "elastic": {"fit_rms_max_gpa": 0.7, "pd_min_eigenvalue_gpa": 1.5}}}
    fig, ax = plt.subplots()
    _workflow(scr, ax, protocol)
    texts = _texts(ax)
    plt.close(fig)
    boxes = [t for t in texts if not t.isdigit() and t != "-" and not t.startswith("sets:")]
    assert boxes[0] == "2 candidate\nsets" and boxes[1] == "screen" and boxes[2].startswith("shortlist")
    assert boxes[3:5] == ["relax", "elastic"] and "scf" not in texts  # the chain the manifest declared, in its order
    assert "fit RMS < 0.7 GPa" in boxes[5] and "min eig > 1.5 GPa" in boxes[5] and boxes[5].endswith("elastic-ready:\n2")
    # declared 9 -> 7 pass the screen -> 4 shortlisted -> relax outputs 4 -> elastic outputs 2
    assert [t for t in texts if t.isdigit()] == ["9", "7", "4", "4", "2"]


def test_figure_2_and_table_1_come_from_the_checkpoint(tmp_path):
    import matplotlib.pyplot as plt
    import torch

    from aimmat.evidence.figures import _architecture
    from aimmat.model.checkpoint import describe
    from aimmat.render.scoped import render_template
    from tests.helpers import ROOT
    from tests.model.tiny import write_tiny_checkpoint

    sha = write_tiny_checkpoint(tmp_path / "tiny.pt", seed=1)
    h = describe(tmp_path / "tiny.pt")
    payload = torch.load(tmp_path / "tiny.pt", weights_only=True)
    assert h["vae"]["parameters"] == sum(t.numel() for t in payload["vae"]["state"].values())
    assert payload["elastic"]["hparams"].items() <= h["elastic"]["hparams"].items()  # stored, plus the defaults
    assert "sigma_min" in h["vae"]["hparams"]
    protocol = {"models": {"tiny": {"sha256": sha, "hyperparameters": h, "first_set": 0}}, "profiles": {}, "stages": {}}
    fig, ax = plt.subplots()
    _architecture(protocol, ax)
    texts = " | ".join(_texts(ax))
    plt.close(fig)
    vae = h["vae"]["hparams"]
    assert f"dim {vae['latent_dim']}" in texts and f"cutoff {vae['cutoff']:g} A" in texts
    assert f"generator: {h['vae']['parameters']:,} parameters" in texts and f"{h['elastic']['hparams']['n_heads']} heads" in texts
    table = render_template(ROOT / "templates" / "table1.md.j2", {"scopes": {"public": {}}}, {"protocol": protocol})
    assert f"| generator | latent dim; cutoff; max atoms | {vae['latent_dim']}; {vae['cutoff']} A; {vae['max_atoms']} |" in table
    assert f"`{sha[:16]}`" in table and f"{h['elastic']['parameters']};" in table
