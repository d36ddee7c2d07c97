from __future__ import annotations

import json
import math

import numpy as np
import pytest
from pymatgen.core import Lattice, Structure
from pymatgen.core.operations import SymmOp

from aimmat.model import metrics as m

N_A = 6.02214076e23


FCC = [[0, 0, 0], [0, 0.5, 0.5], [0.5, 0, 0.5], [0.5, 0.5, 0]]


def rocksalt(a: float = 5.64, cation: str = "Na") -> Structure:
    """Conventional 8-atom cell (from_spacegroup takes ~0.4 s a call)."""
    anions = [[(x + 0.5) % 1, y, z] for x, y, z in FCC]
    return Structure(Lattice.cubic(a), [cation] * 4 + ["Cl"] * 4, FCC + anions)


def cscl(a: float = 4.12) -> Structure:
    return Structure(Lattice.cubic(a), ["Cs", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])


def rotated(s: Structure, angle: float = 30.0) -> Structure:
    r = s.copy()
    r.apply_operation(SymmOp.from_axis_angle_and_translation([1, 1, 0], angle))
    return r


def pair(d: float, box: float = 10.0) -> Structure:
    return Structure(Lattice.cubic(box), ["Na", "Cl"], [[0, 0, 0], [d / box, 0, 0]], coords_are_cartesian=False)


SI = Structure(Lattice.cubic(5.43), ["Si"] * 8, FCC + [[x + 0.25, y + 0.25, z + 0.25] for x, y, z in FCC])
CU = Structure(Lattice.cubic(3.61), ["Cu"] * 4, FCC)
ZNO = Structure.from_spacegroup("P6_3mc", Lattice.hexagonal(3.25, 5.21), ["Zn", "O"], [[1 / 3, 2 / 3, 0], [1 / 3, 2 / 3, 0.382]])


# ---------------------------------------------------------------- validity


def test_structural_validity_distance_threshold():
    assert m.structural_validity([pair(0.3), pair(2.0), pair(0.49), pair(0.51)]) == [False, True, False, True]


def test_structural_validity_sees_periodic_images():
    # 0.1 and 9.9 Å along x in a 10 Å cell: 9.8 Å apart in the cell, 0.2 Å across the boundary.
    s = Structure(Lattice.cubic(10), ["Na", "Cl"], [[0.01, 0.5, 0.5], [0.99, 0.5, 0.5]])
    assert m.structural_validity([s]) == [False]
    # a single atom 0.4 Å from its own image along a (volume 10 Å^3, so not the volume rule)
    thin = Structure(Lattice.tetragonal(0.4, 62.5), ["Cu"], [[0, 0, 0]])
    assert thin.volume > 1
    assert m.structural_validity([thin, CU]) == [False, True]


def test_structural_validity_volume():
    s = Structure(Lattice.cubic(3.0), ["Cu"], [[0, 0, 0]])
    assert m.structural_validity([s], min_volume=26.0) == [True]
    assert m.structural_validity([s], min_volume=28.0) == [False]


