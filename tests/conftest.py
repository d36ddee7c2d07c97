from __future__ import annotations

import os
import shutil

import pytest

from aimmat.cli.main import run
from tests.helpers import make_emt_campaign


@pytest.fixture
def cli(capsys):
    """Run the CLI in-process: returns (exit code, stdout, stderr)."""

    def _run(*argv):
        code = run([str(a) for a in argv])
        out = capsys.readouterr()
        return code, out.out, out.err

    return _run


@pytest.fixture
def emt_campaign(tmp_path):
    return make_emt_campaign(tmp_path)


def pytest_collection_modifyitems(config, items):
    if os.environ.get("AIMMAT_HEAVY") != "1":
        heavy = pytest.mark.skip(reason="heavy (over 15 min on 2 cores): AIMMAT_HEAVY=1 or make test-heavy runs it")
        for item in items:
            if "heavy" in item.keywords:
                item.add_marker(heavy)
    if shutil.which("pw.x") is None:
        skip = pytest.mark.skip(reason="pw.x not found on PATH")
        for item in items:
            if "needs_qe" in item.keywords:
                item.add_marker(skip)
