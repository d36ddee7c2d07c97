"""Handoff package of one candidate: what a collaborator (or a synthesis group) needs, from the records only.

``aimmat export handoff MANIFEST SET/CANDIDATE [--zip] [--partial] [--out DIR]`` writes

```
<campaign>/handoff/<set>/<candidate>/      (or DIR/<set>-<candidate>/ with --out)
  RATIONALE.md            why it was shortlisted, what passed, what is uncertain (generated)
  properties.json         predicted and computed properties, gates re-derived, flags, provenance
  structure/input.{cif,POSCAR,json}     the imported structure
  structure/relaxed.{cif,POSCAR,json}   the structure the elastic tensor was computed on
  elastic/tensor_voigt_gpa.csv          6x6 stiffness (GPa, Voigt order xx yy zz yz xz xy, structure frame)
  elastic/fit.json                      the elastic stage's whole output (cells, fit, gates)
  candidate.json, stages/<stage>/record.json, stages/<stage>/attempt-<n>/...   every input and output
  SHA256SUMS              sha256 of every other file (`sha256sum -c SHA256SUMS` checks it)
```

and with ``--zip`` the same files in ``<package>.zip``. Engine scratch folders (``out/``: pw.x wavefunctions
and charge density, large and binary) are left out, and the rationale says so. Every byte is a function of
the records: exporting twice gives identical files (the zip has fixed time stamps). A candidate that is
not elastic-ready is refused unless ``partial`` is asked for. Nothing is written unless the whole package
was built; a symlink on the way to the destination is refused.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import shutil
import stat
import tempfile
import zipfile
from pathlib import Path

from aimmat.errors import CampaignError, UsageError
from aimmat.evidence.snapshot import snapshot as make_snapshot
from aimmat.evidence.validated import validated_row
from aimmat.manifest.load import CampaignSpec
from aimmat.state.layout import CANDIDATE_FILE, symlink_in
from aimmat.state.scan import Observed
from aimmat.state.shortlisted import candidate_statuses

AREA = "handoff"
SCRATCH = {"out"}  # pw.x outdir under an attempt folder: wavefunctions and charge density
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)


def _finite(obj):
    """``obj`` with NaN and infinities as None: JSON has no such numbers (the rationale names the flags)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def _json(obj) -> bytes:
    return (json.dumps(_finite(obj), indent=1, sort_keys=True, allow_nan=False, default=str) + "\n").encode()


def _structure_files(name: str, sdict: dict) -> list[tuple[str, bytes]]:
    """CIF, POSCAR and pymatgen JSON of one structure, via pymatgen's writers. The CIF keeps the computed cell
    and orientation (P1): the elastic tensor is given in this frame, so a symmetrised conventional cell would
    silently change what its axes mean."""
    from pymatgen.core import Structure
    from pymatgen.io.cif import CifWriter
    from pymatgen.io.vasp import Poscar

    s = Structure.from_dict(sdict)
    cif = str(CifWriter(s))
    return [(f"structure/{name}.cif", cif.encode()),
            (f"structure/{name}.POSCAR", Poscar(s, comment=f"{s.composition.reduced_formula} ({name})").get_str().encode()),
            (f"structure/{name}.json", _json(s.as_dict()))]


def _stage_files(cand_dir: Path) -> list[tuple[str, bytes]]:
    """Every regular file of the candidate folder (records, engine inputs and outputs), without following links
    and without engine scratch folders; paths relative to the candidate folder, under stages/."""
    out = []
    for root, dirs, files in os.walk(cand_dir, followlinks=False):
        rel_root = os.path.relpath(root, cand_dir)
        dirs[:] = sorted(d for d in dirs if d not in SCRATCH and not os.path.islink(os.path.join(root, d)))
        for f in sorted(files):
            path = os.path.join(root, f)
            st = os.lstat(path)
            if not stat.S_ISREG(st.st_mode) or f.startswith(".tmp"):
                continue
            rel = f if rel_root == "." else f"{rel_root}/{f}"
            with open(path, "rb") as fh:
                data = fh.read()
            out.append((rel if rel == CANDIDATE_FILE else f"stages/{rel}", data))
    return out


def _tensor_csv(voigt) -> bytes:
    head = "row,c1,c2,c3,c4,c5,c6\n"
    names = ("xx", "yy", "zz", "yz", "xz", "xy")
    return (head + "".join(f"{n}," + ",".join(f"{v:.6f}" for v in row) + "\n" for n, row in zip(names, voigt))).encode()


