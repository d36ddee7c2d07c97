"""Render a manifest's targets: the files of <campaign>/manuscript/, hashed, with a lock file.

``build`` computes every output's bytes from the snapshot and writes
nothing; apply's render step (``aimmat.apply.render_step``) writes them
under the campaign lock. Every output starts with the sha256 of the snapshot and of the template
that made it (CSV: a sidecar ``.sha256.json``), and ``render.lock.json``
lists each output with its sha256, the command, aimmat and package
versions, pw.x's version and the pseudopotential md5s the records used.
Nothing in it depends on the clock: rendering twice gives the same bytes.
"""

from __future__ import annotations

import hashlib
import os
import json
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from aimmat import __version__
from aimmat.evidence.snapshot import snapshot as make_snapshot
from aimmat.identity import canonical_json
from aimmat.manifest.load import CampaignSpec
from aimmat.evidence.figures import render_figures
from aimmat.manifest.templates import COMPOSITE, declared_scope
from aimmat.render.scoped import COMMENT, render_template, sha256_text
from aimmat.state.atomic import json_bytes
from aimmat.state.scan import Observed
from aimmat.errors import RenderError

PACKAGES = ("numpy", "pydantic", "pymatgen", "ase", "spglib", "smact", "chgnet", "torch", "jinja2")


def _versions() -> dict:
    out = {}
    for p in PACKAGES:
        try:
            out[p] = version(p)
        except PackageNotFoundError:
            out[p] = None
    return out


def build(spec: CampaignSpec, observed: Observed, command: list[str] | None = None) -> tuple[dict, list[tuple[str, bytes]]]:
    """(render lock, [(path relative to the campaign folder, bytes)]) of the
    manifest's targets, from ``observed``. Renders every template before
    returning: an error (scope, template) writes nothing."""
    targets = spec.manifest.render
    if not targets:
        raise RenderError(f"{spec.path}: `render:` declares no targets", fix="add render targets (see manifests/demo.yaml)")
    # existence and scope declarations were checked when the manifest was loaded
    templates = []
    for t in targets:
        path = Path(os.path.abspath(spec.base / t.template))
        templates.append((path, declared_scope(path), t.output or (path.name[:-3] if path.name.endswith(".j2") else path.name)))
    snap = make_snapshot(spec, observed)
    snap_text = canonical_json(snap)
    snap_sha = sha256_text(snap_text)
    meta = {"campaign": snap["campaign"], "as_of": snap["as_of"], "snapshot_sha256": snap_sha,
            "manifest_sha256": snap["manifest_sha256"], "aimmat": __version__, "protocol": snap["protocol"]}
    rendered = []
    figures = render_figures(snap)
    blocks = {}
    ordered = [t for t in templates if t[1] != COMPOSITE] + [t for t in templates if t[1] == COMPOSITE]
    for path, scope, out in ordered:
        text = render_template(path, snap, meta, blocks, sorted(f"figures/{n}" for n in figures))
        if scope != COMPOSITE:
            blocks[out] = text
        tsha = sha256_text(path.read_text())
        header = f"aimmat {__version__}; snapshot sha256 {snap_sha}; template {path.name} sha256 {tsha}; scope {scope}"
        suffix = Path(out).suffix
        if suffix in COMMENT:
            text = COMMENT[suffix].format(header) + "\n" + text
        rendered.append((out, text, header, scope, path.name, tsha))
    files = [("evidence/snapshot.json", (json.dumps(snap, indent=1, sort_keys=True) + "\n").encode())]
    lock = {"aimmat": __version__, "command": command if command is not None else sys.argv, "python": sys.version.split()[0],
            "packages": _versions(), "engines": snap["protocol"]["engines"],
            "pseudopotentials_md5": snap["protocol"]["pseudopotentials_md5"], "snapshot_sha256": snap_sha, "outputs": []}
    for out, text, header, scope, tname, tsha in rendered:
        dest = f"manuscript/{out}"
        files.append((dest, text.encode()))
        if Path(out).suffix not in COMMENT:  # CSV and other formats without comments: sidecar
            files.append((dest + ".sha256.json", json_bytes({"provenance": header})))
        lock["outputs"].append({"path": dest, "sha256": sha256_text(text), "scope": scope,
                                "template": tname, "template_sha256": tsha})
    for name, (scope, data) in sorted(figures.items()):
        files.append((f"manuscript/figures/{name}", data))
        lock["outputs"].append({"path": f"manuscript/figures/{name}", "sha256": hashlib.sha256(data).hexdigest(),
                                "scope": scope, "template": "aimmat.evidence.figures", "template_sha256": None})
    files.append(("manuscript/render.lock.json", json_bytes(lock)))
    return lock, files


