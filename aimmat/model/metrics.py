"""Generation metrics for crystals, CDVAE protocol (Xie et al., ICLR 2022).

Definitions follow txie-93/cdvae ``scripts/compute_metrics.py`` and
``scripts/eval_utils.py``: validity (``smact_validity``, ``structure_validity``),
CrystalNN 'ops' / Magpie fingerprints, COV recall/precision (``compute_cov``),
diversity (``get_fp_pdist``) and Wasserstein distances of density and element
count. Uniqueness and novelty are not in CDVAE; they use pymatgen's
StructureMatcher as later papers do. Deviations are marked "Deviation:".
"""

from __future__ import annotations

import math
import warnings
from collections import defaultdict
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

import numpy as np
from pymatgen.analysis.structure_matcher import StructureMatcher
from pymatgen.core import Composition, Structure
from scipy.spatial.distance import cdist, pdist
from scipy.stats import wasserstein_distance
from smact.screening import smact_validity

Fingerprints = tuple[np.ndarray, np.ndarray]

# compute_metrics.py COV_Cutoffs: (structure, composition) per data set.
COV_CUTOFFS: dict[str, tuple[float, float]] = {"mp20": (0.4, 10.0), "carbon": (0.2, 4.0), "perovskite": (0.2, 4.0)}