def _fmt(v, spec=".1f") -> str:
    return "-" if v is None or (isinstance(v, float) and not math.isfinite(v)) else format(v, spec)


def _rationale(props: dict, stage_names: list[str]) -> str:
    """A short account a reviewer can check against properties.json."""
    p, c = props, props.get("computed") or {}
    lines = [f"# {p['formula']} ({p['candidate']})", "",
             f"Campaign `{p['campaign']}`, status **{p['status']}**{(' (' + p['status_detail'] + ')') if p['status_detail'] else ''}."
             f" Written by aimmat {p['aimmat']} from the campaign's records (manifest sha256 {p['manifest_sha256'][:12]}).", ""]
    lines += ["## Why it was shortlisted", ""]
    r = p.get("ranking")
    if r:
        lines.append(f"Ranked {r['rank'] if r['rank'] is not None else '-'} in set `{p['set']}` by model `{r['model']}` "
                     f"(checkpoint {r['checkpoint_sha256'][:12]}): score {_fmt(r['score'], '.3f')} = "
                     + " + ".join(f"{w} x {t}" for t, w in r["weights"].items())
                     + f"; top_k {r['top_k']}, {'shortlisted' if r['shortlisted'] else 'not shortlisted'}. "
                     f"Predicted K_VRH {_fmt(r['k_vrh_pred_gpa'])} GPa, G_VRH {_fmt(r['g_vrh_pred_gpa'])} GPa, "
                     f"uncertainty {_fmt(r['uncertainty_dex'], '.3f')} dex ({r['uncertainty_source']}).")
    else:
        src = (p.get("provenance") or {}).get("kind", "files")
        lines.append(f"Not ranked: a candidate of set `{p['set']}` ({src}); every screen pass goes to DFT.")
    screen = p.get("screen")
    if screen:
        lines.append(f"Screen: {'passed' if screen['strict_pass'] else 'FAILED'} "
                     f"({', '.join(f'{k} {v}' for k, v in screen['criteria'].items())}).")
    lines += ["", "## What passed", ""]
    if c:
        g = p.get("gates") or {}
        for name in ("pass_fit_rms", "pass_pd"):
            if name in g:
                lines.append(f"- {name}: {'yes' if g[name]['pass'] else 'NO'} (value {_fmt(g[name]['value'], '.3f')}, "
                             f"threshold {g[name]['threshold']} GPa; re-derived from the stored metric)")
        for name, gate in sorted((c.get("gates") or {}).items()):
            if name in ("born", "voigt_ge_reuss", "symmetry") and isinstance(gate, dict):
                lines.append(f"- {name}: {'yes' if gate.get('pass') else 'NO'}")
        ss = c.get("strain_set") or {}
        sset = (f"{ss.get('kind', '-')} strain set ({len(ss.get('types', []))} deformation types, magnitudes "
                f"{ss.get('magnitudes', '-')}, chosen by {ss.get('chosen_by', '-')})") if isinstance(ss, dict) else f"strain set {ss}"
        lines.append(f"- B_H {_fmt(c.get('b_h_gpa'))} GPa, G_H {_fmt(c.get('g_h_gpa'))} GPa, E_H {_fmt(c.get('e_h_gpa'))} GPa, "
                     f"Poisson ratio {_fmt(c.get('poisson_h'), '.3f')} (Hill); {c.get('n_cells', '-')} strained cells, {sset}; "
                     f"crystal system {c.get('crystal_system', '-')}.")
    else:
        lines.append("No elastic tensor (exported with --partial).")
    conv = p.get("converge")
    if conv:
        lines.append(f"- converged settings: {json.dumps(conv.get('chosen'), sort_keys=True)} "
                     f"({'converged' if conv.get('converged') else 'NOT converged'} within the ladder)")
        lines += [f"  - {w}" for w in conv.get("why", [])]
    lines += ["", "## What is uncertain", ""]
    unc = []
    engines = sorted(set(p.get("engines", [])))
    if engines and all(not e.startswith("pw.x") for e in engines):
        unc.append(f"Computed with {', '.join(engines)}, not DFT: a machine-learned or empirical potential; confirm with DFT.")
    if r:
        unc.append(f"The model's uncertainty for this candidate: {_fmt(r['uncertainty_dex'], '.3f')} dex "
                   f"(a factor of {10 ** (r['uncertainty_dex'] or 0):.2f}).")
        if c.get("b_h_gpa") and r.get("k_vrh_pred_gpa") and c["b_h_gpa"] > 0 and r["k_vrh_pred_gpa"] > 0:
            unc.append(f"Prediction vs computation: log10 K ratio {math.log10(r['k_vrh_pred_gpa'] / c['b_h_gpa']):+.3f}"
                       + (f", log10 G ratio {math.log10(r['g_vrh_pred_gpa'] / c['g_h_gpa']):+.3f}"
                          if c.get("g_h_gpa") and c["g_h_gpa"] > 0 and r.get("g_vrh_pred_gpa") and r["g_vrh_pred_gpa"] > 0 else "")
                       + " (Hill average of the computed tensor vs the model's VRH).")
    if c.get("stderr_gpa"):
        flat = [v for row in c["stderr_gpa"] for v in (row if isinstance(row, list) else [row]) if v is not None]
        if flat:
            unc.append(f"Largest standard error of a fitted constant: {max(flat):.2f} GPa.")
    if c.get("lost_cells"):
        unc.append(f"Strained cells lost and refitted without: {len(c['lost_cells'])}.")
    for f in p.get("flags", []):
        unc.append(f"Flag: {f}.")
    for g in p.get("inconsistent_gates", []):
        unc.append(f"The stored {g} flag disagrees with its metric (counted as failing).")
    lines += [f"- {u}" for u in unc] or ["- Nothing beyond the figures above was recorded."]
    lines += ["", "## Files", "",
              "`properties.json` (everything above, machine-readable), `structure/` (CIF, POSCAR, pymatgen JSON of the "
              "imported and the relaxed structure), `elastic/` (tensor and fit), `stages/` (every record and every "
              f"engine input and output of the stages {', '.join(stage_names)}; engine scratch folders `out/` with "
              "wavefunctions and charge density are not included), `SHA256SUMS` (check with `sha256sum -c SHA256SUMS`).", ""]
    return "\n".join(lines)


