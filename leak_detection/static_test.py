"""Static tank leak test in quiet periods, continuous test, sudden-loss check.

The gateway and `groundwatch leak-test` both call :func:`leak_test` on the raw
stream (time, level, thermistor temperatures); it finds the quiet period itself.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from .stats import t_quantile
from .tank import (
    L_PER_US_GAL,
    FloatArray,
    Tank,
    average_temperature_c,
    compensated_volume_l,
    thermistor_weights,
)

PASS, FAIL, INCONCLUSIVE = "pass", "fail", "inconclusive"


@dataclass(frozen=True)
class LeakTestSettings:
    """How a static test is run and judged."""

    target_gph: float = 0.2
    # Certified static tests use a threshold near half the target rate.
    threshold_fraction: float = 0.5
    # Waits after a delivery and after dispensing before the product is settled.
    delivery_settle_s: float = 8 * 3600.0
    dispensing_settle_s: float = 1800.0
    # Longer than the leader's 2 h: with 0.1 °F thermistor steps and layers left by
    # a delivery, 3 h cuts the tight-tank spread by a quarter (docs/leak_detection.md).
    # A shorter quiet stretch gives a shorter test with a wider interval.
    min_test_s: float = 3600.0
    max_test_s: float = 10800.0
    # A product movement: the compensated volume changes by event_l within
    # 2 x block_s (block means). Thermal and leak rates are far below it.
    event_l: float = 3.0
    block_s: float = 60.0
    # A stream that starts without a movement in it starts settled (a recording of a
    # quiet period); the gateway, which has no history at start, sets this False.
    settled_at_start: bool = True
    confidence: float = 0.95
    # Waiting rule, applied after the fixed settle time and checked every
    # settle_step_s over the settle_check_s before the test would start: the
    # average product temperature changes by less than max_temperature_rate_c_per_h
    # (0.2 °F/h; certified tightness tests start at 0.1 °F/h), and no submerged
    # thermistor's rate differs from the average rate by more than
    # max_gradient_rate_c_per_h (an unmixed layer still giving its heat to the
    # column, which thermistors between it and the rest weigh wrongly). Gives up
    # max_settle_s after the movement.
    max_temperature_rate_c_per_h: float = 0.2 * 5 / 9
    max_gradient_rate_c_per_h: float = 0.07
    settle_check_s: float = 7200.0
    settle_step_s: float = 1800.0
    max_settle_s: float = 24 * 3600.0

    @property
    def threshold_gph(self) -> float:
        """Leak rate above which a test fails."""
        return self.threshold_fraction * self.target_gph


@dataclass(frozen=True)
class Window:
    """A quiet stretch of a stream, in seconds of the stream's time axis."""

    start_s: float
    end_s: float
    after: str  # what it follows: "start", "delivery" or "dispensing"
    # The quiet stretch the window lies in: from the end of the movement it follows
    # (or the stream's start) to the next movement (or the stream's end).
    quiet_start_s: float = math.nan
    quiet_end_s: float = math.nan


@dataclass
class StaticResult:
    """Outcome of one static test; rates are losses (positive: product leaves)."""

    verdict: str
    reason: str
    rate_l_per_h: float = math.nan
    rate_gph: float = math.nan
    lower_gph: float = math.nan
    upper_gph: float = math.nan
    threshold_gph: float = math.nan
    target_gph: float = math.nan
    start_s: float = math.nan
    end_s: float = math.nan
    n_samples: int = 0
    n_effective: float = math.nan
    lag1_autocorrelation: float = math.nan
    volume_l: float = math.nan
    temperature_c: float = math.nan
    thermal_rate_l_per_h: float = math.nan
    weights: list[float] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """Plain JSON values, NaN as null."""
        out: dict[str, Any] = {}
        for key, value in asdict(self).items():
            if isinstance(value, float):
                value = None if math.isnan(value) else round(value, 6)
            out[key] = value
        return out


