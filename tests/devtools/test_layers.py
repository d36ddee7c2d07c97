"""Tests for the import-layering checker, on small synthetic package trees."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import aimmat
from aimmat.devtools.layers import check

REPO = Path(__file__).resolve().parents[2]

# A minimal tree that respects every rule: each layer imports only lower ones.
CLEAN = {
    "__init__.py": '"""Fake aimmat."""\n',
    "errors.py": "class AimmatError(Exception):\n    pass\n",
    "engines/__init__.py": "",
    "engines/base.py": "from aimmat.errors import AimmatError\n",
    "engines/emt.py": "from aimmat.engines.base import AimmatError\n",
    "state/__init__.py": "",
    "state/x.py": "import aimmat.errors\n",
    "plan/__init__.py": "",
    "plan/a.py": "from aimmat.state import x\n",
    "apply/__init__.py": "",
    "apply/y.py": "from aimmat.plan.a import x\n",
    "apply/z.py": "from . import y\n",
    "cli/__init__.py": "",
    "cli/main.py": "from aimmat.apply import z\n",
}


def build(tmp_path: Path, files: dict[str, str]) -> Path:
    """Write `files` (path -> source) as a package folder tmp_path/aimmat."""
    root = tmp_path / "aimmat"
    for rel, source in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(source), encoding="utf-8")
    return root


def violations(tmp_path: Path, changes: dict[str, str]) -> list[str]:
    """Check CLEAN with `changes` (path -> source) applied."""
    return check(build(tmp_path, {**CLEAN, **changes}))


def test_clean_tree_passes(tmp_path):
    assert check(build(tmp_path, CLEAN)) == []


def test_upward_import_fails_naming_both(tmp_path):
    found = violations(tmp_path, {"state/x.py": "import aimmat.apply.y\n"})
    [line] = [v for v in found if "upward" in v]
    assert "aimmat/state/x.py:1" in line
    assert "aimmat.state.x" in line and "aimmat.apply.y" in line


def test_function_level_upward_import_fails(tmp_path):
    source = """\
        def later():
            from aimmat.apply.y import thing
            return thing
        """
    found = violations(tmp_path, {"state/x.py": source})
    assert any("aimmat/state/x.py:2" in v and "upward" in v for v in found), found


def test_relative_import_within_layer_passes(tmp_path):
    assert violations(tmp_path, {"apply/z.py": "from .y import x\nfrom . import y\n"}) == []


def test_relative_import_upward_fails(tmp_path):
    found = violations(tmp_path, {"state/x.py": "from ..apply import y\n"})
    assert any("aimmat.state.x -> aimmat.apply.y" in v and "upward" in v for v in found)


def test_relative_import_from_package_init_resolves_against_itself(tmp_path):
    # In pkg/__init__.py, `from . import m` means pkg.m, not the parent's m.
    found = violations(tmp_path, {"state/__init__.py": "from . import x\n"})
    assert found == []


def test_cli_import_outside_cli_fails_once(tmp_path):
    found = violations(tmp_path, {"apply/z.py": "import aimmat.cli\n"})
    assert len(found) == 1
    assert "aimmat.apply.z -> aimmat.cli" in found[0] and "CLI" in found[0]


def test_cycle_within_one_layer_fails_naming_both(tmp_path):
    found = violations(tmp_path, {
        "plan/a.py": "from aimmat.plan import b\n",
        "plan/b.py": "def f():\n    import aimmat.plan.a\n",  # function-level counts
    })
    [line] = found
    assert "cycle" in line and "aimmat.plan.a" in line and "aimmat.plan.b" in line


def test_self_import_is_not_a_cycle(tmp_path):
    assert violations(tmp_path, {"plan/a.py": "import aimmat.plan.a\n"}) == []


def test_base_importing_its_sibling_fails(tmp_path):
    found = violations(tmp_path, {"engines/base.py": "from aimmat.engines import emt\n"})
    assert any("aimmat.engines.base -> aimmat.engines.emt" in v and "base" in v
               for v in found), found


def test_type_checking_imports_are_ignored(tmp_path):
    source = """\
        from typing import TYPE_CHECKING
        if TYPE_CHECKING:
            from aimmat.apply.y import Thing
            import aimmat.cli
        """
    assert violations(tmp_path, {"state/x.py": source}) == []


def test_unassigned_module_fails(tmp_path):
    found = violations(tmp_path, {"misc.py": "X = 1\n"})
    assert any("aimmat.misc" in v and "unassigned" in v for v in found), found


def test_real_package_has_no_violations():
    found = check(Path(aimmat.__file__).parent)
    assert not found, "\n".join(found)


def run_cli(root: Path) -> subprocess.CompletedProcess:
    """Run the checker as `python -m` on `root`."""
    return subprocess.run(
        [sys.executable, "-m", "aimmat.devtools.layers", "--root", str(root)],
        capture_output=True, text=True, cwd=REPO, timeout=120,
    )


def test_cli_exit_codes(tmp_path):
    ok = run_cli(build(tmp_path / "good", CLEAN))
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert ok.stdout.startswith("layers: OK (")
    bad = run_cli(build(tmp_path / "bad", {**CLEAN, "state/x.py": "import aimmat.apply.y\n"}))
    assert bad.returncode == 1
    assert "aimmat.apply.y" in bad.stdout
