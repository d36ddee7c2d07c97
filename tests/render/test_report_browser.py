"""The static HTML report, loaded in headless Chromium (Debian), shows its tables."""

from __future__ import annotations

import shutil
import subprocess

import pytest
import yaml

from tests.helpers import ROOT, emt_manifest, make_emt_campaign

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (apt-get install chromium; `make setup` does it as root)")
def test_report_renders_tables_in_a_browser(tmp_path, cli):
    m = emt_manifest()
    names = ["project.md.j2", "status_by_set.md.j2", "rerun_priority.md.j2", "validated.md.j2", "protocol.md.j2", "report.html.j2"]
    m["render"] = [{"template": str(ROOT / "templates" / n)} for n in names]
    path = make_emt_campaign(tmp_path, m)
    assert cli("apply", path, "-q", "--jobs", 1)[0] == 0
    assert cli("render", path)[0] == 0
    report = tmp_path / "camp/c/manuscript/report.html"
    profile = tmp_path / "chrome-profile"
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", f"--user-data-dir={profile}"]
    dom = subprocess.run([CHROMIUM, *flags, "--dump-dom", report.as_uri()], capture_output=True, text=True, timeout=120).stdout
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
