"""Crash-safe writes: temp file in the same folder, fsync, rename, fsync of the folder;
a failure at any point leaves the old file and no temp file."""

from __future__ import annotations

import json
import os

import pytest

from aimmat.state import atomic
from aimmat.state.atomic import TMP_PREFIX, fsync_dir, write_bytes_atomic, write_json_atomic


def test_creates_parent_folders_and_writes_exact_bytes(tmp_path):
    data = bytes(range(256)) * 3
    target = tmp_path / "a" / "b" / "c.bin"
    write_bytes_atomic(target, data)
    assert target.read_bytes() == data
    assert sorted(p.name for p in target.parent.iterdir()) == ["c.bin"]


def test_replaces_content_and_leaves_no_temp_file(tmp_path):
    target = tmp_path / "r.bin"
    write_bytes_atomic(target, b"old content, longer than the new one")
    write_bytes_atomic(target, b"new")
    assert target.read_bytes() == b"new"  # replaced, not overwritten in place (no stale tail)
    write_bytes_atomic(target, b"")
    assert target.read_bytes() == b""
    assert [p.name for p in tmp_path.iterdir()] == ["r.bin"]


def test_replace_is_a_new_inode_so_readers_of_the_old_file_see_old_bytes(tmp_path):
    target = tmp_path / "r.bin"
    write_bytes_atomic(target, b"first")
    with open(target, "rb") as reader:
        ino = os.fstat(reader.fileno()).st_ino
        write_bytes_atomic(target, b"second")
        assert reader.read() == b"first"  # an open reader never sees a half-written file
    assert os.stat(target).st_ino != ino and target.read_bytes() == b"second"


def test_file_is_fsynced_before_the_rename_and_the_folder_after(tmp_path, monkeypatch):
    calls = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        path = os.readlink(f"/proc/self/fd/{fd}")
        calls.append(("fsync", path))
        return real_fsync(fd)

    def replace(src, dst):
        calls.append(("replace", str(src), str(dst)))
        return real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    target = tmp_path / "d" / "x.json"
    write_bytes_atomic(target, b"{}")
    kinds = [c[0] for c in calls]
    assert kinds == ["fsync", "replace", "fsync"], calls
    tmp = calls[1][1]
    assert calls[0][1] == tmp  # the temp file's data reaches the disk first
    assert os.path.dirname(tmp) == str(target.parent) and os.path.basename(tmp).startswith(TMP_PREFIX)
    assert calls[1][2] == str(target)
    assert calls[2][1] == str(target.parent)  # then the rename itself (the folder entry)


@pytest.mark.parametrize("fail_at", ["write", "fsync", "replace"])
def test_failure_in_the_middle_leaves_the_old_file_and_no_temp(tmp_path, monkeypatch, fail_at):
    target = tmp_path / "r.json"
    write_json_atomic(target, {"v": 1})
    before = target.read_bytes()

    class Crash(Exception):
        pass

    def boom(*a, **k):
        raise Crash(fail_at)

    if fail_at == "write":
        real_fdopen = os.fdopen

        class Half:
            def __init__(self, fh):
                self.fh = fh

            def __enter__(self):
                return self

            def __exit__(self, *exc):
                self.fh.close()

            def write(self, data):
                self.fh.write(data[: len(data) // 2])
                raise Crash("disk full")

        monkeypatch.setattr(atomic.os, "fdopen", lambda fd, mode: Half(real_fdopen(fd, mode)))
    else:
        monkeypatch.setattr(atomic.os, fail_at, boom)
    with pytest.raises(Crash):
        write_json_atomic(target, {"v": 2, "pad": "x" * 1000})
    monkeypatch.undo()
    assert target.read_bytes() == before and json.loads(before) == {"v": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]


def test_keyboard_interrupt_also_cleans_up(tmp_path, monkeypatch):
    target = tmp_path / "r.bin"
    write_bytes_atomic(target, b"old")

    def interrupted(src, dst):
        raise KeyboardInterrupt

    monkeypatch.setattr(atomic.os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        write_bytes_atomic(target, b"new")
    monkeypatch.undo()
    assert target.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["r.bin"]


def test_json_is_canonical_sorted_with_trailing_newline(tmp_path):
    target = tmp_path / "r.json"
    write_json_atomic(target, {"b": [1, 2], "a": {"z": None, "y": "é"}})
    text = target.read_text()
    assert text.endswith("}\n")
    assert json.loads(text) == {"b": [1, 2], "a": {"z": None, "y": "é"}}
    assert text.index('"a"') < text.index('"b"') and text.index('"y"') < text.index('"z"')
    write_json_atomic(tmp_path / "s.json", {"a": {"y": "é", "z": None}, "b": [1, 2]})
    assert (tmp_path / "s.json").read_bytes() == target.read_bytes()  # key order does not matter


def test_unserialisable_json_leaves_the_old_file(tmp_path):
    target = tmp_path / "r.json"
    write_json_atomic(target, {"v": 1})
    with pytest.raises(TypeError):
        write_json_atomic(target, {"v": object()})
    assert json.loads(target.read_text()) == {"v": 1} and [p.name for p in tmp_path.iterdir()] == ["r.json"]


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def test_written_file_gets_the_mode_of_a_plain_write(tmp_path, umask_022):
    plain = tmp_path / "plain.json"
    plain.write_bytes(b"{}")
    target = tmp_path / "r.json"
    write_bytes_atomic(target, b"{}")
    assert os.stat(target).st_mode & 0o777 == os.stat(plain).st_mode & 0o777 == 0o644


def test_fsync_dir_of_missing_folder_raises(tmp_path):
    fsync_dir(tmp_path)  # an existing folder is fine
    with pytest.raises(FileNotFoundError):
        fsync_dir(tmp_path / "missing")
