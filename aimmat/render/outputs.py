"""Render a manifest's targets into <campaign>/manuscript/, hashed, with a lock file.

Every output starts with the sha256 of the snapshot and of the template
that made it (CSV: a sidecar ``.sha256.json``), and ``render.lock.json``
lists each output with its sha256, the command, aimmat and package
versions, pw.x's version and the pseudopotential md5s the records used.
Nothing in it depends on the clock: rendering twice gives the same bytes.
"""

from __future__ import annotations

import hashlib
import json
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from aimmat import __version__
from aimmat.evidence.snapshot import snapshot as make_snapshot
from aimmat.manifest.identity import canonical_json
from aimmat.manifest.load import CampaignSpec
from aimmat.evidence.figures import render_figures
from aimmat.render.scoped import COMMENT, COMPOSITE, declared_scope, render_template, sha256_text
from aimmat.state.atomic import write_bytes_atomic, write_json_atomic
from aimmat.state.lock import CampaignLock
from aimmat.state.scan import save_index, scan
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


def render(spec: CampaignSpec, command: list[str] | None = None) -> dict:
    targets = spec.manifest.render
    if not targets:
        raise RenderError(f"{spec.path}: `render:` declares no targets", fix="add render targets (see manifests/demo.yaml)")
    # existence and scope declarations were checked when the manifest was loaded
    templates = []
    for t in targets:
        path = (spec.base / t.template).resolve()
        templates.append((path, declared_scope(path), t.output or (path.name[:-3] if path.name.endswith(".j2") else path.name)))
    cdir = spec.campaign_dir
    observed = scan(cdir)
    snap = make_snapshot(spec, observed)
    snap_text = canonical_json(snap)
    snap_sha = sha256_text(snap_text)
    meta = {"campaign": snap["campaign"], "as_of": snap["as_of"], "snapshot_sha256": snap_sha,
            "manifest_sha256": snap["manifest_sha256"], "aimmat": __version__, "protocol": snap["protocol"]}
    rendered = []
    figures = render_figures(snap)
    blocks = {}
    ordered = [t for t in templates if t[1] != COMPOSITE] + [t for t in templates if t[1] == COMPOSITE]
    for path, scope, out in ordered:  # render all before writing any: an error writes nothing
        text = render_template(path, snap, meta, blocks, sorted(f"figures/{n}" for n in figures))
        if scope != COMPOSITE:
            blocks[out] = text
        tsha = sha256_text(path.read_text())
        header = f"aimmat {__version__}; snapshot sha256 {snap_sha}; template {path.name} sha256 {tsha}; scope {scope}"
        suffix = Path(out).suffix
        if suffix in COMMENT:
            text = COMMENT[suffix].format(header) + "\n" + text
        rendered.append((out, text, header, scope, path.name, tsha))
    cdir.mkdir(parents=True, exist_ok=True)
    with CampaignLock(cdir):
        write_bytes_atomic(cdir / "evidence" / "snapshot.json", (json.dumps(snap, indent=1, sort_keys=True) + "\n").encode())
        lock = {"aimmat": __version__, "command": command if command is not None else sys.argv, "python": sys.version.split()[0],
                "packages": _versions(), "engines": snap["protocol"]["engines"],
                "pseudopotentials_md5": snap["protocol"]["pseudopotentials_md5"], "snapshot_sha256": snap_sha, "outputs": []}
        for out, text, header, scope, tname, tsha in rendered:
            dest = cdir / "manuscript" / out
            write_bytes_atomic(dest, text.encode())
            if dest.suffix not in COMMENT:  # CSV and other formats without comments: sidecar
                write_json_atomic(dest.with_name(dest.name + ".sha256.json"), {"provenance": header})
            lock["outputs"].append({"path": f"manuscript/{out}", "sha256": sha256_text(text), "scope": scope,
                                    "template": tname, "template_sha256": tsha})
        for name, (scope, data) in sorted(figures.items()):
            write_bytes_atomic(cdir / "manuscript" / "figures" / name, data)
            lock["outputs"].append({"path": f"manuscript/figures/{name}", "sha256": hashlib.sha256(data).hexdigest(),
                                    "scope": scope, "template": "aimmat.evidence.figures", "template_sha256": None})
        write_json_atomic(cdir / "manuscript" / "render.lock.json", lock)
        save_index(observed, spec)  # after every output is written: a failed render writes nothing
    return lock
