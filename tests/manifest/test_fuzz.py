"""Seeded manifest fuzzing: valid manifests, mutated at random, through `aimmat diff`.

Each seed takes one of three valid manifests (the EMT campaign of the tests,
a screen-only EMT campaign with ablations, render targets and an executor
block, and the QE demo) and mutates it with ``random.Random(seed)``: keys
deleted, values swapped for another type, NaN/inf/huge/negative numbers,
long strings, NUL bytes, unicode, path traversal, unknown keys, deep nesting,
YAML aliases, merge keys and raw YAML scalars (5,000-digit and hex integers,
!!binary, impossible dates). For every seed, `aimmat diff` (in process):

- returns 0 or 3 (5 only where a QE profile asks the environment for
  pw.x or pseudopotentials that are not there);
- on an error, says what is wrong where: the manifest's file (with a line
  and a key path, or what is wrong with the file), or the file it names;
- never shows a traceback or raises;
- leaves every file under the test's folder other than the manifest byte-identical.

``AIMMAT_FUZZ_SEEDS`` sets the number of seeds (default 500) and
``AIMMAT_FUZZ_FIRST`` the first one, to replay a failure.
"""

from __future__ import annotations

import copy
import os
import random
import re
import shutil
import time
from pathlib import Path

import pytest
import yaml

from aimmat.cli.main import run
from tests.helpers import ROOT, emt_manifest, make_emt_campaign, tree_digest

FIRST = int(os.environ.get("AIMMAT_FUZZ_FIRST", "0"))
SEEDS = int(os.environ.get("AIMMAT_FUZZ_SEEDS", "500"))
BUDGET_S = 60.0

# ---------------------------------------------------------------- the valid starting points
TEMPLATE = "{#- scope: public -#}\nProject scale: {{ public.generated }} candidates.\n"


def _emt_full() -> dict:
    return emt_manifest()


def _emt_screen() -> dict:
    m = emt_manifest(stages=("screen",))
    m["stages"]["screen"] = {"min_distance_a": 0.5, "density_min_g_cm3": 0.5, "density_max_g_cm3": 25.0}
    m["ablations"] = [{"name": "loose", "screen": {"min_distance_a": 0.3}},
                      {"name": "pre", "screen": {"prerelax_profile": "emt"}}]
    m["render"] = [{"template": "t.md.j2", "output": "tables/project.md"}]
    m["retry"] = {"max_attempts": 3, "mixing_beta_factor": 0.8}
    m["evidence"] = {"scopes": ["public", "screening"], "dedup_keys": ["campaign", "relpath"]}
    m["executor"] = {"kind": "local"}
    return m


def _qe() -> dict:
    m = yaml.safe_load((ROOT / "manifests" / "qe-demo.yaml").read_text())
    m["campaign"]["root"] = "camp"
    return m


BASES = {"emt": _emt_full, "emt-screen": _emt_screen, "qe": _qe}

# ---------------------------------------------------------------- hostile values
LONG = "a" * 5000
STRINGS = [
    "", " ", "x", "a\0b", "\0", LONG, "b" * 300, "../" * 2000, "é漢字🙂", "\u202eevil", "line\nbreak", "tab\there",
    "../../../../etc/passwd", "/etc/passwd", "..", "/", "~", "./../x", "structures/../../..", "/dev/null", "/dev/zero",
    "C:\\Windows\\x", "{ranks", "{x}", "'", '"', "${HOME}", "$(id)", "*", "?", "[", "structures/1-element/*.cif",
    "emt", "qe-fast", "1-element", "kind", "NaN", "inf", "-1", "1e999", "true", "null",
]
NUMBERS = [float("nan"), float("inf"), -float("inf"), 1e308, -1e308, 1e-320, 10**30, -(10**30), -1, 0, 1, 2**63, 2**64,
           -(2**63), 0.5, -0.5, 1e6, 3.7, 100000, 2**31]