def block_means(
    t_s: FloatArray, values: FloatArray, block_s: float
) -> tuple[FloatArray, FloatArray]:
    """Means of values over consecutive blocks of block_s seconds (empty ones dropped)."""
    idx = np.floor((t_s - t_s[0]) / block_s).astype(np.int64)
    counts = np.bincount(idx)
    keep = counts > 0
    sums = np.bincount(idx, weights=values)[keep]
    tsum = np.bincount(idx, weights=t_s)[keep]
    return tsum / counts[keep], sums / counts[keep]


def movements(
    t_s: FloatArray, volume_tc_l: FloatArray, settings: LeakTestSettings
) -> list[tuple[float, float, str]]:
    """Product movements in a stream: (start_s, end_s, "delivery" | "dispensing")."""
    tb, vb = block_means(t_s, volume_tc_l, settings.block_s)
    if len(tb) < 3:
        return []
    # Change over two blocks, so a movement split across a block edge still shows.
    dv = vb[2:] - vb[:-2]
    moving = np.abs(dv) > settings.event_l
    out: list[tuple[float, float, str]] = []
    i = 0
    while i < len(moving):
        if not moving[i]:
            i += 1
            continue
        j = i
        while j + 1 < len(moving) and moving[j + 1]:
            j += 1
        kind = "delivery" if vb[j + 2] > vb[i] else "dispensing"
        out.append((float(tb[i]), float(tb[j + 2]) + settings.block_s / 2, kind))
        i = j + 1
    return out


def quiet_windows(
    t_s: FloatArray, volume_tc_l: FloatArray, settings: LeakTestSettings
) -> list[Window]:
    """Settled quiet stretches between movements, at least min_test_s long."""
    events = movements(t_s, volume_tc_l, settings)
    t0, t_end = float(t_s[0]), float(t_s[-1])
    starts: list[tuple[float, float, str]] = []
    ends: list[float] = []
    if settings.settled_at_start:
        starts.append((t0, t0, "start"))
    else:
        starts.append((t0 + settings.delivery_settle_s, t0, "start"))
    for ev_start, ev_end, kind in events:
        ends.append(ev_start)
        settle = (settings.delivery_settle_s if kind == "delivery"
                  else settings.dispensing_settle_s)
        starts.append((ev_end + settle, ev_end, kind))
    ends.append(t_end)
    out = []
    for (start, quiet_start, after), end in zip(starts, ends):
        if end - start >= settings.min_test_s:
            out.append(Window(start, min(end, start + settings.max_test_s), after,
                              quiet_start, end))
    return out


def settled(
    t_s: FloatArray, temps: FloatArray, weights: FloatArray, from_s: float,
    at_s: float, settings: LeakTestSettings,
) -> tuple[bool, float, float]:
    """The waiting rule at at_s: (settled, average rate, largest gradient rate) °C/h.

    Rates are straight-line fits of each thermistor over the check span before
    at_s (from from_s at the earliest); only thermistors with weight count.
    """
    sel = (t_s >= max(from_s, at_s - settings.settle_check_s)) & (t_s <= at_s)
    if int(sel.sum()) < 10 or float(t_s[sel][-1] - t_s[sel][0]) < \
            settings.settle_check_s / 8:
        return False, math.nan, math.nan
    x = (t_s[sel] - t_s[sel].mean()) / 3600
    y = temps[sel]
    rates = (x @ (y - y.mean(axis=0))) / float(x @ x)
    wet = weights > 0
    average = float(rates @ weights)
    gradient = float(np.max(np.abs(rates[wet] - average))) if wet.any() else 0.0
    ok = (abs(average) <= settings.max_temperature_rate_c_per_h
          and gradient <= settings.max_gradient_rate_c_per_h)
    return ok, average, gradient


