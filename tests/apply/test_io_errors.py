"""A folder apply cannot write (an immutable or read-only record, a full
disk): the task fails with ``io_error`` naming the path and errno, the other
candidates go on, the journal is closed with ``apply_end``, apply exits 4
with a clear message and no traceback.

Tests run as root in CI, where permission bits stop no write: the failing
write is injected at the runner's writer (``write_json_atomic``) instead of
with ``chmod 0555``.
"""

from __future__ import annotations

import errno
import json

import pytest

from aimmat.apply import executor, runner
from aimmat.state import journal
from tests.helpers import emt_manifest, make_emt_campaign


@pytest.fixture
def campaign(tmp_path):
    return make_emt_campaign(tmp_path, emt_manifest(stages=("screen",)))


def _camp(manifest):
    return manifest.parent / "camp" / "c"


def _refuse(monkeypatch, module, where: str, exc=PermissionError, code=errno.EACCES, text="Permission denied"):
    """Make ``module.write_json_atomic`` raise for paths containing ``where``."""
    real = module.write_json_atomic

    def write(path, obj):
        if where in str(path):
            raise exc(code, text, str(path))
        return real(path, obj)

    monkeypatch.setattr(module, "write_json_atomic", write)


@pytest.mark.parametrize("jobs", [1, 2])
def test_unwritable_record_fails_its_task_and_the_others_go_on(campaign, cli, monkeypatch, jobs):
    _refuse(monkeypatch, runner, "1-element/Cu/screen/record.json")
    code, out, err = cli("apply", campaign, "-q", "--jobs", jobs)
    assert code == 4
    assert "Traceback" not in err
    rec = _camp(campaign) / "1-element/Cu/screen/record.json"
    assert f"failed 1-element/Cu screen: io_error: file system error at {rec}: [Errno 13] Permission denied" in err
    assert "could not read or write the campaign folder" in err and "fix:" in err
    assert "screen done 4" in out  # every other candidate was screened
    for c in ("1-element/Al", "1-element/Ni", "2-element/CuAu", "2-element/NiAl"):
        assert json.loads((_camp(campaign) / c / "screen/record.json").read_text())["status"] == "done"
    assert not rec.exists()
    events = journal.read(_camp(campaign))
    assert events[-1]["event"] == "apply_end"
    assert journal.open_attempts(events) == {}
    monkeypatch.undo()  # the folder is writable again: the next apply does the rest
    code, out, _ = cli("apply", campaign, "-q", "--jobs", 1)
    assert code == 0 and "screen done 1" in out


def test_unwritable_attempt_folder_after_start_is_closed_and_resumed(campaign, cli, monkeypatch):
    _refuse(monkeypatch, runner, "1-element/Cu/screen/attempt-1/outcome.json", OSError, errno.ENOSPC, "No space left on device")
    code, out, err = cli("apply", campaign, "-q", "--jobs", 1)
    assert code == 4 and "Traceback" not in err
    assert "io_error" in err and "attempt-1/outcome.json: [Errno 28] No space left on device" in err
    camp = _camp(campaign)
    rec = json.loads((camp / "1-element/Cu/screen/record.json").read_text())
    assert rec["status"] == "running"  # the record is the truth: the next apply resumes it
    events = journal.read(camp)
    cu = [e for e in events if e.get("cand") == "Cu" and e.get("stage") == "screen"]
    assert [e["event"] for e in cu] == ["stage_start", "stage_interrupted"]
    assert cu[-1]["failure_code"] == "io_error" and "No space left" in cu[-1]["message"]
    assert events[-1]["event"] == "apply_end" and journal.open_attempts(events) == {}
    monkeypatch.undo()
    code, out, _ = cli("apply", campaign, "-q", "--jobs", 1)
    assert code == 0 and "screen done 1" in out
    rec = json.loads((camp / "1-element/Cu/screen/record.json").read_text())
    assert rec["status"] == "done" and [a["status"] for a in rec["attempts"]] == ["interrupted", "done"]


def test_a_file_where_the_attempt_folder_goes_is_replaced(campaign, cli):
    """An unrecorded leftover at attempt-<n> (here a file) is not evidence: removed, then the attempt runs."""
    sdir = _camp(campaign) / "1-element/Cu/screen"
    sdir.mkdir(parents=True)
    (sdir / "attempt-1").write_text("left over\n")
    code, out, err = cli("apply", campaign, "-q", "--jobs", 1)
    assert code == 0, err
    assert (sdir / "attempt-1/outcome.json").is_file()


def test_unwritable_campaign_file_still_closes_the_journal(campaign, cli, monkeypatch):
    _refuse(monkeypatch, executor, "campaign.json", OSError, errno.EROFS, "Read-only file system")
    code, _, err = cli("apply", campaign, "-q", "--jobs", 1)
    assert code == 4 and "Traceback" not in err
    assert f"{_camp(campaign) / 'campaign.json'}: Read-only file system" in err and "fix:" in err
    events = journal.read(_camp(campaign))
    assert events[-1]["event"] == "apply_end" and "Read-only file system" in events[-1]["error"]


def test_import_that_cannot_write_fails_cleanly(campaign, cli, monkeypatch):
    _refuse(monkeypatch, runner, "2-element/CuAu/candidate.json")
    code, out, err = cli("apply", campaign, "-q", "--jobs", 1)
    assert code == 4 and "Traceback" not in err
    assert "failed 2-element/CuAu import: io_error" in err and "[Errno 13] Permission denied" in err
    assert not (_camp(campaign) / "2-element/CuAu/screen").exists()  # nothing after a failed import
    assert json.loads((_camp(campaign) / "2-element/NiAl/screen/record.json").read_text())["status"] == "done"
    assert journal.read(_camp(campaign))[-1]["event"] == "apply_end"
