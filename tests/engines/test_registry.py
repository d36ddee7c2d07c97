"""The engine registry is data: engines load by name, one at a time."""

from __future__ import annotations

import ast
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest

import aimmat.engines.base as base
from aimmat.engines import ENGINES, engine_version, get_engine


def _modules_after(code: str) -> set[str]:
    """aimmat.engines.* and heavy modules loaded by ``code`` in a fresh interpreter."""
    probe = code + "\nimport sys; print(' '.join(m for m in sys.modules if m.startswith(('aimmat.engines', 'torch', 'chgnet'))))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=120)
    return set(out.stdout.split())


def test_base_imports_no_concrete_engine():
    tree = ast.parse(Path(base.__file__).read_text())
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)} | {
        a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert not {m for m in imported if m and m.startswith("aimmat.")}
    loaded = _modules_after("import aimmat.engines")
    assert loaded == {"aimmat.engines", "aimmat.engines.base", "aimmat.engines.run_profile"}


def test_get_engine_by_name_loads_only_that_engine():
    loaded = _modules_after("from aimmat.engines import get_engine; print(get_engine({'kind': 'emt'}).name)")
    assert "aimmat.engines.emt" in loaded
    assert not {m for m in loaded if m.startswith(("aimmat.engines.qe", "aimmat.engines.chgnet", "torch", "chgnet"))}


def test_get_engine_caches_per_kind_and_model():
    eng = get_engine({"kind": "emt"})
    assert eng is get_engine({"kind": "emt", "fmax_ev_per_a": 0.01}) and eng.name == "emt"
    with pytest.raises(ValueError, match="unknown engine kind 'vasp'"):
        get_engine({"kind": "vasp"})
    for kind, target in ENGINES.items():
        assert base.engine_class(kind).__name__ == target.split(":")[1]


def test_chgnet_model_from_profile_without_loading_weights():
    eng = base.engine_class("chgnet").from_profile({"kind": "chgnet", "model": "0.2.0"})
    assert eng.model_version == "0.2.0" and eng._calc is None


def test_engine_version_emt_is_the_ase_version():
    assert engine_version("emt") == f"ase {version('ase')}"
    assert engine_version("chgnet").startswith("chgnet ")


def test_pw_version_of_a_hanging_or_broken_command_is_an_environment_problem(tmp_path, monkeypatch):
    """A pw_command that never answers, or cannot start, is exit 5 with a reason, not a traceback."""
    import subprocess

    import pytest

    from aimmat.engines.qe import execute
    from aimmat.errors import EnvironmentProblem

    def hang(*a, **kw):
        raise subprocess.TimeoutExpired(a[0], 60)

    monkeypatch.setattr(execute.subprocess, "run", hang)
    with pytest.raises(EnvironmentProblem, match="did not print its version"):
        execute.pw_version.__wrapped__("true")
    exe = tmp_path / "pw.x"
    exe.write_text("not a program")
    exe.chmod(0o755)
    monkeypatch.undo()
    with pytest.raises(EnvironmentProblem, match="could not be started"):
        execute.pw_version.__wrapped__(str(exe))
