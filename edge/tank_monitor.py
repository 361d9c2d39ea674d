"""Tank leak tests and cable zones on polled data: what `[[tanks]]` and `[[cables]]`
ask of the gateway.

Each tank keeps a bounded rolling window of its level and temperatures (numpy ring
buffers), finds its quiet periods in it, and runs the static test of `leak-test`
(:func:`leak_detection.static_test.leak_test`) once per quiet period: when the test
window is complete, or when the quiet period ends with enough settled data in it.
A sudden loss is watched in the tank's closed hours. Cables report where a leak is,
in the site's zones, and alarm again when it moves. Alarms are :class:`AlarmRule`
objects of their own, so latching, acknowledgement, stored state and relays are the
gateway's usual ones.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import numpy as np

from edge.alarms import AlarmRule, Transition
from edge.config import AlarmSection, SiteConfig
from edge.store import AlarmStateRow
from edge.tank_config import CableSection, TankSection
from groundwatch.contract import Quality
from leak_detection.cable import CableMonitor
from leak_detection.static_test import (
    FAIL,
    StaticResult,
    SuddenLossDetector,
    compensated_stream,
    leak_test,
    leak_test_message,
    movements,
)
from leak_detection.tank import thermistor_weights

log = logging.getLogger(__name__)


class RingBuffer:
    """The last `capacity` samples of time, level and k temperatures; never grows."""

    def __init__(self, capacity: int, k: int):
        self.t = np.zeros(capacity)
        self.level = np.zeros(capacity)
        self.temps = np.zeros((capacity, k))
        self.capacity, self.size, self.head = capacity, 0, 0

    def append(self, t_s: float, level_mm: float, temps_c: Iterable[float]) -> None:
        self.t[self.head] = t_s
        self.level[self.head] = level_mm
        self.temps[self.head] = list(temps_c)
        self.head = (self.head + 1) % self.capacity
        self.size = min(self.size + 1, self.capacity)

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(t, level, temps) oldest first (copies)."""
        if self.size < self.capacity:
            sl = slice(0, self.size)
            return self.t[sl].copy(), self.level[sl].copy(), self.temps[sl].copy()
        order = np.r_[self.head:self.capacity, 0:self.head]
        return self.t[order], self.level[order], self.temps[order]


@dataclass
class LeakEvent:
    """A record for the store: a test verdict (event="leak_test")."""

    source: str
    state: str
    severity: str
    point: str
    value: float | None
    message: str


Severity = Literal["info", "warning", "critical"]


def _alarm(name: str, point: str, relays: list[str], latch: bool, severity: Severity,
           message: str) -> AlarmSection:
    return AlarmSection(name=name, point=point, kind="on", latch=latch,
                        severity=severity, relays=relays, message=message)


