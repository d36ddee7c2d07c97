"""Statistics for small-n reporting."""

from __future__ import annotations

import math


def wilson_interval(k: int, n: int, z: float = 1.959963984540054) -> tuple[float, float] | None:
    """Wilson score interval of a binomial proportion k/n (95% by default).

    .. math:: \\frac{\\hat p + z^2/2n \\pm z \\sqrt{\\hat p (1-\\hat p)/n + z^2/4n^2}}{1 + z^2/n}

    None for n = 0 (no evidence, no interval).
    """
    if n == 0:
        return None
    if not 0 <= k <= n:
        raise ValueError(f"k={k} outside 0..n={n}")
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)
