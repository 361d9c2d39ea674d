"""Threshold and state alarms with hysteresis and latching; pure logic, no I/O."""

from __future__ import annotations

from dataclasses import dataclass

from edge.config import AlarmSection
from edge.store import AlarmStateRow


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

    def __init__(self, cfg: AlarmSection, state: AlarmStateRow | None = None):
        self.cfg = cfg
        self.device, _, self.point = cfg.point.partition(".")
        self.state = state or AlarmStateRow(cfg.name, False, False, None, None)
        # Whether the condition itself holds now (a latched alarm may be active
        # while its condition is already back to normal).
        self.condition = self.state.active and not self.state.latched
        # stale alarms: the last good value and when it last changed (monotonic s)
        self.last_value: float | None = None
        self.changed_s: float | None = None

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
        if value is None or not good:
            return None
        return self._move(self._condition(value), value, ts)

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
