from __future__ import annotations

import pytest

from aimmat.evidence.stats import wilson_interval


def test_wilson_known_values():
    # textbook values (Wilson 1927; Newcombe 1998, Table I): 0/10, 10/10, 4/9
    lo, hi = wilson_interval(0, 10)
    assert lo == 0.0 and hi == pytest.approx(0.2775, abs=1e-4)
    lo, hi = wilson_interval(10, 10)
    assert lo == pytest.approx(0.7225, abs=1e-4) and hi == pytest.approx(1.0)
    lo, hi = wilson_interval(4, 9)
    assert (lo, hi) == (pytest.approx(0.1888, abs=1e-4), pytest.approx(0.7333, abs=1e-4))


def test_wilson_edge_cases():
    assert wilson_interval(0, 0) is None
    with pytest.raises(ValueError):
        wilson_interval(5, 4)
    lo, hi = wilson_interval(500, 1000)
    assert lo < 0.5 < hi and hi - lo < 0.07


def test_wilson_matches_statsmodels_over_a_grid():
    sm = pytest.importorskip("statsmodels.stats.proportion")
    for n in (1, 2, 3, 5, 9, 10, 17, 40, 100, 333):
        for k in range(0, n + 1, max(1, n // 7)):
            lo, hi = wilson_interval(k, n)
            ref_lo, ref_hi = sm.proportion_confint(k, n, alpha=0.05, method="wilson")
            assert lo == pytest.approx(ref_lo, abs=1e-12) and hi == pytest.approx(ref_hi, abs=1e-12), (k, n)
