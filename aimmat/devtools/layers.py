"""Import-layering checker for the aimmat package.

Run ``python -m aimmat.devtools.layers [--root DIR] [--list]``. Every ``.py``
file is parsed with :mod:`ast` (nothing is imported), every in-package import
is collected, module-level and function-level alike, except those under
``if TYPE_CHECKING:``, and the rules below are enforced.
"""

from __future__ import annotations

import argparse
import ast
import sys
from collections.abc import Iterator
from pathlib import Path

import aimmat

# The layers, lowest first; names are relative to the package ("" is the
# package's own __init__ only). A module belongs to the layer of its longest
# matching prefix and may import only its own layer or lower ones. The data
# flows manifest -> resolve -> plan -> apply: the state is read by plan and
# written by apply; engines sit below the stages that drive them; the CLI is
# the top entry point, so nothing else may import it.
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("foundation", ("", "errors", "identity", "runtime", "elastic")),
    ("engines", ("engines",)),
    ("stages", ("stages",)),
    ("model", ("model",)),
    ("manifest", ("manifest",)),
    ("state", ("state",)),
    ("resolve", ("resolve",)),
    ("plan", ("plan",)),
    ("candidates", ("candidates",)),
    ("evidence", ("evidence",)),
    ("render", ("render",)),
    ("export", ("export",)),
    ("apply", ("apply",)),
    ("cli", ("cli",)),
    ("devtools", ("devtools",)),
)

Import = tuple[str, int, str]  # (importer, line, imported module)


def layer_of(module: str, package: str = "aimmat") -> int | None:
    """Return the index in LAYERS of `module`, or None when it matches none."""
    best, best_len = None, -1
    for index, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            full = f"{package}.{prefix}" if prefix else package
            # The bare package prefix matches only the package itself, so a
            # new top-level module must be placed in the table explicitly.
            hit = module == full or (prefix and module.startswith(full + "."))
            if hit and len(full) > best_len:
                best, best_len = index, len(full)
    return best


def discover(root: Path, package: str) -> dict[str, Path]:
    """Map each module name under `root` to its file."""
    modules = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join([package, *parts])] = path
    return modules


def _is_type_checking(test: ast.expr) -> bool:
    """True for ``TYPE_CHECKING`` and ``typing.TYPE_CHECKING``."""
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _walk(node: ast.AST) -> Iterator[ast.AST]:
    """ast.walk, minus the bodies of ``if TYPE_CHECKING:`` (never run)."""
    stack = [node]  # iterative: deeply nested expressions must not recurse
    while stack:
        node = stack.pop()
        yield node
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            stack.extend(node.orelse)
        else:
            stack.extend(ast.iter_child_nodes(node))


