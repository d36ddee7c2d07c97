"""Builders for test campaigns: structure files, manifests, folder snapshots."""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

from make_demo_structures import emt_structures, write  # noqa: E402


def emt_manifest(stages=("screen", "relax", "scf", "elastic"), profile=None, **extra) -> dict:
    prof = {"kind": "emt", "fmax_ev_per_a": 0.05, "max_steps": 300}
    prof.update(profile or {})
    st = {}
    for s in stages:
        st[s] = {} if s == "screen" else {"profile": "emt"}
    if "elastic" in st:
        st["elastic"].update({"magnitudes": [-0.01, 0.01]})
    m = {
        "campaign": {"name": "c", "root": "camp"},
        "profiles": {"emt": prof},
        "candidate_sets": [
            {"name": "1-element", "elements": 1, "source": {"kind": "files", "glob": "structures/1-element/*.cif"}},
            {"name": "2-element", "elements": 2, "source": {"kind": "files", "glob": "structures/2-element/*.cif"}},
        ],
        "stages": st,
    }
    m.update(extra)
    return m


def make_emt_campaign(tmp: Path, manifest: dict | None = None) -> Path:
    """Structure files + manifest.yaml in ``tmp``; returns the manifest path."""
    if not (tmp / "structures").exists():
        write(emt_structures(), tmp / "structures")
    path = tmp / "manifest.yaml"
    path.write_text(yaml.safe_dump(manifest or emt_manifest(), sort_keys=False))
    return path


def tree_digest(folder: Path) -> dict[str, str]:
    """Path -> sha256 of every file under ``folder`` (empty when absent)."""
    out = {}
    if not folder.exists():
        return out
    for dirpath, _, files in os.walk(folder):
        for f in files:
            p = Path(dirpath) / f
            out[str(p.relative_to(folder))] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def final_records(campaign: Path) -> dict[str, dict]:
    """(set/cand/stage) -> key, status and outputs of every stage record."""
    import json

    out = {}
    for rec in sorted(campaign.glob("*/*/*/record.json")):
        data = json.loads(rec.read_text())
        out[str(rec.parent.relative_to(campaign))] = {"key": data["key"], "status": data["status"], "outputs": data["outputs"]}
    for cand in sorted(campaign.glob("*/*/candidate.json")):
        data = json.loads(cand.read_text())
        out[str(cand.parent.relative_to(campaign))] = {"key": data["key"], "structure_sha256": data["structure_sha256"]}
    return out


def applied_campaign(tmp: Path, stages=("screen",)) -> Path:
    """An EMT campaign (``emt_manifest(stages=...)``) under ``tmp``, applied
    once through the CLI in-process; returns ``tmp``. Module fixtures build
    one and each test copies it (``copy_campaign``)."""
    from aimmat.cli.main import run

    path = make_emt_campaign(tmp, emt_manifest(stages=stages))
    assert run(["apply", str(path), "-q", "--jobs", "1"]) == 0
    return tmp


def copy_campaign(src: Path, dest: Path) -> Path:
    """A copy of an applied campaign folder tree (links kept as links)."""
    import shutil

    shutil.copytree(src, dest, symlinks=True)
    return dest


def load_bench(name: str):
    """The module of script ``bench/<name>.py`` (bench/ is not a package)."""
    import importlib.util

    root = Path(__file__).resolve().parents[1]
    spec = importlib.util.spec_from_file_location(f"bench_{name}", root / "bench" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod
