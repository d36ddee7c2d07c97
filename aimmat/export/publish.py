"""Publish a campaign's candidates to MPContribs (the Materials Project's contribution platform).

The manifest's ``publish:`` block names the project, the sets, the scope (``validated``: elastic-ready
candidates with their tensors, de-duplicated as in the validated scope; ``screening``: every imported
candidate with its structure and status) and the environment variable holding the API key (never the key).

Each contribution is built from the candidate's records only: identifier ``<campaign>:<set>/<candidate>``,
formula, ``data`` (values with units the platform parses, keys of letters, digits and ``|`` as its API
requires), the relaxed structure, the elastic tensor as a table, and provenance (campaign, manifest sha256,
the candidate's record keys). ``aimmat publish MANIFEST --dry-run`` writes the payloads to
``<campaign>/publish/payloads/`` and validates them with the checks ``mpcontribs-client`` applies before it
uploads (serialisable values, component limits, units its pint registry knows) plus the platform's key
rule. Without ``--dry-run`` each new or changed payload is uploaded, one contribution per request, and a
publish record ``<campaign>/publish/records/<set>/<candidate>.json`` (payload sha256, remote id, time)
is written for each that the platform confirms. An unchanged payload is not uploaded again; a changed one
updates its remote contribution. A failed upload writes no record for that candidate, leaves every other
record as it was, and is reported with the platform's message.
"""

from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

from aimmat import __version__
from aimmat.errors import AimmatError, CampaignError, EnvironmentProblem, UsageError
from aimmat.evidence.snapshot import snapshot as make_snapshot
from aimmat.identity import sha256_json
from aimmat.manifest.load import CampaignSpec
from aimmat.state import journal
from aimmat.state.atomic import write_bytes_atomic
from aimmat.state.layout import symlink_in
from aimmat.state.publish_records import AREA
from aimmat.state.scan import Observed
from aimmat.state.shortlisted import candidate_statuses

KEY_RE = re.compile(r"^[A-Za-z0-9|*]+$")  # the platform refuses other punctuation and whitespace in data keys
MAX_DEPTH = 5  # mpcontribs-client MAX_NESTING


@dataclass
class Payload:
    set_name: str
    cand_id: str
    body: dict  # JSON form: structures as pymatgen dicts, tables as {name, title, index, columns, data}

    @property
    def relpath(self) -> str:
        return f"{self.set_name}/{self.cand_id}"

    @property
    def sha256(self) -> str:
        return sha256_json(self.body)


class PayloadError(AimmatError):
    """A payload the client or the platform would refuse: nothing is written or uploaded."""

    exit_code = 3


def _gpa(v, d=2):
    return None if v is None else f"{v:.{d}f} GPa"


def _clean(d: dict) -> dict:
    """Drop None values (the platform has no null column type), recursively."""
    return {k: (_clean(v) if isinstance(v, dict) else v) for k, v in d.items() if v is not None}


def _records_key(cobs) -> dict:
    keys = {"candidate": cobs.record.key} if cobs.record is not None else {}
    keys.update({st: rec.key for st, rec in sorted(cobs.stages.items())})
    return keys


def build(spec: CampaignSpec, observed: Observed) -> list[Payload]:
    """Every contribution the publish block asks for, from the records (sorted by set and candidate)."""
    pub = spec.manifest.publish
    if pub is None:
        raise UsageError(f"{spec.path}: no `publish:` block", fix="declare publish: {project: NAME, scope: validated}")
    snap = make_snapshot(spec, observed)
    sets = set(pub.sets) if pub.sets is not None else set(spec.sets())
    campaign = snap["campaign"]
    out = []
    if pub.scope == "validated":
        rows = [r for r in snap["scopes"]["validated"]["rows"] if r["set"] in sets]
    else:
        rows = [{"set": s.set_name, "candidate": s.cand_id} for s in spec.candidates if s.set_name in sets]
    statuses = candidate_statuses(spec, observed)
    for r in sorted(rows, key=lambda r: (r["set"], r["candidate"])):
        cobs = observed.candidates.get((r["set"], r["candidate"]))
        if cobs is None or cobs.record is None:
            continue
        status, detail = statuses[(r["set"], r["candidate"])]
        structure = cobs.record.structure
        for stage in ("relax", "scf"):
            if stage in cobs.stages and cobs.stages[stage].status == "done" and cobs.stages[stage].outputs.get("structure"):
                structure = cobs.stages[stage].outputs["structure"]
        data = {"status": status,
                "provenance": {"campaign": campaign, "manifest": spec.sha256, "records": sha256_json(_records_key(cobs)),
                               "aimmat": __version__, "structure": "relaxed" if structure is not cobs.record.structure else "input"}}
        if detail and status != "elasticready":
            data["reason"] = detail.replace("_", " ")
        pred = cobs.record.prediction
        if pred:
            data["predicted"] = {"K|VRH": _gpa(pred.get("k_vrh_gpa"), 1), "G|VRH": _gpa(pred.get("g_vrh_gpa"), 1)}
        tables = []
        if pub.scope == "validated":
            el = cobs.stages["elastic"].outputs
            data.update({"B|H": _gpa(r["b_h_gpa"]), "G|H": _gpa(r["g_h_gpa"]), "E|H": _gpa(r["e_h_gpa"]),
                         "nu": None if r["poisson_h"] is None else round(r["poisson_h"], 4),
                         "fit|RMS": _gpa(r["fit_rms_gpa"], 3), "eig|min": _gpa(r["min_eigenvalue_gpa"]),
                         "pass": {"fit": bool(r["pass_fit_rms"]), "PD": bool(r["pass_pd"]), "both": bool(r["pass_both"])}})
            if r["flags"]:
                data["flags"] = "; ".join(r["flags"])
            if r["inconsistent_gates"]:
                data["inconsistent"] = " ".join(r["inconsistent_gates"])
            if el.get("tensor_voigt_gpa"):
                tables.append({"name": "elastic tensor", "title": "Elastic stiffness tensor (Voigt, GPa, structure frame)",
                               "index": [f"i={i}" for i in range(1, 7)], "columns": [f"j={j}" for j in range(1, 7)],
                               "data": [[round(float(v), 3) for v in row] for row in el["tensor_voigt_gpa"]]})
        else:
            fails = [rec.failure_code for rec in cobs.stages.values() if rec.status == "failed" and rec.failure_code]
            if fails:
                data["failure"] = fails[0]
        body = {"project": pub.project, "identifier": f"{campaign}:{r['set']}/{r['candidate']}",
                "formula": cobs.record.formula, "is_public": pub.public, "data": _clean(data),
                "structures": [structure], "tables": tables}
        # the content's own hash travels with it: the upload is confirmed by reading it back
        body["data"]["provenance"]["payload"] = sha256_json(body)
        out.append(Payload(r["set"], r["candidate"], body))
    return out


