"""Threshold, state, rate-of-change and control-chart alarms with hysteresis and
latching; pure logic, no I/O."""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from edge.config import AlarmSection
from edge.store import AlarmStateRow
from leak_detection.control_chart import Baseline, ShewhartCusum

# A rate alarm keeps at most this many values of its window, evenly spaced in time.
RATE_MAX_SAMPLES = 240


@dataclass(frozen=True, slots=True)
class Transition:
    """What an evaluation changed: 'raised', 'cleared', 'returned' or 'acknowledged'.

    'returned' is a latched alarm whose condition went back to normal: it stays
    active (and its relays energised) until someone acknowledges it.
    """

    alarm: AlarmSection
    state: str
    value: float | None


class AlarmRule:
    """One configured alarm and its current state."""

    def __init__(self, cfg: AlarmSection, state: AlarmStateRow | None = None,
                 baseline: Baseline | None = None,
                 clock: Callable[[], float] = time.monotonic):
        """`baseline`: a cusum alarm's learned baseline, as stored; `clock` (monotonic
        seconds) times rate windows and cusum intervals when evaluate gets no now_s."""
        self.cfg = cfg
        self.clock = clock
        self.device, _, self.point = cfg.point.partition(".")
        self.state = state or AlarmStateRow(cfg.name, False, False, None, None)
        # Whether the condition itself holds now (a latched alarm may be active
        # while its condition is already back to normal).
        self.condition = self.state.active and not self.state.latched
        # stale alarms: the last good value and when it last changed (monotonic s)
        self.last_value: float | None = None
        self.changed_s: float | None = None
        # rate alarms: (monotonic s, value) of the window, and the last rate per hour
        self.window: deque[tuple[float, float]] = deque(maxlen=RATE_MAX_SAMPLES)
        self.rate_per_h: float | None = None
        # cusum alarms: the chart once there is a baseline; values to learn one from;
        # a baseline learned since the caller last stored it; the open interval.
        self.chart: ShewhartCusum | None = None
        self.learning: list[float] = []
        self.learned: Baseline | None = None
        self.interval: tuple[float, float, int] | None = None  # start_s, sum, n
        if cfg.kind == "cusum":
            if cfg.baseline_mean is not None and cfg.baseline_sd is not None:
                baseline = Baseline(cfg.baseline_mean, cfg.baseline_sd, 0)
            elif baseline is not None and baseline.n != cfg.baseline_n:
                baseline = None  # baseline_n changed: learn again
            if baseline is not None:
                self._start_chart(baseline)

    def _start_chart(self, baseline: Baseline) -> None:
        c = self.cfg
        self.chart = ShewhartCusum(baseline, h=c.h, k=c.k, scl=c.scl, keep_points=False)

    def restart(self) -> None:
        """Forget what was seen before (after maintenance): ages, rate window, CUSUM."""
        self.changed_s = None
        self.window.clear()
        self.interval = None
        if self.chart is not None:
            self.chart.cusum = 0.0

    @property
    def active(self) -> bool:
        """Relays follow this: the condition holds, or a latch is not yet acknowledged."""
        return self.state.active

    def _condition(self, value: float) -> bool:
        c = self.cfg
        if c.kind == "on":
            return value >= 0.5
        if c.kind == "off":
            return value < 0.5
        assert c.setpoint is not None
        if c.kind == "high":
            return value > c.setpoint if not self.condition else (
                value > c.setpoint - c.hysteresis
            )
        return value < c.setpoint if not self.condition else (
            value < c.setpoint + c.hysteresis
        )

    def evaluate(self, value: float | None, good: bool, ts: str,
                 now_s: float | None = None) -> Transition | None:
        """Feed one sample; only good values move the alarm (bad data holds it).

        A stale alarm needs now_s (monotonic seconds) and is also fed with value None
        between samples, so that a device that stops answering raises it too.
        """
        if self.cfg.kind == "stale":
            return self._stale(value if good else None, ts, now_s)
        if value is None or not good or not math.isfinite(value):
            return None
        if self.cfg.kind == "rate":
            return self._rate(value, ts, self.clock() if now_s is None else now_s)
        if self.cfg.kind == "cusum":
            return self._cusum(value, ts, self.clock() if now_s is None else now_s)
        return self._move(self._condition(value), value, ts)

    def _rate(self, value: float, ts: str, now_s: float) -> Transition | None:
        """Least-squares slope of the window's values, per hour, against setpoint."""
        c = self.cfg
        assert c.window_s is not None and c.setpoint is not None
        while self.window and self.window[0][0] < now_s - c.window_s:
            self.window.popleft()
        if self.window and now_s < self.window[-1][0]:
            self.window.clear()  # the clock went back: start the window again
        spacing_s = c.window_s / (RATE_MAX_SAMPLES - 1)
        if not self.window or now_s - self.window[-1][0] >= spacing_s:
            self.window.append((now_s, value))
            points = list(self.window)
        else:  # between kept values: counted now, not kept
            points = [*self.window, (now_s, value)]
        # Too short a span gives a noisy slope: hold until half the window is seen.
        if len(points) < 3 or points[-1][0] - points[0][0] < c.window_s / 2:
            return None
        n = len(points)
        t_mean = math.fsum(t for t, _ in points) / n
        v_mean = math.fsum(v for _, v in points) / n
        sxx = math.fsum((t - t_mean) ** 2 for t, _ in points)
        sxy = math.fsum((t - t_mean) * (v - v_mean) for t, v in points)
        rate = sxy / sxx * 3600.0
        self.rate_per_h = rate
        signed = rate if c.direction == "rising" else -rate
        limit = c.setpoint - c.hysteresis if self.condition else c.setpoint
        return self._move(signed > limit, round(rate, 6), ts)

    def _cusum(self, value: float, ts: str, now_s: float) -> Transition | None:
        """Chart a value (or an interval's mean); learn the baseline first if needed."""
        c = self.cfg
        x = value
        if c.interval_s > 0:
            if self.interval is None or now_s < self.interval[0]:
                self.interval = (now_s, value, 1)
                return None
            start_s, total, n = self.interval
            if now_s - start_s < c.interval_s:
                self.interval = (start_s, total + value, n + 1)
                return None
            x = total / n
            self.interval = (now_s, value, 1)
        if self.chart is None:
            self.learning.append(x)
            if len(self.learning) < c.baseline_n:
                return None
            try:
                baseline = Baseline.of(self.learning, c.baseline_n)
            except ValueError:  # all equal: no spread to chart against; start again
                self.learning = []
                return None
            self.learning = []
            self.learned = baseline
            self._start_chart(baseline)
            return None
        point = self.chart.update(x)
        return self._move(point.out, x, ts)

    def _stale(self, value: float | None, ts: str,
               now_s: float | None) -> Transition | None:
        if now_s is None:
            return None
        if self.changed_s is None:
            self.changed_s = now_s  # the age counts from the first look
        if value is not None and value != self.last_value:
            self.last_value, self.changed_s = value, now_s
        assert self.cfg.max_age_s is not None
        age_s = now_s - self.changed_s
        return self._move(age_s > self.cfg.max_age_s, round(age_s, 3), ts)

    def _move(self, condition: bool, value: float, ts: str) -> Transition | None:
        was = self.condition
        self.condition = condition
        if self.condition and not was:
            if self.state.active:  # re-raised while still latched: not a new event
                self.state.latched = self.cfg.latch
                return None
            self.state = AlarmStateRow(self.cfg.name, True, self.cfg.latch, ts, value)
            return Transition(self.cfg, "raised", value)
        if was and not self.condition:
            if self.state.latched:
                return Transition(self.cfg, "returned", value)
            self.state = AlarmStateRow(self.cfg.name, False, False, ts, value)
            return Transition(self.cfg, "cleared", value)
        return None

    def acknowledge(self, ts: str) -> Transition | None:
        """Unlatch: a latched alarm whose condition is gone clears; else it stays."""
        if not self.state.active or not self.state.latched:
            return None
        if self.condition:
            self.state.latched = False
            return Transition(self.cfg, "acknowledged", self.state.value)
        self.state = AlarmStateRow(self.cfg.name, False, False, ts, self.state.value)
        return Transition(self.cfg, "cleared", None)