# raw YAML put in place of a value as written (not as a string)
RAW = [
    "9" * 5000, "-" + "9" * 5000, "0x" + "f" * 5000, "0o" + "7" * 4000, "0b" + "1" * 4000, "1" + "0" * 400 + ".5",
    ".nan", ".inf", "-.inf", "!!binary AAAA", "!!binary 'AGFhYQ=='", "2024-13-45", "2024-02-30 25:61:00", "!!set {a, b}",
    "!!omap [{a: 1}, {a: 2}]", "!!float 'x'", "!!int 'x'", "!!timestamp 'x'", "!!str 3", "!foo bar", '"\\0x"', '"\\ud800"',
    '"\\x00"', "1:2:3:4:5", "12:00:00", "~", "[" * 60 + "]" * 60, "{a: " * 60 + "1" + "}" * 60, "[" * 3000 + "]" * 3000,
    "*undefined", "&a [*a]", "0777777777777777777777777777", "+.5e-999", "1_000_000", "yes", "Off",
]


class Mutator:
    """Seeded mutations of a manifest tree; raw YAML goes in through placeholders."""

    def __init__(self, seed: int):
        self.rng = random.Random(seed)
        self.raw: dict[str, str] = {}

    def placeholder(self, text: str) -> str:
        token = f"RAWTOKEN{len(self.raw)}X"
        self.raw[token] = text
        return token

    # ---- tree access
    def paths(self, node, at=()):
        yield at
        if isinstance(node, dict):
            for k, v in node.items():
                yield from self.paths(v, at + (k,))
        elif isinstance(node, list):
            for i, v in enumerate(node):
                yield from self.paths(v, at + (i,))

    @staticmethod
    def get(tree, at):
        for p in at:
            tree = tree[p]
        return tree

    def pick(self, tree, containers=False):
        cands = [p for p in self.paths(tree) if p and (not containers or isinstance(self.get(tree, p), (dict, list)))]
        return self.rng.choice(cands) if cands else None

    def put(self, tree, at, value):
        """Set the value at ``at``; nothing when an earlier mutation replaced a node on the way."""
        try:
            if at:
                self.get(tree, at[:-1])[at[-1]] = value
        except (TypeError, KeyError, IndexError):
            pass

    # ---- values
    def value(self, depth=0):
        r = self.rng.random()
        if r < 0.25:
            return self.rng.choice(STRINGS)
        if r < 0.45:
            return self.rng.choice(NUMBERS)
        if r < 0.6:
            return self.placeholder(self.rng.choice(RAW))
        if r < 0.68:
            return self.rng.choice([True, False, None])
        if r < 0.84 and depth < 3:
            return [self.value(depth + 1) for _ in range(self.rng.randrange(4))]
        if depth < 3:
            return {self.key(): self.value(depth + 1) for _ in range(self.rng.randrange(4))}
        return None

    def key(self):
        return self.rng.choice(["kind", "name", "glob", "profile", "x", "unknown_key", "magnitudes", "model", "a\0b",
                                "é", LONG[:2000], "1", "output", "seed", "root", "<<"])

    # ---- mutations
    def delete(self, tree):
        at = self.pick(tree)
        if at:
            parent = self.get(tree, at[:-1])
            del parent[at[-1]]

    def swap(self, tree):
        at = self.pick(tree)
        if at:
            self.put(tree, at, self.value())

    def number(self, tree):
        leaves = [p for p in self.paths(tree) if p and isinstance(self.get(tree, p), (int, float))
                  and not isinstance(self.get(tree, p), bool)]
        at = self.rng.choice(leaves) if leaves else self.pick(tree)
        v = self.rng.choice(NUMBERS) if self.rng.random() < 0.7 else self.placeholder(self.rng.choice(RAW[:12]))
        self.put(tree, at, v)

    def string(self, tree):
        leaves = [p for p in self.paths(tree) if p and isinstance(self.get(tree, p), str)]
        at = self.rng.choice(leaves) if leaves else self.pick(tree)
        old = self.get(tree, at) if at and isinstance(self.get(tree, at), str) else ""
        new = self.rng.choice(STRINGS)
        self.put(tree, at, self.rng.choice([new, old + new, new + old, old.replace("/", "/../", 1) + new[:3]]))

    def unknown_key(self, tree):
        at = self.pick(tree, containers=True)
        node = self.get(tree, at) if at else tree
        if isinstance(node, dict):
            node[self.key()] = self.value()
        elif isinstance(node, list):
            node.insert(self.rng.randrange(len(node) + 1), self.value())

    def nesting(self, tree):
        depth = self.rng.choice([5, 50, 200, 990, 5000])
        text = ("[" * depth + "]" * depth) if self.rng.random() < 0.5 else ("{a: " * depth + "1" + "}" * depth)
        self.put(tree, self.pick(tree), self.placeholder(text))

    def alias(self, tree):
        """Anchor one node and alias it elsewhere (maybe before the anchor, maybe inside it), or merge it."""
        src, dst = self.pick(tree), self.pick(tree)
        if not src or not dst:
            return
        flow = yaml.safe_dump(self.get(tree, src), default_flow_style=True, width=10**9).strip()
        if flow.endswith("..."):
            flow = flow[:-3].strip()
        self.put(tree, src, self.placeholder(f"&anc {flow}"))
        if self.rng.random() < 0.3 and len(dst) > 1:
            self.put(tree, dst[:-1] + ("<<",), self.placeholder("*anc"))
        else:
            self.put(tree, dst, self.placeholder("*anc"))

    def duplicate(self, tree):
        lists = [p for p in self.paths(tree) if isinstance(self.get(tree, p), list) and self.get(tree, p)]
        if lists:
            node = self.get(tree, self.rng.choice(lists))
            node.append(copy.deepcopy(self.rng.choice(node)))

    def tweak(self, tree):
        """A plausible edit (a number scaled, a list reordered): manifests that stay valid reach the plan."""
        at = self.pick(tree)
        v = self.get(tree, at) if at else None
        if isinstance(v, bool) or v is None:
            self.put(tree, at, not v)
        elif isinstance(v, (int, float)):
            self.put(tree, at, type(v)(v * self.rng.choice([0.5, 2, 1.1, -1, 0])))
        elif isinstance(v, list):
            self.rng.shuffle(v)
        elif isinstance(v, dict) and v:
            del v[self.rng.choice(sorted(v, key=str))]

    MUTATIONS = ("delete", "swap", "number", "string", "unknown_key", "nesting", "alias", "duplicate", "tweak")
    WEIGHTS = (3, 4, 4, 3, 2, 1, 1, 1, 4)

    def mutate(self, tree: dict) -> str:
        for _ in range(self.rng.choice([1, 1, 1, 2, 2, 3, 4])):
            getattr(self, self.rng.choices(self.MUTATIONS, self.WEIGHTS)[0])(tree)
        text = yaml.safe_dump(tree, sort_keys=False, allow_unicode=self.rng.random() < 0.5, width=10**9)
        for token, raw in self.raw.items():  # quoted or plain, as a key or a value
            text = re.sub(rf"'{token}'|\"{token}\"|{token}", lambda _m, raw=raw: raw, text)
        return text


