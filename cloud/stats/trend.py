"""Mann-Kendall trend test, Sen's slope, linear regression and trend classes.

References are to USEPA (2009) "Statistical Analysis of Groundwater Monitoring Data at
RCRA Facilities: Unified Guidance", EPA 530/R-09-007 (the "Guidance"): Mann-Kendall in
section 17.3.2, Sen's slope in 17.3.3, linear regression in 17.3.1.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from statistics import NormalDist
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

MIN_TREND_SAMPLES = 4
_NORMAL = NormalDist()
EXACT_MAX_N = 40

# Classes of the trend decision table used by remediation monitoring tools (the
# MAROS / GSI Mann-Kendall toolkit table): confidence in the trend CF = 1 - p (one
# sided) and the coefficient of variation decide the class.
INCREASING = "Increasing"
PROBABLY_INCREASING = "Probably Increasing"
NO_TREND = "No Trend"
STABLE = "Stable"
PROBABLY_DECREASING = "Probably Decreasing"
DECREASING = "Decreasing"
INSUFFICIENT = "insufficient data"
TREND_CLASSES = (INCREASING, PROBABLY_INCREASING, NO_TREND, STABLE,
                 PROBABLY_DECREASING, DECREASING, INSUFFICIENT)


@dataclass(frozen=True, slots=True)
class MannKendall:
    """Mann-Kendall S with its tie-corrected variance, z and p-values."""

    n: int
    s: int
    var_s: float
    z: float
    p: float
    p_exact: float | None
    tau: float
    ties: bool


@dataclass(frozen=True, slots=True)
class SenSlope:
    """Sen's slope per year, Conover's intercept and the slope's confidence interval."""

    slope_per_yr: float
    intercept: float
    ci_low: float
    ci_high: float
    conf_level: float


@dataclass(frozen=True, slots=True)
class Regression:
    """Ordinary least-squares trend line, slope per year."""

    slope_per_yr: float
    intercept: float
    se_slope: float
    t: float
    p: float