class TankWatch:
    """One tank: its window, its quiet periods and tests, its sudden-loss watch."""

    def __init__(self, cfg: TankSection, saved: dict[str, AlarmStateRow],
                 local_hour: Callable[[], float]):
        self.cfg = cfg
        self.tank = cfg.tank()
        self.settings = cfg.settings()
        self.local_hour = local_hour
        self.wall = time.time
        level_ref = f"{cfg.device}.{cfg.level_point}"
        self.point = level_ref
        self.buffer = RingBuffer(int(cfg.window_h * 3600 / cfg.sample_s) + 2,
                                 len(cfg.temperature_points))
        self.last_sample_s = -math.inf
        self.next_check_s = -math.inf
        # Data up to here has had its verdict: a quiet period that starts before it
        # is not tested again.
        self.tested_until_s = -math.inf
        self.fail_rule = AlarmRule(_alarm(
            cfg.fail_alarm, level_ref, cfg.fail_relays, cfg.latch, "critical",
            f"tank {cfg.name} failed its {cfg.target_gph:g} gal/h static leak test"),
            saved.get(cfg.fail_alarm))
        self.loss_rule = AlarmRule(_alarm(
            cfg.loss_alarm, level_ref, cfg.sudden_loss_relays, cfg.latch, "critical",
            f"tank {cfg.name} lost more than {cfg.sudden_loss_l or 0:g} L within "
            f"{cfg.sudden_loss_window_s:g} s in closed hours"),
            saved.get(cfg.loss_alarm))
        self.sudden = (SuddenLossDetector(cfg.sudden_loss_l, cfg.sudden_loss_window_s)
                       if cfg.sudden_loss_l else None)
        self.results: list[StaticResult] = []

    def closed(self) -> bool:
        """Whether now is in the tank's closed hours (no dispensing expected)."""
        hour = self.local_hour()
        for start, end in self.cfg.closed_hours:
            if (start <= hour < end) if start <= end else (hour >= start or hour < end):
                return True
        return False

    def feed(self, now_s: float, values: dict[str, float], ts: str
             ) -> tuple[list[LeakEvent], list[tuple[AlarmRule, Transition]]]:
        """One poll's good values of the tank's points."""
        now_s *= self.cfg.time_scale
        events: list[LeakEvent] = []
        changed: list[tuple[AlarmRule, Transition]] = []
        cfg = self.cfg
        level = values.get(cfg.level_point)
        temps = [values.get(p) for p in cfg.temperature_points]
        if level is None or any(t is None for t in temps):
            return events, changed
        temps_c = [float(t) for t in temps if t is not None]
        if self.sudden is not None:
            w = self._weights(level)
            v_tc = float(compensated_stream(np.array([level]), np.array([temps_c]),
                                            self.tank, w)[0])
            started = self.sudden.update(now_s, v_tc, self.closed())
            if started is not None:
                t = self.loss_rule.evaluate(1.0 if started else 0.0, True, ts)
                if t is not None:
                    changed.append((self.loss_rule, t))
        if now_s - self.last_sample_s >= cfg.sample_s * 0.999:
            self.buffer.append(now_s, level, temps_c)
            self.last_sample_s = now_s
        if now_s >= self.next_check_s:
            self.next_check_s = now_s + cfg.check_interval_s
            for res in self.check(now_s):
                events.append(self._event(res, now_s))
                if res.verdict == FAIL or res.verdict == "pass":
                    t = self.fail_rule.evaluate(1.0 if res.verdict == FAIL else 0.0,
                                                True, ts)
                    if t is not None:
                        changed.append((self.fail_rule, t))
        return events, changed

    def _weights(self, level_mm: float) -> np.ndarray:
        k = len(self.cfg.temperature_points)
        if k == 1:
            return np.ones(1)
        return thermistor_weights(self.tank.chart, self.tank.thermistor_mm, level_mm)

    def check(self, now_s: float) -> list[StaticResult]:
        """Verdicts due now: a quiet period that ended, or one with a complete test."""
        t, level, temps = self.buffer.arrays()
        if len(t) < 10:
            return []
        settings = self.settings
        v_tc = compensated_stream(level, temps, self.tank,
                                  self._weights(float(np.median(level))))
        moves = movements(t, v_tc, settings)
        out: list[StaticResult] = []
        # Each quiet period: from the end of a movement (or the window's start) to
        # the next movement (or now). The test sees the movement it follows, so it
        # settles for a delivery or for dispensing as the case may be.
        begin_s = float(t[0])
        prev: tuple[float, float, str] | None = None
        for move in [*moves, None]:
            quiet_start = prev[1] if prev else begin_s
            quiet_end = move[0] if move else now_s
            from_s = prev[0] - 2 * settings.block_s if prev else begin_s
            if quiet_start > self.tested_until_s:
                sel = (t >= from_s) & (t <= quiet_end)
                res = leak_test(t[sel], level[sel], temps[sel], self.tank, settings)
                if self._final(res, move is not None, quiet_start, now_s):
                    if math.isfinite(res.start_s) or "not settled" in res.reason:
                        out.append(res)
                        self.results.append(res)
                    self.tested_until_s = quiet_end if move else now_s
            prev = move
        return out

    def _final(self, res: StaticResult, ended: bool, quiet_start: float,
               now_s: float) -> bool:
        s = self.settings
        if ended:
            return True
        if math.isfinite(res.start_s):
            return res.end_s - res.start_s >= s.max_test_s - 2 * self.cfg.sample_s
        return now_s - quiet_start > s.max_settle_s + s.min_test_s

    def _event(self, res: StaticResult, now_s: float) -> LeakEvent:
        value = None if math.isnan(res.rate_gph) else round(res.rate_gph, 6)
        start = end = ""
        if math.isfinite(res.start_s):
            # The window in wall time, from the monotonic times of the buffer.
            wall_s, scale = self.wall(), self.cfg.time_scale
            start, end = (datetime.fromtimestamp(
                wall_s - (now_s - x) / scale, UTC).isoformat(timespec="seconds")
                for x in (res.start_s, res.end_s))
        message = leak_test_message(res, start, end)
        log.log(logging.WARNING if res.verdict == FAIL else logging.INFO,
                "tank=%s static test %s", self.cfg.name, message)
        return LeakEvent(self.cfg.name, res.verdict,
                         "critical" if res.verdict == FAIL else "info", self.point,
                         value, message)