def _targets(node: ast.AST, module: str, is_pkg: bool, known: set[str]) -> list[str]:
    """The module names one import statement imports."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if not isinstance(node, ast.ImportFrom):
        return []
    base = node.module or ""
    if node.level:
        # Relative imports resolve against the module's own package.
        parts = module.split(".") if is_pkg else module.split(".")[:-1]
        parts = parts[: len(parts) - (node.level - 1)]
        base = ".".join(parts + ([base] if base else []))
    # `from pkg import name` imports pkg.name when that is a submodule.
    return [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]


def collect(modules: dict[str, Path], package: str) -> tuple[list[Import], list[str]]:
    """Every in-package import of every module, plus parse errors."""
    known, imports, errors = set(modules), [], []
    for module, path in modules.items():
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        except (SyntaxError, UnicodeDecodeError) as exc:
            errors.append(f"{path}: {module}: cannot parse: {exc}")
            continue
        is_pkg = path.name == "__init__.py"
        for node in _walk(tree):
            for target in _targets(node, module, is_pkg, known):
                if target == package or target.startswith(package + "."):
                    imports.append((module, node.lineno, target))
    return sorted(imports), errors  # the stack walk yields in no useful order


def _existing(target: str, known: set[str]) -> str | None:
    """The deepest existing module `target` names (a package -> its __init__)."""
    while target and target not in known:
        target = target.rpartition(".")[0]
    return target or None


def _import_rules(imp: Import, where: str, package: str) -> list[str]:
    """Rules 1, 2 and 4 for one import."""
    importer, _, imported = imp
    head = f"{where}: {importer} -> {imported}"
    cli = f"{package}.cli"
    if imported == cli or imported.startswith(cli + "."):
        if not (importer == cli or importer.startswith(cli + ".")):
            return [f"{head}: imports the CLI (nothing outside {cli} may)"]
    out = []
    src, dst = layer_of(importer, package), layer_of(imported, package)
    if src is not None and dst is not None and dst > src:
        out.append(f"{head}: upward import ({LAYERS[src][0]}[{src}] may not "
                   f"import {LAYERS[dst][0]}[{dst}])")
    parent, _, leaf = importer.rpartition(".")
    if leaf == "base" and imported.startswith(parent + ".") and not (
        imported == importer or imported.startswith(importer + ".")
    ):
        out.append(f"{head}: base module imports a sibling (its implementations)")
    return out


def _cycles(imports: list[Import], known: set[str]) -> list[tuple]:
    """Strongly connected components of size > 1: (importer, line, imported, members)."""
    graph: dict[str, dict[str, int]] = {m: {} for m in known}
    for importer, line, imported in imports:
        dst = _existing(imported, known)
        if dst and dst != importer:  # self-imports are harmless
            graph[importer].setdefault(dst, line)
    # Plain reachability per module: O(n * edges), ample for a few hundred.
    reach = {m: _reachable(graph, m) for m in graph}
    seen, out = set(), []
    for m in sorted(graph):
        scc = sorted(n for n in reach[m] if m in reach[n])
        if len(scc) > 1 and m not in seen:
            seen.update(scc)
            line, dst = min((ln, d) for d, ln in graph[m].items() if d in scc)
            out.append((m, line, dst, scc))
    return out


def _reachable(graph: dict[str, dict[str, int]], start: str) -> set[str]:
    """Modules reachable from `start` by one or more imports."""
    found, stack = set(), list(graph[start])
    while stack:
        node = stack.pop()
        if node not in found:
            found.add(node)
            stack.extend(graph[node])
    return found


def check(root: Path, package: str = "aimmat") -> list[str]:
    """Return every layering violation under package folder `root`."""
    root = Path(root)
    modules = discover(root, package)
    imports, out = collect(modules, package)

    def where(module: str, line: int) -> str:
        return f"{(Path(root.name) / modules[module].relative_to(root)).as_posix()}:{line}"

    for module in modules:
        if layer_of(module, package) is None:
            out.append(f"{where(module, 1)}: {module}: unassigned module: add it to LAYERS")
    for imp in imports:
        out.extend(_import_rules(imp, where(imp[0], imp[1]), package))
    for module, line, dst, scc in _cycles(imports, set(modules)):
        out.append(f"{where(module, line)}: {module} -> {dst}: import cycle among "
                   f"{', '.join(scc)}")
    return out


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    parser = argparse.ArgumentParser(prog="python -m aimmat.devtools.layers",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path(aimmat.__file__).parent,
                        help="package folder to check (default: installed aimmat)")
    parser.add_argument("--list", action="store_true", help="print module -> layer")
    args = parser.parse_args(argv)
    modules = discover(args.root, "aimmat")
    if args.list:
        for module in modules:
            index = layer_of(module)
            print(f"{module} -> {'UNASSIGNED' if index is None else LAYERS[index][0]}")
        return 0
    violations = check(args.root)
    print("\n".join(violations) or "layers: OK ({} modules, {} imports)".format(
        len(modules), len(collect(modules, "aimmat")[0])))
    return 1 if violations else 0


if __name__ == "__main__":
    sys.exit(main())