@dataclass(frozen=True, slots=True)
class Trend:
    """Everything the CLI and the API print for one well and constituent."""

    n: int
    n_censored: int
    s: int
    var_s: float
    z: float
    p: float
    p_exact: float | None
    tau: float
    sen_slope: float | None
    sen_intercept: float | None
    sen_ci: tuple[float, float] | None
    confidence: float
    cov: float | None
    trend: str

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (slopes per year)."""
        out = asdict(self)
        out["sen_ci"] = list(self.sen_ci) if self.sen_ci else None
        return out


def rank_values(values: ArrayLike, censored: ArrayLike | None = None) -> np.ndarray:
    """Values ready for comparison, with non-detects as ties below the highest limit.

    Guidance 17.3.2: non-detects are treated as ties. With several detection limits,
    every value below the highest limit among the non-detects (detected or not) is
    indeterminate against the others, so all of them share one value below that limit.
    """
    x = np.asarray(values, dtype=float)
    if censored is None or not np.any(censored):
        return x
    cens = np.asarray(censored, dtype=bool)
    limit = float(np.max(x[cens]))
    out = x.copy()
    out[cens | (x < limit)] = limit / 2
    return out


def _tie_groups(x: np.ndarray) -> np.ndarray:
    _, counts = np.unique(x, return_counts=True)
    return counts[counts > 1]


def _s_statistic(x: np.ndarray) -> int:
    diff = np.sign(x[None, :] - x[:, None])
    return int(np.triu(diff, 1).sum())


def _exact_upper_tail(n: int, s: int) -> float:
    """P(S >= s) for n distinct values, S = n(n-1)/2 - 2 * inversions (Mahonian)."""
    counts = np.array([1.0])
    for k in range(2, n + 1):
        counts = np.convolve(counts, np.ones(k))
    n_pairs = n * (n - 1) // 2
    # counts[i] = permutations with i inversions, S = n_pairs - 2 i.
    s_values = n_pairs - 2 * np.arange(counts.size)
    return float(counts[s_values >= s].sum() / counts.sum())


def mann_kendall(
    values: ArrayLike, censored: ArrayLike | None = None,
) -> MannKendall:
    """Mann-Kendall test of values in time order; p two-sided, normal approximation.

    z carries the continuity correction, Var(S) the tie correction, as in the
    Guidance's worked example 17-7. `p_exact` is the exact two-sided p from the
    permutation distribution of S when there are no ties and n <= 40, else None.
    """
    x = rank_values(values, censored)
    n = int(x.size)
    if n < 2:
        return MannKendall(n, 0, 0.0, 0.0, 1.0, None, 0.0, False)
    s = _s_statistic(x)
    ties = _tie_groups(x)
    tie_term = float(np.sum(ties * (ties - 1) * (2 * ties + 5)))
    var_s = (n * (n - 1) * (2 * n + 5) - tie_term) / 18.0
    z = 0.0 if s == 0 or var_s <= 0 else (s - math.copysign(1, s)) / math.sqrt(var_s)
    p = math.erfc(abs(z) / math.sqrt(2))  # two-sided normal tail
    p_exact = None
    if ties.size == 0 and n <= EXACT_MAX_N:
        p_exact = min(1.0, 2 * _exact_upper_tail(n, abs(s))) if s else 1.0
    tau = s / (n * (n - 1) / 2)
    return MannKendall(n, s, float(var_s), float(z), min(p, 1.0), p_exact, tau,
                       bool(ties.size))


def _order_stat(sorted_values: np.ndarray, rank_1: float) -> float:
    """The order statistic at a 1-based rank, interpolated between neighbours."""
    rank_1 = min(max(rank_1, 1.0), float(sorted_values.size))
    lo = int(math.floor(rank_1))
    frac = rank_1 - lo
    if frac == 0 or lo >= sorted_values.size:
        return float(sorted_values[lo - 1])
    below, above = sorted_values[lo - 1], sorted_values[lo]
    return float(below + frac * (above - below))


def sen_slope(
    t_yr: ArrayLike, values: ArrayLike, censored: ArrayLike | None = None,
    conf_level: float = 0.95, var_s: float | None = None,
) -> SenSlope:
    """Sen's slope (median of pairwise slopes) with its confidence interval.

    The interval takes the slopes of rank (N - C)/2 and (N + C)/2 + 1, C =
    z(1 - alpha/2) sqrt(Var S) (Gilbert 1987, 16.5; Guidance 17.3.3), interpolating
    between neighbouring slopes at fractional ranks. Pairs sampled at the same time
    are left out. The intercept is median(x) - slope * median(t) (Conover).
    """
    t = np.asarray(t_yr, dtype=float)
    x = rank_values(values, censored)
    i, j = np.triu_indices(t.size, 1)
    dt = t[j] - t[i]
    keep = dt != 0
    slopes = np.sort((x[j] - x[i])[keep] / dt[keep])
    if slopes.size == 0:
        raise ValueError("Sen's slope needs at least two samples at different times")
    slope = float(np.median(slopes))
    if var_s is None:
        var_s = mann_kendall(x).var_s
    c = _NORMAL.inv_cdf(1 - (1 - conf_level) / 2) * math.sqrt(var_s)
    n_slopes = slopes.size
    low = _order_stat(slopes, (n_slopes - c) / 2)
    high = _order_stat(slopes, (n_slopes + c) / 2 + 1)
    intercept = float(np.median(x) - slope * np.median(t))
    return SenSlope(slope, intercept, low, high, conf_level)


def linear_regression(t_yr: ArrayLike, values: ArrayLike) -> Regression:
    """Least-squares line through the values (Guidance 17.3.1); slope per year."""
    from scipy import stats

    t = np.asarray(t_yr, dtype=float)
    x = np.asarray(values, dtype=float)
    fit = stats.linregress(t, x)
    t_stat = fit.slope / fit.stderr if fit.stderr else math.inf
    return Regression(float(fit.slope), float(fit.intercept), float(fit.stderr),
                      float(t_stat), float(fit.pvalue))


def trend_class(n: int, s: int, confidence: float, cov: float | None) -> str:
    """Trend class from S, the confidence in the trend (1 - one-sided p) and COV."""
    if n < MIN_TREND_SAMPLES:
        return INSUFFICIENT
    if s > 0:
        if confidence > 0.95:
            return INCREASING
        return PROBABLY_INCREASING if confidence >= 0.90 else NO_TREND
    if s < 0 and confidence > 0.95:
        return DECREASING
    if s < 0 and confidence >= 0.90:
        return PROBABLY_DECREASING
    return STABLE if cov is not None and cov < 1 else NO_TREND


def coefficient_of_variation(values: ArrayLike) -> float | None:
    """Sample sd / mean, or None when the mean is not positive."""
    x = np.asarray(values, dtype=float)
    if x.size < 2 or float(np.mean(x)) <= 0:
        return None
    return float(np.std(x, ddof=1) / np.mean(x))


def trend(
    t_yr: ArrayLike, values: ArrayLike, censored: ArrayLike | None = None,
    conf_level: float = 0.95,
) -> Trend:
    """Mann-Kendall, Sen's slope and the trend class of one series in time order.

    Non-detects enter the COV at their detection limit (an upper bound).
    """
    order = np.argsort(np.asarray(t_yr, dtype=float), kind="stable")
    t = np.asarray(t_yr, dtype=float)[order]
    x = np.asarray(values, dtype=float)[order]
    cens = (np.zeros(x.size, dtype=bool) if censored is None
            else np.asarray(censored, dtype=bool)[order])
    mk = mann_kendall(x, cens)
    sen = None
    if np.unique(t).size >= 2:
        sen = sen_slope(t, x, cens, conf_level, mk.var_s)
    confidence = 1 - mk.p / 2
    cov = coefficient_of_variation(x)
    return Trend(
        n=mk.n, n_censored=int(cens.sum()), s=mk.s, var_s=mk.var_s, z=mk.z, p=mk.p,
        p_exact=mk.p_exact, tau=mk.tau,
        sen_slope=sen.slope_per_yr if sen else None,
        sen_intercept=sen.intercept if sen else None,
        sen_ci=(sen.ci_low, sen.ci_high) if sen else None,
        confidence=confidence, cov=cov,
        trend=trend_class(mk.n, mk.s, confidence, cov),
    )