class CableWatch:
    """One cable: leak events located in zones; a moved leak alarms again."""

    def __init__(self, cfg: CableSection, saved: dict[str, AlarmStateRow]):
        self.cfg = cfg
        self.monitor = CableMonitor(zones=cfg.zone_list(), spread_m=cfg.spread_m)
        self.rule = AlarmRule(_alarm(cfg.name, f"{cfg.device}.{cfg.leak_point}",
                                     cfg.relays, cfg.latch, cfg.severity, cfg.message),
                              saved.get(cfg.name))
        # A leak alarm restored from the store: the monitor knows where it alarmed.
        if self.rule.condition and self.rule.state.value is not None:
            self.monitor.leak, self.monitor.alarmed_m = True, self.rule.state.value

    def feed(self, now_s: float, values: dict[str, float], ts: str
             ) -> list[tuple[AlarmRule, Transition]]:
        leak = values.get(self.cfg.leak_point)
        if leak is None:
            return []
        distance = values.get(self.cfg.distance_point)
        length = values.get(self.cfg.length_point) if self.cfg.length_point else None
        changed: list[tuple[AlarmRule, Transition]] = []
        events = self.monitor.update(now_s, leak >= 0.5, False, False, distance, length)
        for ev in events:
            if ev.kind not in ("leak", "new_leak", "leak_cleared"):
                continue
            where = ev.location if ev.distance_m is None else \
                f"{ev.distance_m:.1f} m, {ev.location}"
            acc = f" (+/- {ev.accuracy_m:.1f} m)" if ev.accuracy_m else ""
            words = {"leak": "leak at", "new_leak": "new or spreading leak at",
                     "leak_cleared": "dry again; the leak was at"}[ev.kind]
            self.rule.cfg = self.rule.cfg.model_copy(
                update={"message": f"{self.cfg.message}: {words} {where}{acc}"})
            wet = ev.kind != "leak_cleared"
            was_active = self.rule.active
            t = self.rule.evaluate(1.0 if wet else 0.0, True, ts)
            if wet and ev.distance_m is not None:
                self.rule.state.value = ev.distance_m
            if t is None and wet and was_active:
                # Wet again, or elsewhere, while the alarm still stands: a new alarm
                # event, latched again.
                self.rule.state.latched = self.cfg.latch
                t = Transition(self.rule.cfg, "raised", ev.distance_m)
            if t is not None:
                changed.append((self.rule, Transition(self.rule.cfg, t.state,
                                                      ev.distance_m)))
        return changed


def _local_hour() -> float:
    now = time.localtime()
    return now.tm_hour + now.tm_min / 60 + now.tm_sec / 3600


class LeakMonitors:
    """Every tank and cable of a site, by polled device."""

    def __init__(self, cfg: SiteConfig, saved: dict[str, AlarmStateRow],
                 local_hour: Callable[[], float] = _local_hour):
        self.tanks = [TankWatch(t, saved, local_hour) for t in cfg.tanks]
        self.cables = [CableWatch(c, saved) for c in cfg.cables]
        self.devices = {t.cfg.device for t in self.tanks} | {
            c.cfg.device for c in self.cables}
        self.rules: list[AlarmRule] = [r for t in self.tanks
                                       for r in (t.fail_rule, t.loss_rule)]
        self.rules += [c.rule for c in self.cables]

    def feed(self, device: str, samples: Iterable[Any], now_s: float, ts: str
             ) -> tuple[list[LeakEvent], list[tuple[AlarmRule, Transition]]]:
        """One poll of a device: good values to the tanks and cables on it."""
        values = {s.point: float(s.value) for s in samples
                  if s.value is not None and s.quality == Quality.GOOD}
        events: list[LeakEvent] = []
        changed: list[tuple[AlarmRule, Transition]] = []
        for tank in self.tanks:
            if tank.cfg.device == device:
                ev, ch = tank.feed(now_s, values, ts)
                events += ev
                changed += ch
        for cable in self.cables:
            if cable.cfg.device == device:
                changed += cable.feed(now_s, values, ts)
        return events, changed