def settled_window(
    t_s: FloatArray, temps: FloatArray, weights: FloatArray, w: Window,
    settings: LeakTestSettings,
) -> tuple[Window | None, str]:
    """Delay a window's start until the waiting rule holds; None if it never does."""
    if w.after == "start" and settings.settled_at_start:
        return w, ""
    start = w.start_s
    why = ""
    while start + settings.min_test_s <= w.quiet_end_s and \
            start - w.quiet_start_s <= settings.max_settle_s:
        ok, average, gradient = settled(t_s, temps, weights, w.quiet_start_s, start,
                                        settings)
        if ok:
            return Window(start, min(w.quiet_end_s, start + settings.max_test_s),
                          w.after, w.quiet_start_s, w.quiet_end_s), ""
        why = (f"product not settled {(start - w.quiet_start_s) / 3600:.1f} h after "
               f"the {w.after}: temperature {average * 1.8:+.3f} °F/h, thermistor "
               f"rates {gradient * 1.8:.3f} °F/h apart")
        start += settings.settle_step_s
    return None, why


def rate_fit(
    t_s: FloatArray, volume_tc_l: FloatArray, confidence: float
) -> tuple[float, float, float, float, float]:
    """Loss rate (L/h) by least squares, with a confidence interval for correlated noise.

    Returns (rate, lower, upper, n_effective, lag-1 autocorrelation). The slope's
    variance is inflated by (1 + r1) / (1 - r1), r1 the residuals' lag-1
    autocorrelation (AR(1) residuals), and the t quantile uses the effective sample
    size n (1 - r1) / (1 + r1).
    """
    t_h = (t_s - t_s.mean()) / 3600.0
    sxx = float(np.sum(t_h * t_h))
    slope = float(np.sum(t_h * (volume_tc_l - volume_tc_l.mean())) / sxx)
    resid = volume_tc_l - volume_tc_l.mean() - slope * t_h
    n = len(resid)
    s2 = float(np.sum(resid * resid)) / max(n - 2, 1)
    denom = float(np.sum(resid * resid))
    r1 = float(np.sum(resid[1:] * resid[:-1]) / denom) if denom > 0 else 0.0
    r1 = min(max(r1, 0.0), 0.995)
    inflation = (1 + r1) / (1 - r1)
    n_eff = max(n / inflation, 3.0)
    se = math.sqrt(s2 / sxx * inflation)
    q = t_quantile(0.5 + confidence / 2, n_eff - 2)
    rate = -slope
    return rate, rate - q * se, rate + q * se, n_eff, r1


def _as_temperatures(temperature_c: npt.ArrayLike, n: int) -> FloatArray:
    temps = np.asarray(temperature_c, dtype=float)
    if temps.ndim == 1:
        temps = temps[:, None]
    if temps.shape[0] != n:
        raise ValueError(f"{temps.shape[0]} temperature rows for {n} samples")
    return temps


def compensated_stream(
    level_mm: FloatArray, temps: FloatArray, tank: Tank, weights: FloatArray
) -> FloatArray:
    """Temperature-compensated volume of each sample."""
    volume = tank.chart.volume_l(level_mm)
    return compensated_volume_l(volume, average_temperature_c(temps, weights), tank.product)


def _weights(tank: Tank, temps: FloatArray, level_mm: float) -> FloatArray:
    k = temps.shape[1]
    if k == 1:
        return np.ones(1)
    if len(tank.thermistor_mm) != k:
        raise ValueError(f"{k} temperature columns but {len(tank.thermistor_mm)} "
                         "thermistor heights in the tank description")
    return thermistor_weights(tank.chart, tank.thermistor_mm, level_mm)


