"""Lag-1 autocorrelation checks (Guidance 14.2.4): rank von Neumann and Yule-Walker."""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike
from scipy import stats

EXACT_MAX_N = 8


@dataclass(frozen=True, slots=True)
class SerialCorrelation:
    """Rank von Neumann ratio, its two-sided p and the lag-1 correlation estimate."""

    n: int
    rvn: float
    p: float
    method: str
    rho: float
    correlated: bool


def _rvn(ranks: np.ndarray) -> np.ndarray:
    n = ranks.shape[-1]
    return 12.0 / (n * (n * n - 1)) * np.sum(np.diff(ranks, axis=-1) ** 2, axis=-1)


def yule_walker_rho(values: ArrayLike) -> float:
    """Lag-1 autocorrelation c1 / c0 of the demeaned series (Yule-Walker, order 1)."""
    x = np.asarray(values, dtype=float)
    d = x - x.mean()
    return float(np.dot(d[:-1], d[1:]) / np.dot(d, d))


def rank_von_neumann(values: ArrayLike, alpha: float = 0.05) -> SerialCorrelation:
    """Bartels' rank von Neumann test of lag-1 autocorrelation, two-sided.

    p is exact by enumeration for n <= 8; up to n = 100 it uses Bartels' (1982) beta
    approximation, RVN / 4 ~ Beta(a, a) with a = 5n(n+1)(n-1)^2 /
    (2(n-2)(5n^2-2n-9)) - 1/2; beyond it the normal approximation with variance
    20 / (5n + 7).
    """
    x = np.asarray(values, dtype=float)
    n = int(x.size)
    if n < 4:
        raise ValueError("the rank von Neumann test needs at least 4 values")
    ranks = stats.rankdata(x)
    rvn = float(_rvn(ranks))
    if n <= EXACT_MAX_N:
        perms = np.array(list(itertools.permutations(range(1, n + 1))), dtype=float)
        dist = _rvn(perms)
        eps = 1e-9
        tail = min(np.mean(dist <= rvn + eps), np.mean(dist >= rvn - eps))
        p, method = min(1.0, 2 * float(tail)), "exact"
    elif n <= 100:
        a = 5 * n * (n + 1) * (n - 1) ** 2 / (2 * (n - 2) * (5 * n * n - 2 * n - 9))
        a -= 0.5
        low = min(rvn, 4 - rvn) / 4
        p, method = float(2 * stats.beta.cdf(low, a, a)), "beta approximation"
    else:
        z = (rvn - 2) / math.sqrt(20 / (5 * n + 7))
        p, method = float(2 * stats.norm.sf(abs(z))), "normal approximation"
    return SerialCorrelation(n, rvn, min(p, 1.0), method, yule_walker_rho(x), p < alpha)
