"""Every file aimmat creates follows the process umask, the same for all.

A campaign shared by a research group must be readable by the group when
the umask says so. Records, candidate files, campaign.json and the index
used to be 0600 whatever the umask (``tempfile.mkstemp``; the index opened
0600), the journal always 0644, and only the lock and the attempt files
followed the umask."""

from __future__ import annotations

import os
import stat

import pytest
import yaml

from aimmat.state import journal
from aimmat.state.atomic import write_bytes_atomic, write_json_atomic
from aimmat.state.lock import CampaignLock
from tests.helpers import ROOT, emt_manifest, make_emt_campaign


def _modes(folder) -> tuple[dict[str, int], dict[str, int]]:
    """Relative path -> permission bits of every file and every folder under ``folder`` (itself included)."""
    files, dirs = {}, {".": stat.S_IMODE(os.lstat(folder).st_mode)}
    for dirpath, dirnames, filenames in os.walk(folder):
        for d in dirnames:
            dirs[os.path.relpath(os.path.join(dirpath, d), folder)] = stat.S_IMODE(os.lstat(os.path.join(dirpath, d)).st_mode)
        for f in filenames:
            files[os.path.relpath(os.path.join(dirpath, f), folder)] = stat.S_IMODE(os.lstat(os.path.join(dirpath, f)).st_mode)
    return files, dirs


def _wrong(modes: dict[str, int], want: int) -> dict[str, str]:
    return {p: oct(m) for p, m in modes.items() if m != want}


@pytest.fixture
def umask():
    old = os.umask(0o022)
    os.umask(old)

    def set_(mask: int) -> None:
        os.umask(mask)

    try:
        yield set_
    finally:
        os.umask(old)


@pytest.mark.parametrize("mask,jobs", [(0o022, 1), (0o077, 2)], ids=["umask022-jobs1", "umask077-jobs2"])
def test_every_file_and_folder_of_an_applied_campaign_follows_the_umask(tmp_path, cli, umask, mask, jobs):
    m = emt_manifest(stages=("screen", "relax"))
    m["candidate_sets"] = m["candidate_sets"][:1]  # Cu, Al, Ni: quick
    m["render"] = [{"template": str(ROOT / "templates/project.md.j2")}]
    path = make_emt_campaign(tmp_path, m)  # the inputs: written under the test's own umask
    umask(mask)
    code, out, err = cli("apply", path, "-q", "--jobs", jobs)
    assert code == 0, err
    m["profiles"]["emt"]["fmax_ev_per_a"] = 0.03  # a second apply rewrites records, campaign.json, index, manuscript
    path.write_text(yaml.safe_dump(m))
    code, out, err = cli("apply", path, "-q", "--jobs", jobs)
    assert code == 0, err
    assert "3 stage task(s) run" in out

    camp = tmp_path / "camp"
    files, dirs = _modes(camp)
    names = {os.path.basename(p) for p in files}
    # what the check covers: every kind of file apply writes
    assert {"record.json", "candidate.json", "campaign.json", "journal.jsonl", ".aimmat.lock",
            ".aimmat-index.sqlite", "outcome.json", "project.md"} <= names, sorted(names)
    assert any("/attempt-" in p for p in files)  # engine files of an attempt
    assert _wrong(files, 0o666 & ~mask) == {}
    assert _wrong(dirs, 0o777 & ~mask) == {}


def test_each_writer_follows_the_umask_and_a_rewrite_too(tmp_path, umask):
    for mask in (0o077, 0o022, 0o027):
        umask(mask)
        d = tmp_path / f"m{mask:o}"
        write_json_atomic(d / "sub" / "r.json", {"v": 1})
        journal.append(d, "apply_start")
        with CampaignLock(d):
            pass
        files, dirs = _modes(d)
        assert _wrong(files, 0o666 & ~mask) == {} and _wrong(dirs, 0o777 & ~mask) == {}
    # a rewrite gets the mode of a new file under the umask of the writer (like every other write)
    target = tmp_path / "m77" / "sub" / "r.json"
    assert stat.S_IMODE(os.stat(target).st_mode) == 0o600
    umask(0o022)
    write_bytes_atomic(target, b"{}")
    assert stat.S_IMODE(os.stat(target).st_mode) == 0o644
    umask(0o077)
    write_bytes_atomic(target, b"{}")
    assert stat.S_IMODE(os.stat(target).st_mode) == 0o600
