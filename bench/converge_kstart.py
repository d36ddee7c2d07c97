"""Where the k ladder of a gapped cell starts: the profile's spacing or a coarser one?

The converge stage walks the k ladder denser until a step moves energy,
stress and shear stress less than the tolerances. For a cell with a gap it
used to start at the profile's ``kspacing_per_a`` (0.25/A); it now starts at
the coarser ``kspacing_start_per_a`` (0.5/A). This runs the stage twice per
crystal in one process, with the old start (0.25) as the baseline and the
new one, on Debian's LDA files (Si diamond, MgO rock salt: cubic cells whose
xy shear probes the clamped-ion C44), and prints for each: the k ladder's
meshes, the choice, the probe C44 at the choice and on a mesh twice as
dense (the ratio is the error the choice carries into the elastic stage),
the sheared cell's irreducible k-points at the choice (what every strained
cell of the elastic stage costs), and the converge wall time, new over old.

    .venv/bin/python bench/converge_kstart.py [si] [mgo] [--json out.json]
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import converge_metals as cm  # noqa: E402  (the same stage run and C44 check as for the metals)

from aimmat.elastic.cost import irreducible_kpoints  # noqa: E402
from aimmat.engines.qe.inputs import kmesh  # noqa: E402
from aimmat.stages.converge import _sheared  # noqa: E402

STARTS = (("old (profile 0.25/A)", 0.25), ("new (start 0.5/A)", 0.5))


def measure(name: str, root: Path, ranks: int = 1) -> list[dict]:
    out = []
    for label, start in STARTS:
        res = cm.converge_and_check(name, root / f"{name}-{start}", ranks, kspacing_start_per_a=start)
        res["start"], res["label"] = start, label
        if res["ok"]:
            structure = cm.CRYSTALS[name][0]
            mesh = kmesh(structure, {"kspacing_per_a": res["chosen"]["kspacing_per_a"]})
            res["sheared_kpoints_at_choice"] = irreducible_kpoints(_sheared(structure, 0.01), mesh)
        out.append(res)
    return out


def report(name: str, runs: list[dict]) -> str:
    lines = [f"== {name}"]
    for r in runs:
        k_rows = [row for row in r["table"] or [] if row["ladder"] == "kspacing"]
        meshes = " -> ".join("x".join(map(str, row["kpoints"])) for row in k_rows)
        if not r["ok"]:
            lines.append(f"{r['label']:22} FAILED {r['failure']}: {r['message']}")
            continue
        a, d = r["c44_chosen"], r["c44_dense"]
        lines.append(f"{r['label']:22} k ladder {meshes}; chosen {'x'.join(map(str, a['kpoints']))} "
                     f"({r['sheared_kpoints_at_choice']} k-points in the sheared cell); probe C44 {a['c44_gpa']:.2f} GPa, "
                     f"twice the k-points {d['c44_gpa']:.2f} GPa, ratio {r['c44_ratio']:.4f}; converge {r['converge_wall_s']:.0f} s")
    if all(r["ok"] for r in runs):
        old, new = runs
        lines.append(f"new / old: k-points per strained cell {new['sheared_kpoints_at_choice'] / old['sheared_kpoints_at_choice']:.2f}, "
                     f"converge wall {new['converge_wall_s'] / old['converge_wall_s']:.2f}, "
                     f"C44 {new['c44_chosen']['c44_gpa'] / old['c44_chosen']['c44_gpa']:.4f}")
    return "\n".join(lines)


def main() -> None:
    cm.run_bench(__doc__, cm.INSULATORS, sorted(cm.INSULATORS), measure, report)


if __name__ == "__main__":
    main()
