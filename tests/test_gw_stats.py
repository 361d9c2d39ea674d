"""Groundwater statistics against the worked examples of the USEPA Unified Guidance.

Data of the examples are re-typed from USEPA (2009) "Statistical Analysis of
Groundwater Monitoring Data at RCRA Facilities: Unified Guidance", EPA 530/R-09-007
(a US-government work); the published answers are those of the Guidance as reproduced
by the EnvStats reproduction scripts (Millard). Numbers only: no code or files copied.
"""

from datetime import date

import pytest
from scipy import stats

from cloud.stats import limits, serial, trend
from leak_detection.control_chart import shewhart_cusum

# Guidance example 17-7 (p. 17-36): sodium (ppm) at one well, time as 2-digit years.
SODIUM_YEAR = [89.6, 90.1, 90.8, 91.1, 92.1, 93.1, 94.1, 95.6, 96.1, 96.3]
SODIUM_PPM = [56, 53, 51, 55, 52, 60, 62, 59, 61, 63]

# Example 17-5: chloride (ppm), linear regression against time.
CHLORIDE = [
    ("2002-03-18", 11.5), ("2002-05-14", 12.6), ("2002-08-22", 13.8),
    ("2003-02-12", 12.3), ("2003-05-29", 12.8), ("2003-08-18", 13.2),
    ("2003-11-20", 14.1), ("2004-02-19", 13.3), ("2004-04-26", 13.1),
    ("2004-07-29", 13.2), ("2004-11-09", 15.3), ("2005-02-24", 15.0),
    ("2005-06-14", 15.2), ("2005-08-23", 15.8), ("2005-10-17", 16.1),
    ("2006-02-08", 15.1), ("2006-04-27", 16.4), ("2006-08-10", 17.7),
    ("2006-10-26", 17.7),
]

# Example 20-1: nickel (ppb) at one well, 8 monthly baseline and 8 compliance values.
NICKEL_BASELINE = [32.8, 15.2, 13.5, 39.6, 37.1, 10.4, 31.9, 20.6]
NICKEL_COMPLIANCE = [19.0, 34.5, 17.8, 23.6, 34.8, 28.8, 23.7, 81.8]

# Example 17-4: copper (ppb) at three background wells, 8 months each; "<5" = ND.
COPPER_BACKGROUND = [
    "<5", "<5", "7.5", "<5", "<5", "<5", "6.4", "6.0",   # Well 1
    "9.2", "<5", "<5", "6.1", "8.0", "5.9", "<5", "<5",  # Well 2
    "<5", "5.4", "6.7", "<5", "<5", "<5", "<5", "<5",    # Well 3
]
COPPER_WELL4 = [None, None, None, None, "6.2", "<5", "7.8", "10.4"]  # None: not sampled

# Example 14-4: quarterly arsenic (ppb), 1990-1993.
ARSENIC_PPB = [4.0, 7.2, 3.1, 3.5, 4.4, 5.1, 2.2, 6.3, 6.5, 7.5, 5.8, 5.9, 5.7, 4.1,
               3.8, 4.3]


def test_sodium_mann_kendall_published():
    mk = trend.mann_kendall(SODIUM_PPM)
    assert mk.s == 25
    assert mk.var_s == pytest.approx(125.0)
    assert mk.z == pytest.approx(2.146625, abs=1e-6)
    assert mk.p == pytest.approx(0.03182313, abs=1e-8)
    assert mk.tau == pytest.approx(0.5555556, abs=1e-7)
    # Exact: P(S >= 25) for n = 10 is 0.014 in exact tables of Kendall's S.
    assert mk.p_exact == pytest.approx(2 * 0.014, abs=0.001)


def test_sodium_sen_slope_published():
    sen = trend.sen_slope(SODIUM_YEAR, SODIUM_PPM)
    assert sen.slope_per_yr == pytest.approx(1.3333333, abs=1e-7)
    assert sen.intercept == pytest.approx(-65.9666667, abs=1e-7)
    assert sen.ci_low == pytest.approx(0.3992083, abs=1e-7)
    assert sen.ci_high == pytest.approx(2.3333333, abs=1e-7)