def manifest_text(seed: int) -> tuple[str, str]:
    rng = random.Random(seed)
    base = rng.choice(sorted(BASES))
    return base, Mutator(seed).mutate(BASES[base]())


# ---------------------------------------------------------------- the campaign the manifests point at
@pytest.fixture(scope="module")
def arena(tmp_path_factory):
    """Structures, templates and an applied campaign; the fuzzed manifest is written next to them."""
    tmp = tmp_path_factory.mktemp("fuzz")
    path = make_emt_campaign(tmp, _emt_screen())
    shutil.copytree(ROOT / "manifests" / "structures-qe", tmp / "structures-qe")
    (tmp / "t.md.j2").write_text(TEMPLATE)
    assert run(["apply", str(path), "-q", "--jobs", "1"]) == 0
    assert run(["diff", str(path)]) == 0
    path.unlink()
    return tmp


# "<manifest>:<line>: <key path>: <what is wrong>", one line per problem of a failed validation
_VALIDATION_LINE = re.compile(r"^  \S*fuzz\.yaml:\d+: [^\s(][^\n]*?: \S")


def _check(seed: int, base: str, text: str, code: int, out: str, err: str, path: Path) -> None:
    where = f"seed {seed} ({base}); replay with AIMMAT_FUZZ_FIRST={seed} AIMMAT_FUZZ_SEEDS=1\n--- manifest ---\n{text[:3000]}"
    allowed = {0, 3, 5} if base == "qe" else {0, 3}
    assert code in allowed, f"exit {code}\n{err}\n{where}"
    assert "Traceback" not in err and "Traceback" not in out, f"{err}\n{where}"
    if code == 0:
        assert "Plan:" in out or "No changes" in out, f"{out}\n{where}"
        return
    assert err.startswith("error: "), f"{err}\n{where}"
    if code == 5:  # the environment: pw.x or a pseudopotential family missing here
        assert "pw.x" in err or "pseudo" in err.lower() or "UPF" in err, f"{err}\n{where}"
        return
    if err.startswith("error: invalid manifest:"):  # validation: every problem with its line and key path
        problems = [ln for ln in err.splitlines()[1:] if not ln.startswith("  fix: ")]
        assert problems and all(_VALIDATION_LINE.match(ln) for ln in problems), f"{err}\n{where}"
    elif str(path) in err:  # the manifest: a line and a key, or what is wrong with the whole file
        assert re.search(r"fuzz\.yaml(:\d+){0,2}: \S", err), f"{err}\n{where}"
    else:  # a file the manifest names (a structure, a template): that file
        assert re.match(r"error: (/\S+|.*\bfile\b)", err), f"{err}\n{where}"


