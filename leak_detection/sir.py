"""Statistical inventory reconciliation: daily over/shorts with an MA(1) error model.

Daily over/short = measured inventory - book inventory. Stick or gauge reading
error enters two consecutive days with opposite signs, so the series is close to an
MA(1) with a negative coefficient (lag-1 autocorrelation near -0.5). The variance of
its mean is then far below s^2 / n, and a plain t-test on the mean misses leaks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from .static_test import FAIL, INCONCLUSIVE, PASS
from .stats import normal_quantile, t_quantile


@dataclass(frozen=True)
class MA1Fit:
    """Gaussian maximum-likelihood MA(1) fit: x_t = mean + e_t + theta e_{t-1}."""

    mean: float
    theta: float
    sigma2: float
    n: int

    def mean_variance(self) -> float:
        """Variance of the sample mean of n values of this process."""
        n = self.n
        gamma0 = self.sigma2 * (1 + self.theta**2)
        gamma1 = self.sigma2 * self.theta
        return (n * gamma0 + 2 * (n - 1) * gamma1) / n**2


def _innovations(x: np.ndarray, thetas: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sum of squared standardised innovations and sum of log r, for each theta.

    Innovations algorithm for an MA(1) with unit innovation variance
    (Brockwell & Davis, section 5.2): r_0 = 1 + theta^2,
    r_j = 1 + theta^2 - theta^2 / r_{j-1}, prediction theta / r_{j-1} x (last error).
    """
    th2 = thetas * thetas
    r = 1 + th2
    xhat = np.zeros_like(thetas)
    ssq = np.zeros_like(thetas)
    slog = np.zeros_like(thetas)
    for xj in x:
        err = xj - xhat
        ssq += err * err / r
        slog += np.log(r)
        xhat = thetas / r * err
        r = 1 + th2 - th2 / r
    return ssq, slog


def fit_ma1(values: npt.ArrayLike) -> MA1Fit:
    """MA(1) maximum-likelihood fit to the mean-corrected series (|theta| < 1)."""
    x = np.asarray(values, dtype=float)
    if len(x) < 4:
        raise ValueError("an MA(1) fit needs at least 4 values")
    mean = float(x.mean())
    xc = x - mean
    n = len(x)

    def profile(thetas: np.ndarray) -> np.ndarray:
        ssq, slog = _innovations(xc, thetas)
        return np.asarray(np.log(ssq / n) + slog / n)

    # Reduced likelihood on a grid, then a golden-section refinement.
    grid = np.linspace(-0.999, 0.999, 1999)
    best = float(grid[int(np.argmin(profile(grid)))])
    lo, hi = max(best - 0.002, -0.9999), min(best + 0.002, 0.9999)
    g = (math.sqrt(5) - 1) / 2
    for _ in range(60):
        a, b = hi - g * (hi - lo), lo + g * (hi - lo)
        fa, fb = profile(np.array([a, b]))
        if fa < fb:
            hi = b
        else:
            lo = a
    theta = (lo + hi) / 2
    ssq, _ = _innovations(xc, np.array([theta]))
    return MA1Fit(mean, float(theta), float(ssq[0] / n), n)


@dataclass(frozen=True)
class SirResult:
    """Reconciliation verdict; rates are losses (positive: product leaves)."""

    verdict: str
    reason: str
    n_days: int
    mean_overshort_gal_per_day: float
    rate_gph: float
    lower_gph: float
    upper_gph: float
    threshold_gph: float
    target_gph: float
    theta: float
    sigma2: float
    lag1_autocorrelation: float
    naive_lower_gph: float
    naive_upper_gph: float


def lag1_autocorrelation(values: npt.ArrayLike) -> float:
    """Sample lag-1 autocorrelation (the usual biased estimator)."""
    x = np.asarray(values, dtype=float)
    xc = x - x.mean()
    return float(np.sum(xc[1:] * xc[:-1]) / np.sum(xc * xc))


def reconcile(
    overshort_gal: npt.ArrayLike, target_gph: float = 0.2,
    threshold_fraction: float = 0.5, min_days: int = 26, confidence: float = 0.95,
) -> SirResult:
    """Leak rate from daily over/shorts, interval from the MA(1) fit, verdict.

    fail: the rate is above the threshold and the interval excludes zero loss;
    pass: the interval's upper end is below the target rate; otherwise inconclusive.
    """
    x = np.asarray(overshort_gal, dtype=float)
    x = x[np.isfinite(x)]
    n = len(x)
    threshold = threshold_fraction * target_gph
    if n < 4:
        raise ValueError("reconciliation needs at least 4 days of over/shorts")
    fit = fit_ma1(x)
    # Over/shorts are gallons per day; a loss shows as a negative mean.
    rate = -fit.mean / 24
    z = normal_quantile(0.5 + confidence / 2)
    half = z * math.sqrt(max(fit.mean_variance(), 0.0)) / 24
    naive_half = t_quantile(0.5 + confidence / 2, n - 1) * float(np.std(x, ddof=1)) \
        / math.sqrt(n) / 24
    lower, upper = rate - half, rate + half
    if n < min_days:
        verdict, reason = INCONCLUSIVE, f"{n} days of data, need {min_days}"
    elif rate > threshold and lower > 0:
        verdict, reason = FAIL, "loss rate above the threshold and above zero"
    elif upper < target_gph:
        verdict, reason = PASS, "interval excludes the target rate"
    else:
        verdict, reason = INCONCLUSIVE, "interval does not exclude the target rate"
    return SirResult(
        verdict, reason, n, fit.mean, rate, lower, upper, threshold, target_gph,
        fit.theta, fit.sigma2, lag1_autocorrelation(x), rate - naive_half,
        rate + naive_half,
    )