def test_sodium_trend_class_is_increasing():
    result = trend.trend(SODIUM_YEAR, SODIUM_PPM)
    assert result.trend == trend.INCREASING
    assert result.confidence == pytest.approx(1 - 0.03182313 / 2, abs=1e-8)


def test_chloride_regression_published_slope():
    days = [date.fromisoformat(d).toordinal() - date(1970, 1, 1).toordinal()
            for d, _ in CHLORIDE]
    years = [d / 365.25 for d in days]
    fit = trend.linear_regression(years, [v for _, v in CHLORIDE])
    assert fit.slope_per_yr / 365.25 == pytest.approx(0.003095753, abs=5e-10)
    assert fit.se_slope / 365.25 == pytest.approx(0.000334533, rel=1e-5)
    assert fit.t == pytest.approx(9.253952, rel=1e-6)
    assert fit.p == pytest.approx(4.764303e-08, rel=1e-5)


def test_nickel_shewhart_cusum_published():
    chart = shewhart_cusum(NICKEL_BASELINE, NICKEL_COMPLIANCE)
    assert chart.baseline.mean == pytest.approx(25.1375)
    assert chart.baseline.sd == pytest.approx(11.51818, abs=1e-5)
    zs = [p.z for p in chart.points]
    assert zs == pytest.approx([-0.533, 0.813, -0.637, -0.133, 0.839, 0.318, -0.125,
                                4.919], abs=1e-3)
    # The CUSUM (h = 5, k = 1) stays in control; the last value breaks SCL = 4.5.
    assert max(p.cusum for p in chart.points) == pytest.approx(3.919, abs=1e-3)
    assert not any(p.cusum_out for p in chart.points)
    assert [p.shewhart_out for p in chart.points] == [False] * 7 + [True]
    assert chart.out_of_control
    half = shewhart_cusum(NICKEL_BASELINE, NICKEL_COMPLIANCE, k=0.5)
    assert max(p.cusum for p in half.points) == pytest.approx(4.419, abs=1e-3)


def test_control_chart_parameters_are_configurable():
    chart = shewhart_cusum(NICKEL_BASELINE, NICKEL_COMPLIANCE, h=3.5, scl=5.0)
    assert any(p.cusum_out for p in chart.points)  # 3.919 > 3.5
    assert not any(p.shewhart_out for p in chart.points)  # 4.919 < 5.0
    with pytest.raises(ValueError, match="at least 8"):
        shewhart_cusum(NICKEL_BASELINE[:7], NICKEL_COMPLIANCE)


def _copper(texts):
    vals = [(float(t.lstrip("<")), t.startswith("<")) for t in texts if t is not None]
    return [v for v, _ in vals], [c for _, c in vals]


def test_copper_nonparametric_tolerance_limit_published():
    values, censored = _copper(COPPER_BACKGROUND)
    utl = limits.nonparametric_utl(values, censored, confidence=0.95)
    assert utl.limit == pytest.approx(9.2) and not utl.censored
    assert round(utl.coverage, 2) == 0.88
    well4, _ = _copper(COPPER_WELL4)
    assert len(well4) == 4  # blank cells are not sampled, not zeros
    assert [v > utl.limit for v in well4] == [False, False, False, True]  # 10.4 ppb
    # At 95% coverage the maximum of 24 gives only 1 - 0.95^24 confidence.
    assert limits.nonparametric_utl(values, censored, coverage=0.95).confidence == (
        pytest.approx(1 - 0.95**24))


def test_arsenic_rank_von_neumann_published():
    result = serial.rank_von_neumann(ARSENIC_PPB)
    assert result.rvn == pytest.approx(1.670588, abs=1e-6)
    assert result.p == pytest.approx(0.5051189, abs=1e-7)
    assert result.rho == pytest.approx(0.1084613, abs=1e-7)
    assert not result.correlated


def test_rank_von_neumann_small_n_exact_and_trending_series():
    # A monotone series has the smallest possible RVN: p = 2 / n! from enumeration.
    result = serial.rank_von_neumann([1, 2, 3, 4, 5, 6])
    assert result.method == "exact"
    assert result.rvn == pytest.approx(12 / (6 * 35) * 5)
    assert result.p == pytest.approx(2 * 2 / 720)


