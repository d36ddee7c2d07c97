"""Training data readers (on small files written here in each format), the
recorded file hashes, and the seeded split."""

from __future__ import annotations

import gzip
import hashlib
import json

import numpy as np
import pytest
from pymatgen.core import Lattice, Structure

from aimmat.model.data import DataSet, Item, load, read_cdvae_csv, read_elastic_2015, read_matcalc, split

CU = Structure(Lattice.cubic(3.6), ["Cu"] * 4, [[0, 0, 0], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]])
MGO = Structure(Lattice.cubic(4.2), ["Mg", "O"], [[0, 0, 0], [0.5, 0.5, 0.5]])
BIG = Structure(Lattice.cubic(8.0), ["Si"] * 8, np.random.default_rng(0).random((8, 3)))
AM = Structure(Lattice.cubic(4.0), ["Am", "O"], [[0, 0, 0], [0.5, 0.5, 0.5]])  # Z = 95: beyond the vocabulary
DISORDERED = Structure(Lattice.cubic(4.0), [{"Cu": 0.5, "Au": 0.5}], [[0, 0, 0]])


def _sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _tensor(c11):
    c = np.zeros((6, 6))
    c[:3, :3] = 0.4 * c11
    np.fill_diagonal(c, c11)
    return c


def write_elastic_2015(path, structures, tensors_as_dict=True):
    rows = []
    for i, s in enumerate(structures):
        t = _tensor(100.0 + i).tolist()
        rows.append([f"mp-{i}", s.as_dict(), {"@module": "numpy", "data": t} if tensors_as_dict else t])
    with gzip.open(path, "wt") as fh:
        json.dump({"columns": ["material_id", "structure", "elastic_tensor_original"], "index": list(range(len(rows))),
                   "data": rows}, fh)


def test_elastic_2015_reader_keeps_tensors_and_filters_unusable(tmp_path):
    path = tmp_path / "e.json.gz"
    write_elastic_2015(path, [CU, BIG, MGO, AM])
    items = read_elastic_2015(path, max_atoms=4)
    assert [it.ident for it in items] == ["mp-0", "mp-2"]  # 8 atoms and Am dropped
    assert all(isinstance(it, Item) and it.source == "elastic_tensor_2015" for it in items)
    assert items[0].structure == CU and items[1].structure == MGO
    assert np.array_equal(items[1].voigt, _tensor(102.0)) and items[1].voigt.dtype == float
    # a tensor stored as a plain list reads the same
    write_elastic_2015(path, [MGO], tensors_as_dict=False)
    assert np.array_equal(read_elastic_2015(path, 4)[0].voigt, _tensor(100.0))


def _write_any(kind, path, structures):
    if kind == "elastic_tensor_2015":
        write_elastic_2015(path, structures)
    elif kind == "matcalc":
        with gzip.open(path, "wt") as fh:
            json.dump([{"mp_id": f"mp-{i}", "structure": s.as_dict()} for i, s in enumerate(structures)], fh)
    else:
        write_cdvae_csv(path, structures)


@pytest.mark.parametrize("kind", ["elastic_tensor_2015", "matcalc", "cdvae_csv"])
def test_disordered_structures_are_skipped_not_fatal(tmp_path, kind):
    (tmp_path / "d").mkdir()
    path = tmp_path / "d" / "data.gz"
    _write_any(kind, path, [MGO, DISORDERED, CU])
    items = load([{"kind": kind, "path": "d/data.gz"}], tmp_path, max_atoms=10).items
    assert [len(it.structure) for it in items] == [2, 4]


def test_matcalc_reader_accepts_dicts_and_their_python_repr(tmp_path):
    path = tmp_path / "m.json.gz"
    rows = [{"mp_id": "mp-1", "structure": CU.as_dict()}, {"mp_id": "mp-2", "structure": repr(MGO.as_dict())},
            {"mp_id": "mp-3", "structure": BIG.as_dict()}]
    with gzip.open(path, "wt") as fh:
        json.dump(rows, fh)
    items = read_matcalc(path, max_atoms=4)
    assert [it.ident for it in items] == ["mp-1", "mp-2"]
    assert items[1].structure == MGO and items[1].voigt is None
    assert {it.source for it in items} == {"matcalc_mp_binary_elasticity"}