def validate(p: Payload) -> list[str]:
    """The problems ``mpcontribs-client`` (and the platform's key rule) would raise for this payload."""
    from mpcontribs.client import MAX_ELEMS, Client, MPContribsClientError, ureg

    problems = []
    try:  # the client's own check (it reads nothing from the instance)
        Client._is_serializable_dict(None, p.body["data"])
    except MPContribsClientError as exc:
        problems.append(str(exc))

    def walk(d, path, depth):
        if depth > MAX_DEPTH:
            problems.append(f"data.{path}: nested deeper than {MAX_DEPTH}")
        for k, v in d.items():
            where = f"{path}.{k}" if path else k
            if not KEY_RE.match(k):
                problems.append(f"data key '{where}': only letters, digits, '|' and '*' are accepted")
            if isinstance(v, dict):
                walk(v, where, depth + 1)
            elif isinstance(v, str):
                parts = v.split(" ")
                if len(parts) == 2:
                    try:
                        float(parts[0])
                    except ValueError:
                        continue
                    try:
                        ureg.Unit(parts[1])
                    except Exception:  # noqa: BLE001 - pint raises several types
                        problems.append(f"data.{where}: unit '{parts[1]}' is not in the client's unit registry")

    walk(p.body["data"], "", 1)
    for comp in ("structures", "tables"):
        if len(p.body[comp]) > MAX_ELEMS:
            problems.append(f"{comp}: more than {MAX_ELEMS}")
    if not p.body.get("identifier") or not p.body.get("project"):
        problems.append("project and identifier are required")
    return problems


def to_client(body: dict) -> dict:
    """The JSON payload as the client takes it: pymatgen Structures, pandas DataFrames with name and title."""
    import pandas as pd
    from pymatgen.core import Structure

    out = {k: v for k, v in body.items() if k not in ("structures", "tables")}
    structures = []
    for sdict in body["structures"]:
        s = Structure.from_dict(sdict)
        s.properties = {}
        structures.append(s)
    tables = []
    for t in body["tables"]:
        df = pd.DataFrame(t["data"], index=t["index"], columns=t["columns"])
        df.attrs.update({"name": t["name"], "title": t["title"], "labels": {"index": "i", "value": "C_ij (GPa)"}})
        tables.append(df)
    if structures:
        out["structures"] = structures
    if tables:
        out["tables"] = tables
    return out


def _record_path(spec, p: Payload) -> Path:
    return spec.campaign_dir / AREA / "records" / p.set_name / f"{p.cand_id}.json"


def _payload_path(spec, p: Payload) -> Path:
    return spec.campaign_dir / AREA / "payloads" / p.set_name / f"{p.cand_id}.json"


def actions(spec: CampaignSpec, payloads: list[Payload]) -> list[tuple[str, Payload, dict | None]]:
    """(create | rerun | keep, payload, its publish record) per payload: keep when the record holds its sha256."""
    out = []
    for p in payloads:
        path = _record_path(spec, p)
        rec = None
        if path.is_file() and not path.is_symlink():
            try:
                rec = json.loads(path.read_text())
            except ValueError:
                rec = None
        if rec is None or rec.get("project") != p.body["project"]:
            out.append(("create", p, None))
        elif rec.get("payload_sha256") == p.sha256:
            out.append(("keep", p, rec))
        else:
            out.append(("rerun", p, rec))
    return out