# CDVAE's CompScaler (cdvae/common/constants.py): fixed mean/std of the 132
# Magpie features over its training data, one row per elemental property
# (min, max, range, mean, avg_dev, mode). Copied, as no library ships them.
_COMP_MEANS = np.array([
    21.194441759304013, 58.20212663122281, 37.0076848719188, 36.52738520455582, 13.350626389725019, 29.468922184630255,
    28.71735137747704, 78.8868535524408, 50.16950217496375, 59.56764743604155, 19.020429484306277, 61.335572740454325,
    47.14515893344343, 141.75135923307818, 94.60620029962553, 85.95794070476977, 34.07300576173523, 68.06189371516912,
    637.9862061297893, 1817.2394155466848, 1179.2532094169414, 1127.2743149568837, 431.51034284549826, 909.1060025135899,
    3.7744320927984534, 13.673707104881585, 9.899275012083132, 9.620186927095652, 3.8426065581251856, 9.96950217496375,
    3.305461575640406, 5.483035282745288, 2.1775737071048815, 4.215114560306594, 0.8206087101824266, 3.732092798453359,
    109.16732721121315, 179.5570323827936, 70.38970517158047, 136.0978305229613, 27.027545809538527, 119.16713388110198,
    1.2721433060967857, 2.4614001837260617, 1.1892568776289631, 1.9844483610247092, 0.4691462290494881, 2.100143582306204,
    1.4829869502174964, 1.9899951667472209, 0.5070082165297245, 1.7956250375970633, 0.2056251946617602, 1.745867568873852,
    0.05650072498791687, 2.3618656355727405, 2.3053649105848235, 1.2829636137262992, 0.9995555685850794, 1.5150314161430642,
    0.7731271145480909, 7.4648139197680035, 6.691686805219913, 4.010677272036105, 2.612307566507693, 3.303528274528758,
    0.2739487675205413, 5.889753504108265, 5.615804736587724, 2.3244356612494683, 2.1426251769710905, 1.4464475592073465,
    4.739246012566457, 14.578395360077332, 9.839149347510874, 9.413701584608935, 3.537059747455868, 8.550410826486225,
    0.008119864668922184, 0.43286611889801835, 0.4247462542290962, 0.16687837041055423, 0.17139889490813626, 0.10898985016916385,
    0.06283228612856452, 2.6573707104881583, 2.594538424359594, 1.219602938224228, 1.0596390454742999, 1.1120831319478008,
    0.14842919284678588, 3.8473658772353794, 3.6989366843885936, 1.4541605082183982, 1.3862277372859781, 0.8018849685838569,
    0.03542774287095215, 2.4474625422909617, 2.4120347994200095, 0.7745217539010397, 0.9145812330586208, 0.3198646689221846,
    1.552730787820203, 6.910681488641856, 5.357950700821653, 3.615163570754227, 1.9072256165179793, 2.6702271628806185,
    14.608536589568727, 34.83222477045747, 20.223688180890715, 22.47901710732293, 7.17674504190757, 18.641837024143584,
    0.009066988883518605, 0.9185191396809959, 0.9094521507974755, 0.4368550481994018, 0.38905942883427047, 0.48375558240695804,
    0.0012985909686158003, 0.21708593995837092, 0.21578734898975546, 0.08167977375391729, 0.08155386250705281, 0.06036340747305611,
    116.32010633156113, 217.5905751570807, 101.27046882551957, 162.87154200548844, 41.920624308665566, 136.4664572257129,
])  # fmt: skip
_COMP_STDS = np.array([
    16.35781741152948, 20.189540126474725, 20.516298414514758, 16.816765336550194, 7.966591328222124, 22.270791076753067,
    21.802116630115243, 12.804546460581966, 24.756629388687983, 13.930306216047477, 10.214535652334533, 27.801612936980938,
    39.74031558353379, 54.269739685575814, 53.70466607591569, 42.852342044453444, 20.78341194242935, 56.28783510219931,
    563.8004405882157, 732.0722574247563, 736.2122907972664, 606.351603075103, 272.62646060896407, 810.6156779688841,
    3.0362262146833428, 3.2075174256751606, 4.0633818989245665, 2.9738244769894764, 1.7805586029644034, 5.643243225066782,
    1.1994336274579853, 0.8939013979423364, 1.2297581799896975, 1.0066021334519983, 0.49129747526397105, 1.4159553146070951,
    31.754756468836774, 28.054241463256226, 38.16336054795611, 25.83485338379922, 15.388376641904662, 39.67137484594156,
    0.31988340032011076, 0.6833658037760536, 0.7464197945553585, 0.4881349085029781, 0.3176591553643101, 0.8601748146737138,
    0.5864801661863596, 0.10048913710210677, 0.5836289120986499, 0.2811748167435902, 0.2468696279341553, 0.5007375747433073,
    0.37237566669029587, 1.7235989187720187, 1.7058836077743305, 1.1558859351244697, 0.7677842566598179, 1.9203550253462733,
    2.1289400248865182, 3.5326064169848332, 3.708508303762512, 2.8709941136664567, 1.6110681295257014, 4.310192504023775,
    1.6644182118209292, 6.228287671164213, 6.1200848808512305, 3.1986202996110302, 2.4492978142248867, 4.030497343977163,
    3.662028270049814, 6.8192125550358345, 6.614243783887738, 4.334987449618594, 2.568319610320196, 5.9494890200106925,
    0.08974370432893491, 0.4954725441517777, 0.494304434278516, 0.2309340434963803, 0.2072873961103969, 0.31162647950590266,
    0.39805702757060923, 1.8111691089355726, 1.7973395144505941, 0.9486995373104102, 0.7538753151875139, 1.5233177017753785,
    0.7952606701778913, 3.711190225170556, 3.638721437232604, 1.7171165424006831, 1.4307904413917036, 2.1047820817622904,
    0.49193748323158065, 4.064840532426175, 4.035286619587313, 1.4858577214526643, 1.5799117659864677, 1.6130080156145745,
    1.555249156140194, 4.776932951077492, 4.569790780459629, 2.224617778217326, 1.7217507416156546, 2.5969733650703763,
    7.215001918238936, 19.252513469778584, 18.775394044177858, 9.447222764774764, 6.7467931836261235, 11.106825644766616,
    0.27206794253092115, 1.6449321034573106, 1.6236282792648686, 0.8506917026741503, 0.7020945355184042, 1.2281895279350408,
    0.04134438177238229, 0.5508855867341717, 0.5486095551438679, 0.24239297524046477, 0.2127779137935831, 0.3036750942874694,
    80.06063945615361, 21.345794811194104, 80.16475677581042, 52.58533928558554, 35.40836791039412, 85.980205895116,
])  # fmt: skip


# ---------------------------------------------------------------- validity


def _structure_ok(s: Structure, min_dist: float, min_volume: float) -> bool:
    if not s.volume >= min_volume:  # also rejects a NaN volume
        return False
    # CDVAE: minimum-image distance between distinct sites (pymatgen), diagonal ignored.
    d = s.distance_matrix
    if len(s) > 1 and d[~np.eye(len(s), dtype=bool)].min() < min_dist:
        return False
    # Deviation: CDVAE never looks at an atom's own periodic images; a lattice
    # vector shorter than min_dist puts every atom that close to its copy
    # (the only check a single-atom cell gets).
    images = s.lattice.get_points_in_sphere(np.zeros((1, 3)), np.zeros(3), min_dist)
    return all(dist < 1e-8 for _, dist, _, _ in images)


