"""The demo's second step of a learning cycle: what a user does by hand after `aimmat model update`.

Reads MANIFEST and its campaign's learning record, and writes OUT: the same
manifest with the child checkpoint pinned under `models:` (path and sha256
from the record) and, for every generated set of the parent model, a copy
named `<set>-<cycle>` generated and ranked by the child with the same seed,
count and shortlist (so the two shortlists are paired draws), and a rerun
wave `extend-1` taking the parent's next two candidates below its shortlist
(to be frozen with `aimmat waves freeze` before OUT is applied). Relative
paths are rewritten for OUT's folder.

    python scripts/demo_cycle.py manifests/demo.yaml campaigns/demo-cycle1.yaml
"""

from __future__ import annotations

import copy
import json
import os
import sys
from pathlib import Path

import yaml


def main(argv: list[str]) -> int:
    src, out = Path(argv[0]).resolve(), Path(argv[1]).resolve()
    m = yaml.safe_load(src.read_text())
    lc = m["learning"]
    base, new = src.parent, out.parent

    def rel(p: str) -> str:
        return p if os.path.isabs(p) else os.path.relpath(base / p, new)

    campaign = (base / m["campaign"].get("root", "campaigns") / m["campaign"]["name"]).resolve()
    rec_path = campaign / "learning" / lc["name"] / "record.json"
    if not rec_path.is_file():
        print(f"error: {rec_path} not found: run `aimmat model update {argv[0]}` first", file=sys.stderr)
        return 2
    rec = json.loads(rec_path.read_text())
    m["campaign"]["root"] = rel(m["campaign"].get("root", "campaigns"))
    for spec in m.get("models", {}).values():
        spec["path"] = rel(spec["path"])
    for t in m.get("render", []):
        t["template"] = rel(t["template"])
    sets = []
    for s in m["candidate_sets"]:
        src_ = s["source"]
        if src_["kind"] == "files":
            src_["glob"] = [rel(g) for g in ([src_["glob"]] if isinstance(src_["glob"], str) else src_["glob"])]
        sets.append(s)
    for s in list(sets):
        if s["source"]["kind"] == "generator" and s["source"]["model"] == lc["parent"]:
            c = copy.deepcopy(s)
            c["name"] = f"{s['name']}-{lc['name']}"
            c["source"]["model"] = lc["name"]
            if c.get("rank"):
                c["rank"].pop("model", None)  # ranked by its generator: the child
            sets.append(c)
    m["candidate_sets"] = sets
    m.pop("learning")  # this cycle is done; a next one would name the child as its parent
    # a pre-registered rerun wave: the parent's next two by score below its shortlist, if the model is sure of them
    # (frozen by `aimmat waves freeze` before this manifest is applied)
    parent_sets = [s["name"] for s in sets if s["source"]["kind"] == "generator" and s["source"]["model"] == lc["parent"]]
    m["waves"] = [{"name": "extend-1",
                   "select": {"statuses": ["not_shortlisted"], "sets": parent_sets, "uncertainty_max_dex": 0.1,
                              "max_candidates": 2},
                   "intervention": "next two by score below the shortlist, predicted uncertainty <= 0.1 dex"}]
    m["models"][lc["name"]] = {"path": os.path.relpath(campaign / rec["checkpoint"], new), "sha256": rec["child_sha256"]}
    out.write_text(f"# written by scripts/demo_cycle.py from {argv[0]} and {rec_path.name} of cycle {lc['name']}\n"
                   + yaml.safe_dump(m, sort_keys=False))
    print(f"wrote {argv[1]}: models.{lc['name']} pinned ({rec['child_sha256'][:12]}), "
          + ", ".join(s["name"] for s in sets if s["name"].endswith("-" + lc["name"])))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