def _confined(spec, path: Path) -> None:
    link = symlink_in(spec.campaign_dir, path)
    if link is not None:
        raise CampaignError(f"{path}: {link[0]} is a symlink ({link[1]}); publish writes only inside the campaign folder",
                            fix=f"remove {link[0]}")


def write_payloads(spec: CampaignSpec, payloads: list[Payload]) -> list[Path]:
    """Write the payloads (every destination checked before the first write) and remove payload files of
    candidates no longer published, so the folder holds exactly what the last run prepared."""
    paths = [_payload_path(spec, p) for p in payloads]
    for path in paths:
        _confined(spec, path)
    root = spec.campaign_dir / AREA / "payloads"
    keep = set(paths)
    if root.is_dir() and not root.is_symlink():
        for old in root.glob("*/*.json"):
            if old not in keep and old.is_file() and not old.is_symlink() and not old.parent.is_symlink():
                old.unlink()
    for p, path in zip(payloads, paths):
        path.parent.mkdir(parents=True, exist_ok=True)
        write_bytes_atomic(path, (json.dumps(p.body, indent=1, sort_keys=True) + "\n").encode())
    return paths


class _Capture(logging.Handler):
    def __init__(self):
        super().__init__(logging.ERROR)
        self.messages: list[str] = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def upload(spec: CampaignSpec, todo: list[tuple[str, Payload, dict | None]], client) -> tuple[list[dict], list[tuple[Payload, str]]]:
    """Upload each create / rerun payload through ``client`` (an mpcontribs Client), one contribution per request;
    write a publish record for each the platform confirms. Returns (records written, [(payload, why it failed)])."""
    written, failed = [], []
    logger = logging.getLogger("mpcontribs.client")
    for action, p, rec in todo:
        if action == "keep":
            continue
        contrib = to_client(p.body)
        if action == "rerun" and rec and rec.get("remote_id"):
            contrib = {k: v for k, v in contrib.items() if k not in ("project", "identifier")}
            contrib["id"] = rec["remote_id"]
        cap = _Capture()
        logger.addHandler(cap)
        try:
            client.submit_contributions([contrib], ignore_dupes=True)
        except Exception as exc:  # noqa: BLE001 - the client raises its own and transport errors: reported per candidate
            cap.messages.append(f"{type(exc).__name__}: {exc}")
        finally:
            logger.removeHandler(cap)
        remote = None
        if not cap.messages:
            try:
                found = client.query_contributions(query={"project": p.body["project"], "identifier": p.body["identifier"]},
                                                   fields=["id", "identifier", "data.provenance.payload"])
                doc = next((d for d in found.get("data", []) if d.get("identifier") == p.body["identifier"]), None)
                # present, and holding this payload's record hash (a skipped duplicate or an ignored update
                # would leave the older contribution in place)
                stored = ((doc or {}).get("data") or {}).get("provenance", {}).get("payload")
                if doc is not None and stored == p.body["data"]["provenance"]["payload"]:
                    remote = doc["id"]
                elif doc is not None:
                    cap.messages.append("the platform holds another version of this contribution (content hash "
                                        f"{str(stored)[:12]}, this payload {p.body['data']['provenance']['payload'][:12]})")
            except Exception as exc:  # noqa: BLE001
                cap.messages.append(f"confirming the upload failed: {type(exc).__name__}: {exc}")
        if remote is None:
            failed.append((p, "; ".join(dict.fromkeys(cap.messages)) or "the platform did not store it"))
            continue
        record = {"project": p.body["project"], "identifier": p.body["identifier"], "candidate": p.relpath,
                  "payload_sha256": p.sha256, "remote_id": remote, "uploaded_at": journal.now_iso(),
                  "host": getattr(client, "host", None), "action": action, "structures": len(p.body["structures"]),
                  "tables": len(p.body["tables"]), "scope": spec.manifest.publish.scope}
        path = _record_path(spec, p)
        _confined(spec, path)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_bytes_atomic(path, (json.dumps(record, indent=1, sort_keys=True) + "\n").encode())
        journal.append(spec.campaign_dir, "published", candidate=p.relpath, remote_id=remote, sha256=p.sha256)
        written.append(record)
    return written, failed


def client_for(spec: CampaignSpec):
    """An mpcontribs Client for the publish block: the API key from its environment variable."""
    pub = spec.manifest.publish
    key = os.environ.get(pub.api_key_env)
    if not key:
        raise EnvironmentProblem(f"publish: the API key variable {pub.api_key_env} is not set",
                                 fix=f"export {pub.api_key_env}=<your MPContribs API key> (never put the key in the manifest)")
    from mpcontribs.client import Client

    try:
        return Client(apikey=key, host=pub.host, project=pub.project)
    except Exception as exc:  # noqa: BLE001 - unreachable host, unknown project, bad key
        raise EnvironmentProblem(f"publish: cannot reach MPContribs at {pub.host} for project {pub.project}: "
                                 f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}") from None