def test_prediction_kappa_published_retesting_multipliers():
    # Guidance chapter 19 worked example: n = 25 background, 10 constituents, 50
    # wells, semi-annual evaluation, SWFPR 10 %/yr.
    assert limits.per_test_alpha(10, 50) == pytest.approx(1 - 0.9 ** (1 / 500))
    assert limits.prediction_kappa(25, 2, 50, 10, 2) == pytest.approx(2.7735, abs=5e-5)
    assert limits.prediction_kappa(25, 3, 50, 10, 2) == pytest.approx(2.0144, abs=5e-5)


def test_prediction_kappa_without_retesting_is_a_student_t_limit():
    # One evaluation, no resample: kappa = t(1 - alpha, n - 1) * sqrt(1 + 1/n).
    alpha = limits.per_test_alpha(1, 1, swfpr=0.05)
    expected = stats.t.ppf(1 - alpha, 9) * (1 + 1 / 10) ** 0.5
    assert limits.prediction_kappa(10, 1, 1, 1, 1, swfpr=0.05) == pytest.approx(
        expected, rel=1e-6)


def test_retesting_power_rises_with_the_shift():
    kappa = limits.prediction_kappa(25, 2, 50, 10, 2)
    p3 = limits.retest_power(kappa, 25, 2, 2, 3.0)
    p4 = limits.retest_power(kappa, 25, 2, 2, 4.0)
    assert 0 < p3 < p4 < 1
    assert limits.retest_power(kappa, 25, 2, 2, 0.0) == pytest.approx(
        limits.per_test_alpha(10, 50), rel=1e-4)
    assert limits.retest_exceeds(10.0, 12.0, [11.0])
    assert not limits.retest_exceeds(10.0, 12.0, [9.0])


def test_confidence_limits_against_a_fixed_standard():
    values = [4.0, 6.0, 5.0, 7.0, 3.0]  # mean 5, sd sqrt(2.5)
    cl = limits.confidence_limits(values, 0.95)
    half = stats.t.ppf(0.95, 4) * 2.5**0.5 / 5**0.5
    assert (cl.lcl, cl.ucl) == pytest.approx((5 - half, 5 + half))
    assert limits.exceeds_standard(cl, 3.0) and not limits.exceeds_standard(cl, 4.0)
    assert limits.meets_cleanup_standard(cl, 7.0)
    assert not limits.meets_cleanup_standard(cl, 6.0)


def test_non_detects_are_ties_not_zeros():
    # Four non-detects at <1 then detects 2, 3: the NDs tie with each other.
    mk = trend.mann_kendall([1, 1, 1, 1, 2, 3], [True] * 4 + [False] * 2)
    assert mk.s == 4 * 2 + 1  # each ND below each detect, 2 < 3; ND-ND pairs tie
    n, t = 6, 4
    expected = (n * (n - 1) * (2 * n + 5) - t * (t - 1) * (2 * t + 5)) / 18
    assert mk.var_s == pytest.approx(expected)
    assert mk.ties and mk.p_exact is None
    # A detect of 0.8 below a detection limit of 1 cannot be ranked against it.
    assert trend.mann_kendall([0.8, 1.0], [False, True]).s == 0


@pytest.mark.parametrize("s, confidence, cov, expected", [
    (10, 0.96, 0.5, trend.INCREASING),
    (10, 0.92, 0.5, trend.PROBABLY_INCREASING),
    (10, 0.80, 0.5, trend.NO_TREND),
    (-3, 0.80, 1.5, trend.NO_TREND),
    (-3, 0.80, 0.5, trend.STABLE),
    (0, 0.50, 0.2, trend.STABLE),
    (-10, 0.92, 0.5, trend.PROBABLY_DECREASING),
    (-10, 0.96, 0.5, trend.DECREASING),
])
def test_trend_classes(s, confidence, cov, expected):
    assert trend.trend_class(8, s, confidence, cov) == expected


def test_fewer_than_four_samples_is_insufficient():
    assert trend.trend([1, 2, 3], [1, 2, 3]).trend == trend.INSUFFICIENT