def test_compositional_validity():
    nacl2 = Structure(Lattice.cubic(6), ["Na", "Cl", "Cl"], [[0, 0, 0], [0.5, 0, 0], [0, 0.5, 0]])
    feni = Structure(Lattice.cubic(2.9), ["Fe", "Ni"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    assert m.compositional_validity([rocksalt(), nacl2, feni, CU]) == [True, False, True, True]


def test_compositional_validity_uses_cdvae_oxidation_states():
    # IO2 needs I(+4): in smact's "smact14" set (CDVAE's), not in the ICSD24 default of smact >= 3.
    io2 = Structure(Lattice.cubic(5), ["I", "O", "O"], [[0, 0, 0], [0.5, 0, 0], [0, 0.5, 0]])
    assert m.compositional_validity([io2]) == [True]


def test_compositional_validity_applies_pauling_test():
    # Na3Cl balances only as Na(-1)3 Cl(+3): charge neutral, but the anion is the less electronegative
    na3cl = Structure(Lattice.cubic(5), ["Na", "Na", "Na", "Cl"], [[0, 0, 0], [0.5, 0, 0], [0, 0.5, 0], [0, 0, 0.5]])
    assert m.compositional_validity([na3cl]) == [False]


# ---------------------------------------------------- uniqueness, novelty


def test_uniqueness_counts_supercell_and_rotation_as_duplicates():
    nacl = rocksalt()
    assert m.uniqueness([nacl, nacl * (2, 1, 1), rotated(nacl), cscl()]) == 0.5
    assert m.uniqueness([nacl, cscl()]) == 1.0
    assert math.isnan(m.uniqueness([]))


def test_novelty_against_reference():
    b2_nacl = cscl()
    b2_nacl.replace_species({"Cs": "Na"})  # same formula as rocksalt NaCl, different structure
    gen = [rotated(rocksalt()), cscl(4.3), b2_nacl]
    assert m.novelty(gen, [rocksalt(), cscl()]) == pytest.approx(1 / 3)
    assert m.novelty(gen, []) == 1.0


# ------------------------------------------------------- fingerprints, COV


@pytest.fixture(scope="module")
def fps():
    structures = {"nacl": rocksalt(), "kcl": rocksalt(6.29, "K"), "cscl": cscl(), "si": SI, "cu": CU, "zno": ZNO}
    S, C = m.fingerprints(list(structures.values()))
    return {k: (S[i : i + 1], C[i : i + 1]) for i, k in enumerate(structures)}


def stack(fps, *names):
    return np.vstack([fps[n][0] for n in names]), np.vstack([fps[n][1] for n in names])


def test_fingerprints_shape_and_invariance():
    nacl = rocksalt()
    S, C = m.fingerprints([nacl, rotated(nacl * (1, 2, 1)), SI])
    assert S.shape == (3, 61) and C.shape == (3, 132)
    assert np.allclose(S[0], S[1]) and np.allclose(C[0], C[1])
    assert not np.allclose(S[0], S[2])


def test_fingerprint_failure_is_nan_row(monkeypatch):
    site, comp = m._featurizers()

    class Failing:
        def feature_labels(self):
            return site.feature_labels()

        def featurize(self, s, i):
            if s.composition.reduced_formula == "CsCl":
                raise ValueError("no neighbours")
            return site.featurize(s, i)

    monkeypatch.setattr(m, "_featurizers", lambda: (Failing(), comp))
    S, C = m.fingerprints([rocksalt(), cscl()])
    assert m.fingerprint_ok(S).tolist() == [True, False]
    assert np.isnan(C[1]).all() and not np.isnan(S[0]).any()
    assert m.fingerprint_ok(m.fingerprints([rocksalt()], max_sites=4)[0]).tolist() == [False]
    # CDVAE: a crystal whose fingerprint fails is invalid even if both checks pass
    out = m.generation_metrics([rocksalt(), cscl()], [rocksalt()], [])
    assert out["struct_valid"] == 1.0 and out["comp_valid"] == 1.0 and out["valid"] == 0.5
    assert out["n_fingerprint_failed"] == 1 and out["cov_precision"] == 0.5


def test_comp_scaler_aligned_with_matminer_magpie_labels():
    labels = m._featurizers()[1].feature_labels()
    assert len(labels) == len(m._COMP_MEANS) == len(m._COMP_STDS) == 132
    assert labels[18] == "MagpieData minimum MeltingT" and m._COMP_MEANS[18] > 100
    assert labels[-1] == "MagpieData mode SpaceGroupNumber"


def test_coverage_identical_sets(fps):
    S, C = stack(fps, "nacl", "cscl", "si", "cu")
    cov = m.coverage(S, C, S, C)
    assert cov["cov_recall"] == 1.0 and cov["cov_precision"] == 1.0
    assert cov["amsd_recall"] == pytest.approx(0.0, abs=1e-9)


def test_coverage_disjoint_and_partial(fps):
    ref = stack(fps, "nacl", "cscl")
    cov = m.coverage(*stack(fps, "si", "cu"), *ref)
    assert cov["cov_recall"] == 0.0 and cov["cov_precision"] == 0.0
    cov = m.coverage(*stack(fps, "nacl", "si"), *ref)
    assert cov["cov_recall"] == 0.5 and cov["cov_precision"] == 0.5


def test_coverage_needs_both_cutoffs_on_scaled_composition(fps):
    # KCl vs NaCl: same rocksalt fingerprint; scaled Magpie distance about 6
    # (unscaled it would be in the hundreds: melting points alone differ by ~150 K).
    assert m.coverage(*fps["kcl"], *fps["nacl"])["cov_recall"] == 1.0
    assert m.coverage(*fps["kcl"], *fps["nacl"], comp_cutoff=5.0)["cov_recall"] == 0.0
    # wurtzite ZnO vs diamond Si: both tetrahedral (close structure fps), compositions far apart
    cov = m.coverage(*fps["zno"], *fps["si"])
    assert cov["amsd_recall"] < 0.4 and cov["cov_recall"] == 0.0


def test_coverage_failed_generated_fp_counts_in_precision_denominator(fps):
    S, C = stack(fps, "nacl")
    gS, gC = np.vstack([S, np.full_like(S, np.nan)]), np.vstack([C, np.full_like(C, np.nan)])
    cov = m.coverage(gS, gC, S, C)
    assert cov["cov_recall"] == 1.0 and cov["cov_precision"] == 0.5


# ------------------------------------------------------------- Wasserstein


def nacl_density(a: float) -> float:
    """4 formula units of NaCl in a^3 (Å^3), in g/cm^3."""
    return 4 * (22.98976928 + 35.453) / (N_A * a**3 * 1e-24)


def test_wasserstein_density_known_shift():
    gen = [rocksalt(5.64), rocksalt(6.0)]
    assert m.wasserstein_density(gen, gen) == 0.0
    assert gen[0].density == pytest.approx(nacl_density(5.64), rel=1e-3)  # ~2.16 g/cm^3
    scaled = [rocksalt(5.64 * 1.1), rocksalt(6.0 * 1.1)]
    shift = np.mean([nacl_density(5.64) - nacl_density(5.64 * 1.1), nacl_density(6.0) - nacl_density(6.0 * 1.1)])
    assert m.wasserstein_density(gen, scaled) == pytest.approx(shift, rel=1e-3)


def test_wasserstein_n_elements():
    assert m.wasserstein_n_elements([rocksalt(), cscl()], [rocksalt(), cscl()]) == 0.0
    assert m.wasserstein_n_elements([rocksalt(), cscl()], [CU, rocksalt()]) == 0.5
    assert math.isnan(m.wasserstein_n_elements([], [CU]))


# ------------------------------------------------------------------ driver


def test_generation_metrics_end_to_end():
    nacl2 = Structure(Lattice.cubic(6), ["Na", "Cl", "Cl"], [[0, 0, 0], [0.5, 0, 0], [0, 0.5, 0]])
    gen = [rocksalt(), rotated(rocksalt()), cscl(), pair(0.3), nacl2]
    ref, train = [rocksalt(), cscl()], [rocksalt()]
    out = m.generation_metrics(gen, ref, train)
    json.dumps(out, allow_nan=False)
    assert out["n_generated"] == 5 and out["n_valid"] == 3 and out["n_eval"] == 3
    assert out["struct_valid"] == 0.8 and out["comp_valid"] == 0.8 and out["valid"] == 0.6
    assert out["uniqueness"] == pytest.approx(2 / 3) and out["novelty"] == pytest.approx(1 / 3)
    assert out["wdist_n_elements"] == 0.0
    assert out["cov_recall"] == 1.0
    # pair(0.3) and NaCl2 are invalid yet fingerprinted: they enter COV-P as CDVAE's compute_cov does
    assert out["cov_precision"] == pytest.approx(3 / 5)

    fp_ref = m.fingerprints(ref)
    a = m.generation_metrics(gen, ref, train, n_eval=2, seed=1, reference_fingerprints=fp_ref)
    b = m.generation_metrics(gen, ref, train, n_eval=2, seed=1, reference_fingerprints=fp_ref)
    assert a == b and a["n_eval"] == 2 and a["cov_recall"] == out["cov_recall"]
    with pytest.raises(ValueError):
        m.generation_metrics(gen, ref, train, reference_fingerprints=m.fingerprints(ref[:1]))


def test_generation_metrics_nothing_valid_gives_none():
    out = m.generation_metrics([pair(0.3)], [rocksalt()], [rocksalt()])
    json.dumps(out, allow_nan=False)
    assert out["valid"] == 0.0 and out["n_eval"] == 0
    assert out["uniqueness"] is None and out["wdist_density"] is None and out["comp_div"] is None