def leak_test(
    t_s: npt.ArrayLike, level_mm: npt.ArrayLike, temperature_c: npt.ArrayLike,
    tank: Tank, settings: LeakTestSettings,
) -> StaticResult:
    """Static test on a raw stream: find the first settled quiet window, fit, judge."""
    t = np.asarray(t_s, dtype=float)
    lv = np.asarray(level_mm, dtype=float)
    temps = _as_temperatures(temperature_c, len(t))
    threshold = settings.threshold_gph

    def inconclusive(reason: str) -> StaticResult:
        return StaticResult(INCONCLUSIVE, reason, threshold_gph=threshold,
                            target_gph=settings.target_gph)

    ok = np.isfinite(t) & np.isfinite(lv) & np.all(np.isfinite(temps), axis=1)
    t, lv, temps = t[ok], lv[ok], temps[ok]
    if len(t) < 10:
        return inconclusive("fewer than 10 valid samples")
    if np.any(np.diff(t) <= 0):
        raise ValueError("sample times must increase")

    # Movements are found on the compensated volume with weights at the median level:
    # the thermal swing of a settled tank then cannot look like dispensing.
    weights = _weights(tank, temps, float(np.median(lv)))
    v_tc = compensated_stream(lv, temps, tank, weights)
    windows = quiet_windows(t, v_tc, settings)
    if not windows:
        return inconclusive(f"no settled quiet period of {settings.min_test_s / 3600:g} "
                            "h in the stream")
    found: Window | None = None
    why = ""
    for candidate in windows:
        found, why = settled_window(t, temps, weights, candidate, settings)
        if found is not None:
            break
    if found is None:
        return inconclusive(why)
    w = found
    sel = (t >= w.start_s) & (t <= w.end_s)
    if int(sel.sum()) < 10:
        return inconclusive("fewer than 10 samples in the quiet period")
    ts, ls, temps_w = t[sel], lv[sel], temps[sel]

    # Weights for the level during the test itself.
    weights = _weights(tank, temps_w, float(np.median(ls)))
    volume = tank.chart.volume_l(ls)
    t_avg = average_temperature_c(temps_w, weights)
    v_tc = compensated_volume_l(volume, t_avg, tank.product)
    rate_l_h, lo_l_h, hi_l_h, n_eff, r1 = rate_fit(ts, v_tc, settings.confidence)
    raw_rate, _, _, _, _ = rate_fit(ts, volume, settings.confidence)
    rate, lower, upper = (x / L_PER_US_GAL for x in (rate_l_h, lo_l_h, hi_l_h))
    if rate > threshold:
        verdict, reason = FAIL, "leak rate above the threshold"
    elif upper < settings.target_gph:
        verdict, reason = PASS, "rate below the threshold, target rate excluded"
    else:
        verdict, reason = INCONCLUSIVE, "rate below the threshold but the interval " \
            "does not exclude the target rate"
    return StaticResult(
        verdict, reason, rate_l_per_h=rate_l_h, rate_gph=rate, lower_gph=lower,
        upper_gph=upper, start_s=w.start_s, end_s=w.end_s, n_samples=len(ts),
        n_effective=n_eff, lag1_autocorrelation=r1, volume_l=float(volume.mean()),
        temperature_c=float(t_avg.mean()), thermal_rate_l_per_h=raw_rate - rate_l_h,
        weights=[round(float(x), 4) for x in weights], threshold_gph=threshold,
        target_gph=settings.target_gph,
    )


@dataclass(frozen=True)
class ContinuousResult:
    """Verdict of a continuous test over accumulated quiet periods."""

    verdict: str
    reason: str
    rate_gph: float
    lower_gph: float
    upper_gph: float
    threshold_gph: float
    n_periods: int
    quiet_h: float


def continuous_test(
    periods: list[StaticResult], target_gph: float = 0.2,
    threshold_fraction: float = 0.5, min_periods: int = 5, min_quiet_h: float = 10.0,
    confidence: float = 0.95,
) -> ContinuousResult:
    """Combine the rates of quiet periods collected over days into one verdict.

    Periods are weighted by their duration; the spread between periods (the
    thermal residue of each one) sets the interval, so a period-to-period bias is
    not mistaken for precision.
    """
    good = [p for p in periods if np.isfinite(p.rate_gph)]
    threshold = threshold_fraction * target_gph
    quiet_h = sum((p.end_s - p.start_s) / 3600 for p in good)
    if len(good) < min_periods or quiet_h < min_quiet_h:
        return ContinuousResult(
            INCONCLUSIVE, f"{len(good)} quiet periods, {quiet_h:.1f} h: need "
            f"{min_periods} and {min_quiet_h:g} h", math.nan, math.nan, math.nan,
            threshold, len(good), quiet_h)
    rates = np.array([p.rate_gph for p in good])
    hours = np.array([(p.end_s - p.start_s) / 3600 for p in good])
    w = hours / hours.sum()
    mean = float(np.sum(w * rates))
    # Variance of a weighted mean from the weighted spread (Kish effective size).
    n_eff = 1 / float(np.sum(w * w))
    spread = float(np.sum(w * (rates - mean) ** 2)) * len(good) / (len(good) - 1)
    se = math.sqrt(spread / n_eff)
    q = t_quantile(0.5 + confidence / 2, max(n_eff - 1, 1.0))
    lower, upper = mean - q * se, mean + q * se
    if mean > threshold:
        verdict, reason = FAIL, "mean rate above the threshold"
    elif upper < target_gph:
        verdict, reason = PASS, "mean rate below the threshold, target excluded"
    else:
        verdict, reason = INCONCLUSIVE, "interval does not exclude the target rate"
    return ContinuousResult(verdict, reason, mean, lower, upper, threshold, len(good),
                            quiet_h)