def structural_validity(structures: Sequence[Structure], min_dist: float = 0.5, min_volume: float = 0.1) -> list[bool]:
    """CDVAE ``structure_validity``: every interatomic distance, periodic images
    included, >= ``min_dist`` (Å) and cell volume >= ``min_volume`` (Å^3)."""
    return [_structure_ok(s, min_dist, min_volume) for s in structures]


def _composition_ok(comp: Composition) -> bool:
    try:
        # CDVAE ran smact 2.x, whose Element.oxidation_states was the set now
        # called "smact14"; smact >= 3 defaults to ICSD24, so it is named here.
        return bool(smact_validity(comp.element_composition, use_pauling_test=True, include_alloys=True,
                                   oxidation_states_set="smact14"))
    except KeyError:  # element without smact data (CDVAE would raise): not valid
        return False


def compositional_validity(structures: Sequence[Structure]) -> list[bool]:
    """CDVAE ``smact_validity``: some oxidation-state assignment is charge
    neutral and passes the Pauling electronegativity test; single elements and
    all-metal compositions are valid. Structures must be ordered."""
    return [_composition_ok(s.composition) for s in structures]


# ---------------------------------------------------- uniqueness, novelty


def _by_formula(structures: Sequence[Structure]) -> dict[str, list[int]]:
    groups: dict[str, list[int]] = defaultdict(list)
    for i, s in enumerate(structures):
        groups[s.composition.reduced_formula].append(i)
    return groups


def uniqueness(structures: Sequence[Structure], matcher: StructureMatcher | None = None) -> float:
    """Fraction of structures that match no earlier one (StructureMatcher,
    pymatgen defaults unless ``matcher`` is given). NaN for an empty input."""
    if not structures:
        return math.nan
    sm = matcher or StructureMatcher()
    n_unique = 0
    for idx in _by_formula(structures).values():
        firsts: list[int] = []  # earlier structures that were themselves unique
        for k, i in enumerate(idx):
            # Representatives first (most likely to match), then the remaining
            # earlier ones, so the result is exactly "matches no earlier one".
            seen = set(firsts)
            earlier = firsts + [j for j in idx[:k] if j not in seen]
            if not any(sm.fit(structures[j], structures[i]) for j in earlier):
                firsts.append(i)
        n_unique += len(firsts)
    return n_unique / len(structures)


def novelty(structures: Sequence[Structure], reference: Sequence[Structure],
            matcher: StructureMatcher | None = None) -> float:
    """Fraction of structures that match no reference structure (compared only
    within the same reduced formula). NaN for an empty input."""
    if not structures:
        return math.nan
    sm = matcher or StructureMatcher()
    ref = _by_formula(reference)
    novel = sum(not any(sm.fit(s, reference[j]) for j in ref.get(s.composition.reduced_formula, []))
                for s in structures)
    return novel / len(structures)


# ------------------------------------------------------------ fingerprints


@lru_cache(maxsize=1)
def _featurizers() -> tuple[Any, Any]:
    from matminer.featurizers.composition.composite import ElementProperty
    from matminer.featurizers.site.fingerprint import CrystalNNFingerprint

    # impute_nan=False: CDVAE's matminer did not impute; its CompScaler sets NaN to 0.
    return CrystalNNFingerprint.from_preset("ops"), ElementProperty.from_preset("magpie", impute_nan=False)


