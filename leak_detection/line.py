"""Line leak detection from the pressure decay of a pressurised pipe, pump off.

With the submersible pump off, the check valve traps the line at some pressure. The
line's compliance C (litres per psi: pipe, flex connectors, trapped vapour) turns a
leak flow into a pressure decay, Q = -C dP/dt; an orifice leaks as Q ~ sqrt(P), so
the flow is scaled to the reference pressure of the standard (3 gal/h at 10 psi).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from .static_test import FAIL, INCONCLUSIVE, PASS
from .stats import t_quantile
from .tank import L_PER_US_GAL


@dataclass(frozen=True)
class LineSettings:
    """A line, its compliance and how its test is judged."""

    compliance_l_per_psi: float
    target_gph: float = 3.0
    threshold_fraction: float = 0.5
    reference_psi: float = 10.0
    # Flow ~ P^exponent: 0.5 for an orifice, 1 for a laminar crack.
    exponent: float = 0.5
    min_test_s: float = 60.0
    max_test_s: float = 3600.0
    step_s: float = 30.0
    # Below this the line has lost its pressure: a large leak (or an open valve).
    lost_psi: float = 1.0
    confidence: float = 0.95

    @property
    def threshold_gph(self) -> float:
        """Leak rate at the reference pressure above which the line fails."""
        return self.threshold_fraction * self.target_gph


@dataclass(frozen=True)
class LineResult:
    """Outcome of a line test; decided_s is the time from pump-off to the verdict."""

    verdict: str
    reason: str
    rate_gph: float
    lower_gph: float
    upper_gph: float
    threshold_gph: float
    pressure_psi: float
    decided_s: float


def line_rate(
    t_s: npt.ArrayLike, pressure_psi: npt.ArrayLike, settings: LineSettings
) -> tuple[float, float, float, float]:
    """Leak flow scaled to the reference pressure (gal/h) with a confidence interval.

    Returns (rate, lower, upper, mean pressure).
    """
    t = np.asarray(t_s, dtype=float)
    p = np.asarray(pressure_psi, dtype=float)
    tc = t - t.mean()
    sxx = float(np.sum(tc * tc))
    slope = float(np.sum(tc * (p - p.mean())) / sxx)  # psi/s
    resid = p - p.mean() - slope * tc
    n = len(p)
    s2 = float(np.sum(resid * resid)) / max(n - 2, 1)
    denom = float(np.sum(resid * resid))
    r1 = float(np.sum(resid[1:] * resid[:-1]) / denom) if denom > 0 else 0.0
    r1 = min(max(r1, 0.0), 0.995)
    inflation = (1 + r1) / (1 - r1)
    se = math.sqrt(s2 / sxx * inflation)
    q = t_quantile(0.5 + settings.confidence / 2, max(n / inflation - 2, 1.0))
    p_mean = float(p.mean())
    scale = (settings.reference_psi / max(p_mean, 1e-6)) ** settings.exponent
    to_gph = settings.compliance_l_per_psi * 3600 / L_PER_US_GAL * scale
    rate = -slope * to_gph
    return rate, rate - q * se * to_gph, rate + q * se * to_gph, p_mean


def line_leak_test(
    t_s: npt.ArrayLike, pressure_psi: npt.ArrayLike, settings: LineSettings
) -> LineResult:
    """Sequential test from pump-off (the first sample): decide as soon as it can.

    fail: the line lost its pressure, or the rate's lower bound is above the
    threshold; pass: the upper bound is below the threshold; inconclusive at
    max_test_s or at the end of the data.
    """
    t = np.asarray(t_s, dtype=float)
    p = np.asarray(pressure_psi, dtype=float)
    threshold = settings.threshold_gph
    t = t - t[0]
    lost = np.flatnonzero(p < settings.lost_psi)
    end_s = min(float(t[-1]), settings.max_test_s)
    result = LineResult(INCONCLUSIVE, "no data for a test", math.nan, math.nan,
                        math.nan, threshold, float(p[0]), 0.0)
    elapsed = settings.min_test_s
    while elapsed <= end_s + 1e-9:
        if len(lost) and t[lost[0]] <= elapsed:
            return LineResult(FAIL, "line lost its pressure", math.inf, math.inf,
                              math.inf, threshold, float(p[lost[0]]), float(t[lost[0]]))
        sel = t <= elapsed
        if int(sel.sum()) >= 5:
            rate, lower, upper, p_mean = line_rate(t[sel], p[sel], settings)
            if lower > threshold:
                return LineResult(FAIL, "leak rate above the threshold", rate, lower,
                                  upper, threshold, p_mean, elapsed)
            if upper < threshold:
                return LineResult(PASS, "leak rate below the threshold", rate, lower,
                                  upper, threshold, p_mean, elapsed)
            result = LineResult(INCONCLUSIVE, "interval spans the threshold", rate,
                                lower, upper, threshold, p_mean, elapsed)
        elapsed += settings.step_s
    return result