def _digest(arena: Path) -> dict[str, str]:
    """Every file under the folder but the fuzzed manifest."""
    return {k: v for k, v in tree_digest(arena).items() if k != "fuzz.yaml"}


def test_fuzzed_manifests_diff_cleanly(arena, capsys):
    path = arena / "fuzz.yaml"
    before = _digest(arena)
    outcomes: dict[int, int] = {}
    start = time.monotonic()
    for seed in range(FIRST, FIRST + SEEDS):
        base, text = manifest_text(seed)
        path.write_text(text, encoding="utf-8")
        try:
            code = run(["diff", str(path)])
        except BaseException as exc:  # noqa: BLE001 - the point: nothing escapes
            pytest.fail(f"seed {seed} ({base}) raised {type(exc).__name__}: {exc}\n--- manifest ---\n{text[:3000]}")
        out, err = capsys.readouterr()
        _check(seed, base, text, code, out, err, path)
        outcomes[code] = outcomes.get(code, 0) + 1
        assert _digest(arena) == before, f"seed {seed} ({base}) changed the folder"
    elapsed = time.monotonic() - start
    assert elapsed < BUDGET_S, f"{SEEDS} manifests took {elapsed:.0f} s"
    if SEEDS >= 100:  # the mutator makes both kinds
        assert outcomes.get(3, 0) > SEEDS // 3 and outcomes.get(0, 0) > 0, outcomes


def test_fuzzed_manifests_apply_refused_cleanly(arena, capsys):
    """A handful of the invalid ones through `apply` too: exit 3 and nothing written."""
    path = arena / "fuzz.yaml"
    before = _digest(arena)
    tried = 0
    for seed in range(10_000, 10_200):
        base, text = manifest_text(seed)
        path.write_text(text, encoding="utf-8")
        if run(["diff", str(path)]) != 3:
            capsys.readouterr()
            continue
        capsys.readouterr()
        code = run(["apply", str(path), "-q", "--jobs", "1"])
        out, err = capsys.readouterr()
        _check(seed, base, text, code, out, err, path)
        assert code == 3
        assert _digest(arena) == before, f"seed {seed} ({base}): apply changed the folder"
        tried += 1
        if tried == 6:
            break
    assert tried == 6


def test_mutator_is_seeded():
    assert manifest_text(7) == manifest_text(7)
    assert len({manifest_text(s)[1] for s in range(20)}) == 20