def fingerprints(structures: Sequence[Structure], max_sites: int | None = None) -> Fingerprints:
    """(structure, composition) fingerprints, one row per structure: mean of
    the CrystalNN 'ops' site fingerprints (61) and Magpie ElementProperty (132).

    A structure whose featurisation raises (as in CDVAE, which then counts it
    invalid) or that has more than ``max_sites`` sites gets NaN rows in both.
    """
    site_fp, comp_fp = _featurizers()
    S = np.full((len(structures), len(site_fp.feature_labels())), np.nan)
    C = np.full((len(structures), len(comp_fp.feature_labels())), np.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # CrystalNN: "no oxidation states", "cannot locate radius"
        for i, s in enumerate(structures):
            if max_sites is not None and len(s) > max_sites:
                continue
            try:
                # CDVAE's structures carry bare elements; CrystalNN uses oxidation states if present.
                plain = s.copy()
                plain.remove_oxidation_states()
                site = np.mean([site_fp.featurize(plain, j) for j in range(len(plain))], axis=0)
                comp = np.asarray(comp_fp.featurize(plain.composition), dtype=float)
            except Exception:  # noqa: BLE001 - CDVAE: any featuriser failure marks the crystal invalid
                continue
            S[i], C[i] = site, comp
    return S, C


def fingerprint_ok(struct_fps: np.ndarray) -> np.ndarray:
    """Rows whose fingerprint was computed (not the all-NaN failure marker)."""
    return ~np.isnan(np.asarray(struct_fps, dtype=float)).all(axis=1)


def _comp_scale(comp_fps: np.ndarray) -> np.ndarray:
    """CDVAE ``CompScaler.transform``: fixed MP-20 mean/std, NaN -> 0."""
    z = (np.asarray(comp_fps, dtype=float) - _COMP_MEANS) / _COMP_STDS
    return np.where(np.isnan(z), 0.0, z)


# ---------------------------------------------------------------- coverage


def coverage(gen_struct_fps: np.ndarray, gen_comp_fps: np.ndarray, ref_struct_fps: np.ndarray,
             ref_comp_fps: np.ndarray, struct_cutoff: float = 0.4, comp_cutoff: float = 10.0) -> dict[str, float]:
    """CDVAE ``compute_cov``: COV-R is the fraction of reference structures
    within both cutoffs (Euclidean, composition fps scaled by CompScaler) of
    some generated one; COV-P the fraction of generated within both cutoffs of
    some reference one. Also the mean minimum distances (AMSD, AMCD).

    Generated rows whose fingerprint failed are dropped but stay in COV-P's
    denominator, as in CDVAE. Defaults are CDVAE's MP-20 cutoffs.
    """
    gs, gc = np.asarray(gen_struct_fps, dtype=float), np.asarray(gen_comp_fps, dtype=float)
    rs, rc = np.asarray(ref_struct_fps, dtype=float), np.asarray(ref_comp_fps, dtype=float)
    n_gen = len(gs)
    ok, rok = fingerprint_ok(gs), fingerprint_ok(rs)
    # Deviation: CDVAE assumes every reference fingerprint exists (it would raise); failed ones are dropped.
    rs, rc = rs[rok], _comp_scale(rc[rok])
    gs, gc = gs[ok], _comp_scale(gc[ok])
    nan = math.nan
    if n_gen == 0 or len(rs) == 0:
        return dict(cov_recall=nan, cov_precision=nan, amsd_recall=nan, amsd_precision=nan, amcd_recall=nan,
                    amcd_precision=nan)
    if len(gs) == 0:
        return dict(cov_recall=0.0, cov_precision=0.0, amsd_recall=nan, amsd_precision=nan, amcd_recall=nan,
                    amcd_precision=nan)
    sd, cd = cdist(gs, rs), cdist(gc, rc)
    s_rec, s_prec, c_rec, c_prec = sd.min(axis=0), sd.min(axis=1), cd.min(axis=0), cd.min(axis=1)
    return dict(
        cov_recall=float(np.mean((s_rec <= struct_cutoff) & (c_rec <= comp_cutoff))),
        cov_precision=float(np.sum((s_prec <= struct_cutoff) & (c_prec <= comp_cutoff)) / n_gen),
        amsd_recall=float(s_rec.mean()), amsd_precision=float(s_prec.mean()),
        amcd_recall=float(c_rec.mean()), amcd_precision=float(c_prec.mean()),
    )


def diversity(struct_fps: np.ndarray, comp_fps: np.ndarray) -> dict[str, float]:
    """CDVAE ``get_fp_pdist``: mean pairwise Euclidean distance of structure fps
    and of CompScaler-scaled composition fps. NaN with fewer than two rows."""
    s, c = np.asarray(struct_fps, dtype=float), np.asarray(comp_fps, dtype=float)
    if len(s) < 2:
        return {"struct_div": math.nan, "comp_div": math.nan}
    return {"struct_div": float(pdist(s).mean()), "comp_div": float(pdist(_comp_scale(c)).mean())}


# ------------------------------------------------------------- Wasserstein


def _wdist(a: Sequence[float], b: Sequence[float]) -> float:
    return float(wasserstein_distance(a, b)) if len(a) and len(b) else math.nan


def wasserstein_density(gen: Sequence[Structure], ref: Sequence[Structure]) -> float:
    """Wasserstein-1 distance between the density distributions (g/cm^3)."""
    return _wdist([float(s.density) for s in gen], [float(s.density) for s in ref])


def _n_elements(s: Structure) -> int:
    # CDVAE counts len(set(species)); equal for bare-element structures, but
    # here Fe2+ and Fe3+ count as one element.
    return len(s.composition.element_composition)


def wasserstein_n_elements(gen: Sequence[Structure], ref: Sequence[Structure]) -> float:
    """Wasserstein-1 distance between the distributions of distinct-element counts."""
    return _wdist([_n_elements(s) for s in gen], [_n_elements(s) for s in ref])


# ------------------------------------------------------------------ driver


def _json_number(v: Any) -> float | int | None:
    if isinstance(v, (bool, np.bool_)):
        return int(v)
    if isinstance(v, (int, np.integer)):
        return int(v)
    v = float(v)
    return v if math.isfinite(v) else None


def generation_metrics(generated: Sequence[Structure], reference_test: Sequence[Structure],
                       training: Sequence[Structure], *, n_eval: int | None = None, seed: int = 0,
                       struct_cutoff: float = 0.4, comp_cutoff: float = 10.0,
                       reference_fingerprints: Fingerprints | None = None,
                       matcher: StructureMatcher | None = None) -> dict[str, float | int | None]:
    """All CDVAE generation metrics, plus uniqueness and novelty.

    - struct_valid, comp_valid, valid: fractions of all generated; ``valid``
      needs both and a computable fingerprint (CDVAE).
    - COV (cov_*, amsd_*, amcd_*): all generated against ``reference_test``, as
      CDVAE's ``get_coverage`` (it passes every generated crystal, not the
      valid sample).
    - struct_div, comp_div, wdist_density, wdist_n_elements, uniqueness,
      novelty (against ``training``): over the evaluated valid sample, a random
      ``n_eval`` of the valid structures (CDVAE: 1000), all of them when
      ``n_eval`` is None or exceeds the valid count (CDVAE raises instead).
      Sampling is seeded (CDVAE used unseeded ``np.random.choice``).

    ``reference_fingerprints`` caches ``fingerprints(reference_test)``.
    Undefined values (nothing valid) are None.
    """
    gen = list(generated)
    ref = list(reference_test)
    sv = np.array(structural_validity(gen), dtype=bool)
    cv = np.array(compositional_validity(gen), dtype=bool)
    gs, gc = fingerprints(gen)
    fp_ok = fingerprint_ok(gs)
    valid = sv & cv & fp_ok
    valid_idx = np.flatnonzero(valid)
    if n_eval is not None and len(valid_idx) > n_eval:
        valid_idx = np.sort(np.random.default_rng(seed).choice(valid_idx, size=n_eval, replace=False))
    sample = [gen[i] for i in valid_idx]
    rs, rc = reference_fingerprints if reference_fingerprints is not None else fingerprints(ref)
    if len(rs) != len(ref) or len(rc) != len(ref):
        raise ValueError(f"reference_fingerprints has {len(rs)}/{len(rc)} rows for {len(ref)} structures")

    n = len(gen)
    out: dict[str, Any] = {
        "n_generated": n,
        "n_valid": int(valid.sum()),
        "n_eval": len(sample),
        "n_reference": len(ref),
        "n_training": len(training),
        "n_fingerprint_failed": int((~fp_ok).sum()),
        "struct_valid": sv.mean() if n else math.nan,
        "comp_valid": cv.mean() if n else math.nan,
        "valid": valid.mean() if n else math.nan,
    }
    out.update(coverage(gs, gc, rs, rc, struct_cutoff, comp_cutoff))
    out.update(diversity(gs[valid_idx], gc[valid_idx]))
    out["wdist_density"] = wasserstein_density(sample, ref)
    out["wdist_n_elements"] = wasserstein_n_elements(sample, ref)
    out["uniqueness"] = uniqueness(sample, matcher)
    out["novelty"] = novelty(sample, list(training), matcher)
    return {k: _json_number(v) for k, v in out.items()}