def build(spec: CampaignSpec, observed: Observed, set_name: str, cand_id: str, partial: bool = False) -> list[tuple[str, bytes]]:
    """The package's files [(relative path, bytes)], SHA256SUMS last. Raises without writing anything."""
    cobs = observed.candidates.get((set_name, cand_id))
    if not any(s.set_name == set_name and s.cand_id == cand_id for s in spec.candidates):
        raise UsageError(f"{set_name}/{cand_id} is not a candidate of {spec.path}",
                         fix="name it as SET/CANDIDATE, as `aimmat status -v` lists them")
    if cobs is None or cobs.record is None:
        raise CampaignError(f"{set_name}/{cand_id} has no records yet (not imported)", fix="run `aimmat apply` first")
    snap = make_snapshot(spec, observed)
    relpath = f"{set_name}/{cand_id}"
    status, detail = candidate_statuses(spec, observed)[(set_name, cand_id)]
    if status != "elasticready" and not partial:
        raise CampaignError(f"{relpath} is {status}{' (' + detail + ')' if detail else ''}, not elastic-ready: "
                            "a handoff package is for candidates with a validated tensor",
                            fix="pass --partial to export what it has (the rationale says what is missing)")
    rec = cobs.record
    files = _structure_files("input", rec.structure)
    props = {"candidate": relpath, "set": set_name, "formula": rec.formula, "campaign": snap["campaign"],
             "aimmat": snap["aimmat"], "manifest_sha256": snap["manifest_sha256"], "status": status, "status_detail": detail,
             "provenance": rec.provenance, "predicted": rec.prediction, "structure_sha256": rec.structure_sha256}
    rk = snap["scopes"]["screening"]["ranking"].get(set_name)
    if rk:
        row = next((r for r in rk["rows"] if r["candidate"] == cand_id), None)
        if row is not None:
            props["ranking"] = dict(row, model=rk["model"], weights=rk["weights"], top_k=rk["top_k"],
                                    checkpoint_sha256=spec.manifest.models[rk["model"]].sha256.lower())
    if "screen" in cobs.stages:
        sr = cobs.stages["screen"].result()
        props["screen"] = {"strict_pass": sr.strict_pass,
                           "criteria": {k: "pass" if v.passed else "fail" for k, v in sorted(sr.criteria.items())}}
    if "converge" in cobs.stages:
        props["converge"] = cobs.stages["converge"].outputs
    engines = sorted({r.key_inputs["engine"] for r in cobs.stages.values() if "engine" in r.key_inputs})
    props["engines"] = engines
    if status == "elasticready":
        el = cobs.stages["elastic"]
        out = el.outputs
        props["computed"] = {k: out.get(k) for k in ("b_h_gpa", "g_h_gpa", "e_h_gpa", "poisson_h", "k_voigt_gpa", "k_reuss_gpa",
                                                     "g_voigt_gpa", "g_reuss_gpa", "universal_anisotropy", "fit_rms_gpa",
                                                     "min_eigenvalue_gpa", "tensor_voigt_gpa", "stderr_gpa", "crystal_system",
                                                     "laue", "strain_set", "n_cells", "lost_cells", "gates")}
        vrow = next((r for r in snap["scopes"]["validated"]["rows"] if r["relpath"] == relpath), None)
        if vrow is None:  # de-duplicated away: recompute the row's gates for this record
            vrow = validated_row(spec, next(s for s in spec.candidates if s.set_name == set_name and s.cand_id == cand_id), cobs)
        val = snap["scopes"]["validated"]
        props["gates"] = {"pass_fit_rms": {"pass": vrow["pass_fit_rms"], "value": vrow["fit_rms_gpa"], "threshold": val["fit_rms_max_gpa"]},
                          "pass_pd": {"pass": vrow["pass_pd"], "value": vrow["min_eigenvalue_gpa"], "threshold": val["pd_min_eigenvalue_gpa"]},
                          "pass_both": vrow["pass_both"]}
        props["flags"], props["inconsistent_gates"] = vrow["flags"], vrow["inconsistent_gates"]
        files.append(("elastic/fit.json", _json(out)))
        if out.get("tensor_voigt_gpa"):
            files.append(("elastic/tensor_voigt_gpa.csv", _tensor_csv(out["tensor_voigt_gpa"])))
    relaxed = None
    for stage in ("relax", "scf"):
        if stage in cobs.stages and cobs.stages[stage].status == "done":
            relaxed = cobs.stages[stage].outputs.get("structure") or relaxed
    if relaxed:
        files += _structure_files("relaxed", relaxed)
    files.append(("properties.json", _json(props)))
    cand_dir = spec.campaign_dir / set_name / cand_id
    files += _stage_files(cand_dir)
    files.append(("RATIONALE.md", _rationale(props, sorted(cobs.stages)).encode()))
    files.sort()
    sums = "".join(f"{hashlib.sha256(data).hexdigest()}  {path}\n" for path, data in files)
    files.append(("SHA256SUMS", sums.encode()))
    return files


