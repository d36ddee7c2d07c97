"""diff, status and evidence read the campaign folder and write nothing:
not the record index, not its journal, not a lock file, with or without an
index and when the index is stale. Only apply writes (it refreshes the index)."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import pytest

from aimmat.state.layout import INDEX_FILE
from tests.helpers import applied_campaign, copy_campaign

READERS = (("diff",), ("diff", "--json", "-v"), ("diff", "--rescan"), ("status",), ("status", "--json", "-v"),
           ("status", "--rescan"), ("evidence",), ("evidence", "--rescan"))


def tree_state(folder: Path) -> str:
    """One hash of every entry under ``folder``: relative path, type, mode, and file bytes."""
    h = hashlib.sha256()
    for dirpath, dirs, files in sorted(os.walk(folder)):
        dirs.sort()
        for name in sorted(dirs + files):
            p = Path(dirpath) / name
            st = p.lstat()
            h.update(f"{p.relative_to(folder)}|{st.st_mode:o}|".encode())
            if p.is_file() and not p.is_symlink():
                h.update(hashlib.sha256(p.read_bytes()).digest())
    return h.hexdigest()


@pytest.fixture(scope="module")
def applied(tmp_path_factory):
    return applied_campaign(tmp_path_factory.mktemp("ro"), ("screen", "relax"))


def _readers_leave_it(cli, manifest: Path, camp: Path) -> None:
    before = tree_state(camp)
    for argv in READERS:
        code, _, err = cli(*argv[:1], manifest, *argv[1:])
        assert code == 0, (argv, err)
        assert tree_state(camp) == before, argv


@pytest.mark.parametrize("index", ["fresh", "absent", "stale"])
def test_readers_leave_the_campaign_byte_identical(applied, tmp_path, cli, index):
    work = copy_campaign(applied, tmp_path / "w")
    camp, manifest = work / "camp/c", work / "manifest.yaml"
    assert (camp / INDEX_FILE).exists()  # apply wrote it
    if index == "absent":
        (camp / INDEX_FILE).unlink()
    elif index == "stale":  # a record rewritten since the index was written, and a folder gone
        rec = next(camp.glob("1-element/*/relax/record.json"))
        rec.write_text(rec.read_text().replace('"status": "done"', '"status":  "done"'))
        shutil.rmtree(next(camp.glob("2-element/*/relax")))
    _readers_leave_it(cli, manifest, camp)
    if index == "absent":
        assert not (camp / INDEX_FILE).exists()


def test_readers_write_nothing_while_the_folder_is_read_only(applied, tmp_path, cli):
    """The strongest form: with every folder of the campaign read-only (a
    released data set, say), the readers still answer."""
    work = copy_campaign(applied, tmp_path / "w")
    camp, manifest = work / "camp/c", work / "manifest.yaml"
    if os.geteuid() == 0:
        pytest.skip("root ignores permission bits")
    for dirpath, dirs, _ in os.walk(camp):
        os.chmod(dirpath, 0o555)
    try:
        _readers_leave_it(cli, manifest, camp)
    finally:
        for dirpath, dirs, _ in os.walk(camp):
            os.chmod(dirpath, 0o755)
