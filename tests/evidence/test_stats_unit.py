"""Wilson interval properties not covered by test_stats.py: other confidence
levels, the k <-> n-k symmetry, and invalid counts."""

from __future__ import annotations

import math

import pytest

from aimmat.evidence.stats import wilson_interval


def test_other_confidence_levels_match_statsmodels():
    sm = pytest.importorskip("statsmodels.stats.proportion")
    from scipy.stats import norm

    for alpha in (0.01, 0.1, 0.32):
        z = float(norm.ppf(1 - alpha / 2))
        for k, n in ((0, 5), (3, 7), (12, 40), (40, 40)):
            lo, hi = wilson_interval(k, n, z=z)
            ref_lo, ref_hi = sm.proportion_confint(k, n, alpha=alpha, method="wilson")
            assert lo == pytest.approx(ref_lo, abs=1e-12) and hi == pytest.approx(ref_hi, abs=1e-12), (alpha, k, n)


def test_wider_for_higher_confidence_and_narrower_for_more_data():
    lo95, hi95 = wilson_interval(3, 10)
    lo99, hi99 = wilson_interval(3, 10, z=2.5758293035489)
    assert lo99 < lo95 and hi99 > hi95
    lo, hi = wilson_interval(30, 100)
    assert hi - lo < hi95 - lo95


@pytest.mark.parametrize("k, n", [(0, 1), (1, 3), (4, 9), (7, 20), (50, 51)])
def test_symmetric_in_successes_and_failures_and_contains_the_estimate(k, n):
    lo, hi = wilson_interval(k, n)
    flo, fhi = wilson_interval(n - k, n)
    assert lo == pytest.approx(1 - fhi, abs=1e-12) and hi == pytest.approx(1 - flo, abs=1e-12)
    assert 0.0 <= lo <= k / n <= hi <= 1.0


def test_closed_form_at_half():
    # p = 1/2: centre 1/2, half width z sqrt(1/(4n) + z^2/(4n^2)) / (1 + z^2/n)
    z, n = 1.959963984540054, 16
    lo, hi = wilson_interval(8, n)
    half = z * math.sqrt(1 / (4 * n) + z * z / (4 * n * n)) / (1 + z * z / n)
    assert (lo, hi) == (pytest.approx(0.5 - half, abs=1e-15), pytest.approx(0.5 + half, abs=1e-15))


def test_negative_count_is_refused():
    with pytest.raises(ValueError, match="k=-1"):
        wilson_interval(-1, 5)