class SuddenLossDetector:
    """Alarm on a large loss of compensated volume within minutes, in quiet periods.

    Dispensing looks like a large leak: the caller says when the tank is quiet (no
    dispensing signal, outside opening hours, or during a static test).
    """

    def __init__(self, threshold_l: float, window_s: float = 600.0):
        self.threshold_l = threshold_l
        self.window_s = window_s
        self._t: list[float] = []
        self._v: list[float] = []
        self.active = False

    def update(self, t_s: float, volume_tc_l: float, quiet: bool) -> bool | None:
        """Feed one sample; True when the alarm starts, False when it clears, else None."""
        if not quiet:
            self._t.clear()
            self._v.clear()
            return None
        self._t.append(t_s)
        self._v.append(volume_tc_l)
        while self._t and self._t[0] < t_s - self.window_s:
            self._t.pop(0)
            self._v.pop(0)
        # Loss from the highest level in the window, so a slow drift does not add up.
        loss = max(self._v) - volume_tc_l
        if not self.active and loss > self.threshold_l:
            self.active = True
            return True
        if self.active and loss < self.threshold_l / 2 and \
                self._t[-1] - self._t[0] >= self.window_s * 0.9:
            self.active = False
            return False
        return None


_MESSAGE = re.compile(
    r"^(?P<verdict>\w+): (?P<rate_gph>-?[\d.]+) gal/h, 95% interval "
    r"(?P<lower_gph>-?[\d.]+) \.\. (?P<upper_gph>-?[\d.]+) gal/h, threshold "
    r"(?P<threshold_gph>[\d.]+) gal/h, target (?P<target_gph>[\d.]+) gal/h, "
    r"(?P<window_h>[\d.]+) h test(?: from (?P<start>\S+) to (?P<end>\S+))?: "
    r"(?P<reason>.*)$")


def leak_test_message(res: StaticResult, start: str = "", end: str = "") -> str:
    """One line with the verdict, rate and bounds, as the gateway stores it."""
    if math.isnan(res.rate_gph):
        return f"{res.verdict}: {res.reason}"
    when = f" from {start} to {end}" if start and end else ""
    return (f"{res.verdict}: {res.rate_gph:.4f} gal/h, 95% interval "
            f"{res.lower_gph:.4f} .. {res.upper_gph:.4f} gal/h, threshold "
            f"{res.threshold_gph:.4f} gal/h, target {res.target_gph:.4f} gal/h, "
            f"{(res.end_s - res.start_s) / 3600:.2f} h test{when}: {res.reason}")


def parse_leak_test_message(message: str) -> dict[str, Any]:
    """The fields of a leak_test_message line (rates None when it has none)."""
    m = _MESSAGE.match(message or "")
    keys = ("rate_gph", "lower_gph", "upper_gph", "threshold_gph", "target_gph",
            "window_h")
    if m is None:
        verdict, _, reason = (message or "").partition(": ")
        return {"verdict": verdict, "reason": reason, **{k: None for k in keys},
                "start": None, "end": None}
    out: dict[str, Any] = {k: float(m[k]) for k in keys}
    out.update(verdict=m["verdict"], reason=m["reason"], start=m["start"], end=m["end"])
    return out
