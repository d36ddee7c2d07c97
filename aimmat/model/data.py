"""Training and evaluation data, read from the paths a training config names.

Readers for the reference sets the issue names (``../shared/data``):
- ``elastic_tensor_2015`` (pandas split-orient JSON): structure and
  ``elastic_tensor_original`` (Voigt, GPa, in the frame of the structure);
- ``matcalc_mp_binary_elasticity`` (list of dicts with a structure);
- ``cdvae_perov_5`` / ``cdvae_carbon_24`` (CSV with CIF strings).
Every file read is hashed; the hashes go into the checkpoint. Splits are
fixed by a recorded seed.
"""

from __future__ import annotations

import gzip
import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from pymatgen.core import Structure

from aimmat.identity import sha256_file
from aimmat.model.graph import MAX_Z


@dataclass
class Item:
    structure: Structure
    source: str
    ident: str
    voigt: np.ndarray | None = None  # 6x6 GPa, frame of ``structure``


@dataclass
class DataSet:
    items: list[Item] = field(default_factory=list)
    files: dict[str, str] = field(default_factory=dict)  # path -> sha256


def _usable(s: Structure, max_atoms: int) -> bool:
    # is_ordered first: a disordered site has no single species to read
    return len(s) <= max_atoms and s.is_ordered and all(getattr(sp, "Z", 999) <= MAX_Z for sp in s.species)


def read_elastic_2015(path: Path, max_atoms: int) -> list[Item]:
    d = json.load(gzip.open(path))
    cols = d["columns"]
    i_s, i_c, i_id = cols.index("structure"), cols.index("elastic_tensor_original"), cols.index("material_id")
    out = []
    for row in d["data"]:
        s = Structure.from_dict(row[i_s])
        if not _usable(s, max_atoms):
            continue
        v = row[i_c]
        out.append(Item(s, "elastic_tensor_2015", row[i_id], np.array(v["data"] if isinstance(v, dict) else v, float)))
    return out


def read_matcalc(path: Path, max_atoms: int) -> list[Item]:
    out = []
    for row in json.load(gzip.open(path)):
        sd = row["structure"]
        if isinstance(sd, str):  # stored as a Python repr of the dict
            import ast
            sd = ast.literal_eval(sd)
        s = Structure.from_dict(sd)
        if _usable(s, max_atoms):
            out.append(Item(s, "matcalc_mp_binary_elasticity", row["mp_id"]))
    return out


def read_cdvae_csv(path: Path, max_atoms: int, limit: int | None = None) -> list[Item]:
    import pandas as pd

    df = pd.read_csv(path)
    if limit is not None:
        df = df.iloc[:limit]
    out = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for ident, cif in zip(df["material_id"], df["cif"]):
            s = Structure.from_str(cif, fmt="cif")
            if _usable(s, max_atoms):
                out.append(Item(s, Path(path).parent.name, str(ident)))
    return out


READERS = {
    "elastic_tensor_2015": read_elastic_2015,
    "matcalc": read_matcalc,
    "cdvae_csv": read_cdvae_csv,
}


def load(specs: list[dict], root: Path, max_atoms: int) -> DataSet:
    """``specs``: [{"kind": "cdvae_csv", "path": "cdvae_perov_5/val.csv.gz", "limit": 2000}, ...]."""
    ds = DataSet()
    for spec in specs:
        path = (root / spec["path"]).resolve()
        if not path.exists():
            raise FileNotFoundError(f"training data file {path} not found (data root {root})")
        kind = spec["kind"]
        if kind not in READERS:
            raise ValueError(f"unknown data kind {kind!r}; known: {sorted(READERS)}")
        kw = {"limit": spec["limit"]} if kind == "cdvae_csv" and spec.get("limit") else {}
        items = READERS[kind](path, max_atoms, **kw)
        if kind != "cdvae_csv" and spec.get("limit"):
            items = items[: spec["limit"]]
        ds.items += items
        ds.files[spec["path"]] = sha256_file(path)
    return ds


def split(n: int, seed: int, fractions=(0.8, 0.1, 0.1)) -> dict[str, np.ndarray]:
    """Index split fixed by ``seed``: train / val / test."""
    perm = np.random.default_rng(seed).permutation(n)
    a = int(round(fractions[0] * n))
    b = a + int(round(fractions[1] * n))
    return {"train": np.sort(perm[:a]), "val": np.sort(perm[a:b]), "test": np.sort(perm[b:])}

