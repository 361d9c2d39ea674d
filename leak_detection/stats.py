"""Small statistics without scipy: normal and t quantiles, Wilson intervals."""

from __future__ import annotations

import math
from statistics import NormalDist

_NORMAL = NormalDist()


def normal_quantile(p: float) -> float:
    """Quantile of the standard normal distribution."""
    return _NORMAL.inv_cdf(p)


def t_quantile(p: float, df: float) -> float:
    """Quantile of Student's t with df degrees of freedom (df >= 1, real valued).

    Cornish-Fisher expansion in 1/df (Abramowitz & Stegun 26.7.5); exact forms for
    df = 1 and 2, where the expansion is poor.
    """
    if df <= 0:
        raise ValueError("df must be positive")
    if abs(df - 1) < 1e-9:
        return math.tan(math.pi * (p - 0.5))
    if abs(df - 2) < 1e-9:
        a = 4 * p * (1 - p)
        return (2 * p - 1) * math.sqrt(2 / a)
    z = normal_quantile(p)
    z2 = z * z
    g1 = (z2 + 1) * z / 4
    g2 = ((5 * z2 + 16) * z2 + 3) * z / 96
    g3 = (((3 * z2 + 19) * z2 + 17) * z2 - 15) * z / 384
    g4 = ((((79 * z2 + 776) * z2 + 1482) * z2 - 1920) * z2 - 945) * z / 92160
    return z + g1 / df + g2 / df**2 + g3 / df**3 + g4 / df**4


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion."""
    if n <= 0:
        return (0.0, 1.0)
    z = normal_quantile(0.5 + confidence / 2)
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))
