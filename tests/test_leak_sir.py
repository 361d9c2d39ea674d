"""Inventory reconciliation with an MA(1) error model.

Published (Brockwell & Davis, Introduction to Time Series and Forecasting, 2016,
Example 5.4.1): the 57 daily over/shorts of an underground gasoline tank fit an
MA(1) with theta = -0.818, sigma^2 = 2040.75; the series' mean is -4.035 gal/day
and its lag-1 sample autocorrelation -0.5035. The series itself is not shipped
(third-party textbook data, redistribution terms unclear): these tests state the
published numbers and use series generated from that model.
"""

import math

import numpy as np
import pytest

from leak_detection.sir import MA1Fit, fit_ma1, lag1_autocorrelation, reconcile

THETA, SIGMA2, MEAN, N = -0.818, 2040.75, -4.035, 57


def ma1(rng, n, theta=THETA, sigma2=SIGMA2, mean=0.0):
    e = rng.normal(0, math.sqrt(sigma2), n + 1)
    return mean + e[1:] + theta * e[:-1]


def test_fit_recovers_the_published_model_from_long_series():
    rng = np.random.default_rng(1)
    fit = fit_ma1(ma1(rng, 5000))
    assert fit.theta == pytest.approx(THETA, abs=0.02)
    assert fit.sigma2 == pytest.approx(SIGMA2, rel=0.05)


def test_lag1_autocorrelation_of_the_model():
    # rho_1 = theta / (1 + theta^2) = -0.49 for the published fit.
    rng = np.random.default_rng(2)
    assert lag1_autocorrelation(ma1(rng, 20000)) == pytest.approx(
        THETA / (1 + THETA**2), abs=0.02)


def test_published_numbers_mean_a_loss_the_naive_test_misses():
    fit = MA1Fit(MEAN, THETA, SIGMA2, N)
    sd = math.sqrt(fit.mean_variance())
    # Var(mean) = sigma^2 (1 + theta^2 + 2 theta (n-1)/n) / n
    assert sd == pytest.approx(math.sqrt(SIGMA2 * (1 + THETA**2 + 2 * THETA * 56 / 57)
                                         / 57))
    upper = MEAN + 1.96 * sd
    assert upper < 0  # the interval for the mean excludes zero: product is lost
    naive_sd = 58.96 / math.sqrt(N)  # the series' SD, as if the days were independent
    assert MEAN + 1.96 * naive_sd > 0  # the naive interval sees nothing
    assert naive_sd / sd > 4


def test_interval_coverage_with_and_without_the_correlation():
    rng = np.random.default_rng(3)
    covered = naive_covered = 0
    trials = 300
    for _ in range(trials):
        res = reconcile(ma1(rng, N), target_gph=0.2)
        covered += res.lower_gph <= 0 <= res.upper_gph
        naive_covered += res.naive_lower_gph <= 0 <= res.naive_upper_gph
    assert 0.88 <= covered / trials <= 0.99
    # Ignoring the negative correlation, the interval is far too wide: it covers
    # almost always, so it has little power against a real loss.
    assert naive_covered / trials > 0.995


def test_verdicts():
    rng = np.random.default_rng(4)
    # 4 gal/day lost = 0.168 gal/h, above the 0.1 gal/h threshold of the 0.2 target.
    leaking = reconcile(ma1(rng, N, mean=MEAN), target_gph=0.2)
    tight = reconcile(ma1(rng, N, mean=0.0), target_gph=0.2)
    short = reconcile(ma1(rng, 20, mean=0.0), target_gph=0.2)
    assert leaking.theta == pytest.approx(THETA, abs=0.25)
    assert tight.verdict in ("pass", "inconclusive")
    assert short.verdict == "inconclusive"
    fails = sum(reconcile(ma1(rng, N, mean=-7.2), 0.2).verdict == "fail"
                for _ in range(50))
    passes = sum(reconcile(ma1(rng, N), 0.2).verdict == "pass" for _ in range(50))
    assert fails >= 45 and passes >= 45