def destination(spec: CampaignSpec, set_name: str, cand_id: str, out: str | None) -> Path:
    """Where the package goes: <campaign>/handoff/<set>/<candidate>, or OUT/<set>-<candidate>."""
    if out is None:
        dest = spec.campaign_dir / AREA / set_name / cand_id
        link = symlink_in(spec.campaign_dir, dest)
        if link is not None:
            raise CampaignError(f"{dest}: {link[0]} is a symlink to {link[1]}; the handoff package is written only inside "
                                "the campaign folder", fix=f"remove the link (rm {link[0]}) and export again")
        return dest
    return Path(out) / f"{set_name}-{cand_id}"


def _zip_path(dest: Path) -> Path:
    return dest.parent / (dest.name + ".zip")  # not with_suffix: candidate ids may hold dots (Al.v1)


def write(dest: Path, files: list[tuple[str, bytes]], as_zip: bool) -> Path | None:
    """Write the package folder (replacing an earlier export of it) and, with ``as_zip``, ``<dest>.zip``;
    built in a temporary sibling first, so a failure leaves the earlier package as it was."""
    if dest.is_symlink() or (as_zip and _zip_path(dest).is_symlink()):
        raise CampaignError(f"{dest}: a symlink where the package goes; refused", fix="remove the link and export again")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{dest.name}-", dir=dest.parent))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes it 0700: the package is meant to be handed on
    try:
        for rel, data in files:
            p = tmp / rel
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(data)
        zpath = None
        if as_zip:
            buf = io.BytesIO()
            with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
                for rel, data in files:
                    info = zipfile.ZipInfo(f"{dest.name}/{rel}", date_time=_ZIP_TIME)
                    info.external_attr = 0o644 << 16
                    info.compress_type = zipfile.ZIP_DEFLATED
                    z.writestr(info, data)
            zpath = _zip_path(dest)
            (tmp / ".zip").write_bytes(buf.getvalue())
        if dest.exists():
            shutil.rmtree(dest)
        if zpath is not None:
            os.replace(tmp / ".zip", zpath)
        os.replace(tmp, dest)
        return zpath
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