def write_cdvae_csv(path, structures):
    import pandas as pd

    df = pd.DataFrame({"material_id": [f"id{i}" for i in range(len(structures))],
                       "cif": [s.to(fmt="cif") for s in structures]})
    df.to_csv(path, index=False)


def test_cdvae_reader_parses_cifs_with_limit_and_names_the_folder(tmp_path):
    d = tmp_path / "cdvae_perov_5"
    d.mkdir()
    path = d / "val.csv.gz"
    write_cdvae_csv(path, [MGO, BIG, CU, MGO])
    items = read_cdvae_csv(path, max_atoms=4)
    assert [it.ident for it in items] == ["id0", "id2", "id3"]
    assert {it.source for it in items} == {"cdvae_perov_5"}
    assert items[0].structure.composition.reduced_formula == "MgO"
    assert len(items[1].structure) == 4 and items[1].structure.lattice.a == pytest.approx(3.6)
    # the limit applies to rows read, before filtering
    assert [it.ident for it in read_cdvae_csv(path, max_atoms=4, limit=2)] == ["id0"]


def test_load_records_each_file_hash_and_applies_limits(tmp_path):
    (tmp_path / "e").mkdir()
    write_elastic_2015(tmp_path / "e" / "e.json.gz", [CU, MGO, CU])
    (tmp_path / "cdvae_carbon_24").mkdir()
    write_cdvae_csv(tmp_path / "cdvae_carbon_24" / "t.csv", [MGO, CU, MGO])
    ds = load([{"kind": "elastic_tensor_2015", "path": "e/e.json.gz", "limit": 2},
               {"kind": "cdvae_csv", "path": "cdvae_carbon_24/t.csv", "limit": 2}], tmp_path, max_atoms=10)
    assert isinstance(ds, DataSet)
    assert [(it.source, it.ident) for it in ds.items] == [("elastic_tensor_2015", "mp-0"), ("elastic_tensor_2015", "mp-1"),
                                                         ("cdvae_carbon_24", "id0"), ("cdvae_carbon_24", "id1")]
    assert ds.files == {"e/e.json.gz": _sha(tmp_path / "e" / "e.json.gz"),
                        "cdvae_carbon_24/t.csv": _sha(tmp_path / "cdvae_carbon_24" / "t.csv")}
    # without a limit, everything usable
    assert len(load([{"kind": "elastic_tensor_2015", "path": "e/e.json.gz"}], tmp_path, 10).items) == 3


def test_load_refuses_missing_files_and_unknown_kinds(tmp_path):
    with pytest.raises(FileNotFoundError) as e:
        load([{"kind": "matcalc", "path": "nope.json.gz"}], tmp_path, 10)
    assert "nope.json.gz" in str(e.value) and str(tmp_path) in str(e.value)
    (tmp_path / "x.json").write_text("[]")
    with pytest.raises(ValueError) as e:
        load([{"kind": "mystery", "path": "x.json"}], tmp_path, 10)
    assert "mystery" in str(e.value) and "cdvae_csv" in str(e.value)


def test_split_is_a_seeded_partition():
    s = split(103, seed=5)
    assert set(s) == {"train", "val", "test"}
    allidx = np.concatenate([s["train"], s["val"], s["test"]])
    assert sorted(allidx.tolist()) == list(range(103))  # disjoint and complete
    assert len(s["train"]) == round(0.8 * 103) and len(s["val"]) == round(0.1 * 103)
    for part in s.values():
        assert np.array_equal(part, np.sort(part))
    again = split(103, seed=5)
    assert all(np.array_equal(s[k], again[k]) for k in s)
    other = split(103, seed=6)
    assert not np.array_equal(s["test"], other["test"])
    # the train part is a random subset, not the first 80%
    assert not np.array_equal(s["train"], np.arange(len(s["train"])))


def test_split_with_custom_fractions_and_tiny_sets():
    s = split(10, seed=0, fractions=(0.5, 0.5, 0.0))
    assert len(s["train"]) == 5 and len(s["val"]) == 5 and len(s["test"]) == 0
    t = split(1, seed=0)
    assert sum(len(v) for v in t.values()) == 1
    assert all(len(v) == 0 for v in split(0, seed=0).values())
