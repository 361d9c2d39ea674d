"""Prediction limits with retesting, confidence limits and tolerance limits.

Guidance chapters: site-wide false-positive rate 6.2 and 19.1; prediction limits with
1-of-m retesting 19.2 (kappa tables of Appendix D); confidence intervals against a
fixed standard 21-22; nonparametric tolerance limits 17.2 (and example 17-4).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike
from scipy import integrate, optimize, stats

DEFAULT_SWFPR = 0.10


@dataclass(frozen=True, slots=True)
class ToleranceLimit:
    """A nonparametric upper tolerance limit: an order statistic of the background."""

    limit: float
    censored: bool
    rank_from_top: int
    n: int
    coverage: float
    confidence: float


@dataclass(frozen=True, slots=True)
class ConfidenceLimits:
    """Confidence limits of the mean, and the comparison with a fixed standard."""

    n: int
    mean: float
    sd: float
    lcl: float
    ucl: float
    conf_level: float


@dataclass(frozen=True, slots=True)
class PredictionLimit:
    """Background mean + kappa * sd for a 1-of-m retesting plan."""

    kappa: float
    limit: float
    mean: float
    sd: float
    n: int
    m: int
    alpha: float


def per_test_alpha(
    n_constituents: int, n_wells: int, swfpr: float = DEFAULT_SWFPR,
) -> float:
    """Annual false-positive rate of one well-constituent test under a site budget.

    Guidance 19.1: with c constituents at w wells each test gets
    alpha = 1 - (1 - SWFPR)^(1 / (c w)) a year, shared by the year's evaluations.
    """
    return 1 - (1 - swfpr) ** (1 / (n_constituents * n_wells))


def _pass_probability(
    kappa: float, n: int, m: int, evaluations: int, df: int, delta_sd: float = 0.0,
) -> float:
    """P(every evaluation of the year passes its 1-of-m plan) for one well.

    The year's evaluations share one background (mean and sd), so they are not
    independent. With u the normal probability of the largest of the evaluations'
    smallest resample (the one that decides the year), U has density
    g(u) = e m (1 - (1-u)^m)^(e-1) (1-u)^(m-1); given it, passing is a noncentral t
    event with sqrt(n) kappa as the limit. Integrating over u gives the answer
    (Guidance Appendix D's method, after Davis and McNichols).
    """
    e = evaluations

    def integrand(z: float) -> float:
        # u = Phi(z): integrating over z keeps the quantile finite at both ends.
        u, lower = stats.norm.cdf(z), stats.norm.sf(z)
        density = e * m * (1 - lower**m) ** (e - 1) * lower ** (m - 1)
        density *= stats.norm.pdf(z)
        ncp = math.sqrt(n) * (z + delta_sd)
        limit = math.sqrt(n) * kappa
        cdf = float(stats.nct.cdf(limit, df, ncp))
        if not math.isfinite(cdf):  # scipy returns NaN far in the upper tail
            cdf = 1.0 if limit > ncp else 0.0
        return float(density * cdf) if u else 0.0

    value, _ = integrate.quad(integrand, -12.0, 12.0, limit=200, epsabs=1e-13)
    return value


def prediction_kappa(
    n: int, m: int, n_wells: int, n_constituents: int, evaluations_per_year: int,
    swfpr: float = DEFAULT_SWFPR, df: int | None = None,
) -> float:
    """Kappa of a 1-of-m prediction limit on single future values.

    Solves P(pass all of a year's evaluations) = 1 - per_test_alpha numerically. `df`
    is n - 1 for a well's own background; for a pooled sd give its degrees of freedom.
    """
    if m < 1 or n < 3:
        raise ValueError("need m >= 1 and a background of at least 3 values")
    alpha = per_test_alpha(n_constituents, n_wells, swfpr)
    dof = n - 1 if df is None else df

    def gap(kappa: float) -> float:
        return _pass_probability(kappa, n, m, evaluations_per_year, dof) - (1 - alpha)

    return float(optimize.brentq(gap, 0.0, 15.0, xtol=1e-10))


def retest_power(
    kappa: float, n: int, m: int, evaluations_per_year: int, delta_sd: float,
    df: int | None = None,
) -> float:
    """Probability that a well whose mean rose by delta_sd sds fails in a year."""
    dof = n - 1 if df is None else df
    return 1 - _pass_probability(kappa, n, m, evaluations_per_year, dof, delta_sd)


def prediction_limit(
    background: ArrayLike, m: int, n_wells: int, n_constituents: int,
    evaluations_per_year: int, swfpr: float = DEFAULT_SWFPR,
) -> PredictionLimit:
    """Upper prediction limit for a 1-of-m plan from a background sample."""
    x = np.asarray(background, dtype=float)
    kappa = prediction_kappa(x.size, m, n_wells, n_constituents, evaluations_per_year,
                             swfpr)
    mean, sd = float(np.mean(x)), float(np.std(x, ddof=1))
    return PredictionLimit(kappa, mean + kappa * sd, mean, sd, int(x.size), m,
                           per_test_alpha(n_constituents, n_wells, swfpr))


def retest_exceeds(limit: float, first: float, resamples: Sequence[float]) -> bool:
    """A 1-of-m plan fails only if the first value and every resample exceed it."""
    return first > limit and all(v > limit for v in resamples)


def confidence_limits(values: ArrayLike, conf_level: float = 0.95) -> ConfidenceLimits:
    """One-sided t confidence limits of the mean (each at `conf_level`)."""
    x = np.asarray(values, dtype=float)
    n = int(x.size)
    if n < 2:
        raise ValueError("confidence limits need at least 2 values")
    mean, sd = float(np.mean(x)), float(np.std(x, ddof=1))
    half = float(stats.t.ppf(conf_level, n - 1)) * sd / math.sqrt(n)
    return ConfidenceLimits(n, mean, sd, mean - half, mean + half, conf_level)


def exceeds_standard(limits: ConfidenceLimits, standard: float) -> bool:
    """Compliance test (Guidance 21.1): the mean exceeds when its LCL is above it."""
    return limits.lcl > standard


def meets_cleanup_standard(limits: ConfidenceLimits, standard: float) -> bool:
    """Corrective-action test (Guidance 22.1): met when the UCL is below it."""
    return limits.ucl < standard


def nonparametric_utl(
    values: ArrayLike, censored: ArrayLike | None = None,
    rank_from_top: int = 1, confidence: float | None = 0.95,
    coverage: float | None = None,
) -> ToleranceLimit:
    """Upper tolerance limit as the `rank_from_top`-th largest background value.

    For the m-th largest of n values, confidence and coverage p are tied by
    confidence = P(Binomial(n, p) <= n - m) (Guidance 17.2.2). Give one of them: with
    `confidence`, the coverage achieved is returned; with `coverage`, the confidence.
    """
    x = np.asarray(values, dtype=float)
    cens = np.zeros(x.size, dtype=bool) if censored is None else np.asarray(censored)
    n = int(x.size)
    if not 1 <= rank_from_top <= n:
        raise ValueError(f"rank_from_top {rank_from_top} is outside 1..{n}")
    order = np.lexsort((~cens, x))  # equal values: a detect ranks above a non-detect
    pick = order[n - rank_from_top]
    if coverage is not None:
        conf = float(stats.binom.cdf(n - rank_from_top, n, coverage))
        cov = coverage
    else:
        if confidence is None:
            raise ValueError("give confidence or coverage")
        conf = confidence
        cov = float(optimize.brentq(
            lambda p: stats.binom.cdf(n - rank_from_top, n, p) - confidence,
            1e-12, 1 - 1e-12))
    return ToleranceLimit(float(x[pick]), bool(cens[pick]), rank_from_top, n, cov, conf)
