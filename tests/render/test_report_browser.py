"""The static HTML report, loaded in headless Chromium (Debian), shows its tables."""

from __future__ import annotations

import shutil
import subprocess

import pytest
import yaml

from tests.helpers import ROOT, emt_manifest, make_emt_campaign

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def _dom(report, tmp_path):
    profile = tmp_path / "chrome-profile"
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", f"--user-data-dir={profile}"]
    dom = subprocess.run([CHROMIUM, *flags, "--dump-dom", report.as_uri()], capture_output=True, text=True, timeout=120).stdout
    return dom, flags


@pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (apt-get install chromium; `make setup` does it as root)")
def test_report_renders_tables_in_a_browser(tmp_path, cli):
    m = emt_manifest()
    names = ["project.md.j2", "status_by_set.md.j2", "rerun_priority.md.j2", "validated.md.j2", "protocol.md.j2", "report.html.j2"]
    m["render"] = [{"template": str(ROOT / "templates" / n)} for n in names]
    path = make_emt_campaign(tmp_path, m)
    assert cli("apply", path, "-q", "--jobs", 1)[0] == 0
    assert cli("render", path)[0] == 0
    report = tmp_path / "camp/c/manuscript/report.html"
    dom, flags = _dom(report, tmp_path)
    assert dom.count("<table>") >= 4  # status, reruns, validated, protocol
    assert "<th>formula</th>" in dom and "<td>CuAu</td>" in dom
    assert 'id="validated"' in dom and 'src="figures/fit_rms.png"' in dom
    # reads like a page: a heading per scope, figures inline under their scope, no Markdown syntax left as text
    assert dom.count("<h2>") >= 4 and "<figcaption>" in dom
    assert dom.index('id="validated"') < dom.index('src="figures/fit_rms.png"') < dom.index('id="protocol"')
    assert "**" not in dom and "|---" not in dom
    shot = tmp_path / "report.png"
    subprocess.run([CHROMIUM, *flags, f"--screenshot={shot}", "--window-size=1000,1400", report.as_uri()],
                   capture_output=True, timeout=120)
    assert shot.exists() and shot.stat().st_size > 10_000  # a rendered page, not a blank one


@pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (apt-get install chromium; `make setup` does it as root)")
def test_report_shows_triage_milestones_and_emphasis_in_a_browser(tmp_path, cli):
    from tests.model.tiny import write_tiny_checkpoint

    m = emt_manifest()
    m["models"] = {"tiny": {"path": "tiny.pt", "sha256": write_tiny_checkpoint(tmp_path / "tiny.pt", seed=1)}}
    m["candidate_sets"][0]["rank"] = {"model": "tiny", "top_k": 2, "weights": {"log10_k_vrh": 1.0}}
    m["evidence"] = {"triage": {"bins_dex": [0.1]}}
    m["milestones"] = {"R1": "validated.pass_both >= 1", "R9": "validated.n >= 99"}
    names = ["project.md.j2", "status_by_set.md.j2", "rerun_priority.md.j2", "shortlist.md.j2", "validated.md.j2",
             "protocol.md.j2", "report.html.j2"]
    m["render"] = [{"template": str(ROOT / "templates" / n)} for n in names]
    path = make_emt_campaign(tmp_path, m)
    assert cli("apply", path, "-q", "--jobs", 1)[0] == 0
    dom, _ = _dom(tmp_path / "camp/c/manuscript/report.html", tmp_path)
    assert "<strong>Uncertainty triage, tiny</strong>" in dom and "<td>[0, 0.1)</td>" in dom
    assert 'src="figures/uncertainty_triage.png"' in dom
    assert "<td>R1</td>" in dom and "<td><strong>met</strong></td>" in dom and "<td>R9</td>" in dom and "<td>not met</td>" in dom
    assert "<td>not_shortlisted</td>" not in dom and "<th>not shortlisted</th>" in dom
    assert "**" not in dom
