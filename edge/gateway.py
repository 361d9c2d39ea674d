"""The gateway: polls every device on its period, decides alarms, drives relays.

Everything that protects the site runs here, without the network: a leak alarm sets
its relay coil on the next poll of the cable controller whether or not the broker is
reachable. Storing happens beside it, and syncing drains the store in the background.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import signal
import sqlite3
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from drivers.device import DeviceMap
from edge.alarms import AlarmRule, Transition
from edge.bus import BusError, DeviceReportedError, ModbusBus, NoAnswer, make_bus
from edge.clock import WallClock
from edge.config import DeviceSection, SiteConfig, load_config
from edge.recovery import open_gateway_store
from edge.requests import OperatorRequests
from edge.service import notify, watchdog_interval_s
from edge.status_page import StatusPage
from edge.store import (
    SCHEMA_VERSION,
    MaintenanceRow,
    utc_now_iso,
)
from edge.uplink import Uplink, uplink_credentials
from groundwatch import contract
from groundwatch.contract import Quality
from leak_detection.control_chart import Baseline

log = logging.getLogger(__name__)

# How often the "gateway healthy" relay is rewritten while the poll loop runs. A relay
# module with a communication watchdog drops it when these writes stop.
HEALTHY_REFRESH_S = 2.0
# A loop that has not turned for this long is hung: the watchdog stops being pinged.
# The longest legitimate turn is one read with its retries and the drain after them.
LOOP_STALL_S = 30.0
# A device's error rate in the health message: failed share of its polls in this window.
ERROR_WINDOW_S = 600.0


@dataclass(slots=True)
class DeviceState:
    """Runtime state of one polled device."""

    cfg: DeviceSection
    map: DeviceMap
    next_due: float = 0.0
    online: bool | None = None  # None until the first poll
    polls: int = 0
    failures: int = 0
    silent_polls: int = 0  # consecutive failed polls
    last_good_poll: str | None = None
    last_values: dict[str, float | None] = field(default_factory=dict)
    # point -> (value, quality name) of the last poll, for the operator page
    latest: dict[str, tuple[float | None, str]] = field(default_factory=dict)
    last_poll: str | None = None
    # (monotonic time, answered) of recent polls, for the error rate
    recent: deque[tuple[float, bool]] = field(default_factory=lambda: deque(maxlen=4096))

    def note_poll(self, now: float, answered: bool) -> None:
        self.recent.append((now, answered))
        while self.recent and self.recent[0][0] < now - ERROR_WINDOW_S:
            self.recent.popleft()

    def error_rate(self, now: float) -> float | None:
        """Failed share of the polls of the last ERROR_WINDOW_S; None without polls."""
        recent = [ok for t, ok in self.recent if t >= now - ERROR_WINDOW_S]
        return round(recent.count(False) / len(recent), 4) if recent else None


class Gateway(OperatorRequests):
    """Owns the store, the buses, the alarm rules and the uplink."""

    def __init__(self, cfg: SiteConfig, clock=time.monotonic):  # type: ignore[no-untyped-def]
        self.cfg = cfg
        self.clock = clock
        self.store, self.recovery = open_gateway_store(cfg.data_dir / "gateway.sqlite")
        self.wall = WallClock(cfg.gateway.clock_sync)
        self.store.clock_mark = self.wall.mark
        self.buses = {b.name: make_bus(b) for b in cfg.buses}
        self.bus_of: dict[str, str] = {}
        self.devices: dict[str, DeviceState] = {}
        for bus, dev in cfg.devices():
            self.bus_of[dev.name] = bus.name
            self.devices[dev.name] = DeviceState(dev, cfg.maps[dev.name])
        saved = self.store.load_alarm_states()
        self.rules = [AlarmRule(a, saved.get(a.name), self._stored_baseline(a.name),
                                clock) for a in cfg.alarms]
        self.rules_by_point: dict[tuple[str, str], list[AlarmRule]] = {}
        for rule in self.rules:
            self.rules_by_point.setdefault((rule.device, rule.point), []).append(rule)
        self.rule_by_name = {rule.cfg.name: rule for rule in self.rules}
        # [[tanks]] and [[cables]]: alarms of their own, fed by edge/tank_monitor.py
        # (imported only then: it brings numpy).
        self.leaks: Any = None
        if cfg.tanks or cfg.cables:
            from edge.tank_monitor import LeakMonitors

            self.leaks = LeakMonitors(cfg, saved)
            self.rules += self.leaks.rules
            self.rule_by_name.update({r.cfg.name: r for r in self.leaks.rules})
        # Maintenance mode: target ("device" or "device.point") -> who, why, since.
        self.maintenance: dict[str, MaintenanceRow] = self.store.load_maintenance()
        # Acknowledge inputs: point -> the alarms its rising edge acknowledges (None:
        # every latched one), and each input's last good state.
        self.ack_inputs: dict[tuple[str, str], list[str] | None] = {}
        if cfg.gateway.ack_input:
            dev_name, _, point = cfg.gateway.ack_input.partition(".")
            self.ack_inputs[(dev_name, point)] = None
        for a in cfg.alarms:
            if a.ack_input:
                dev_name, _, point = a.ack_input.partition(".")
                alarms = self.ack_inputs.setdefault((dev_name, point), [])
                if alarms is not None:
                    alarms.append(a.name)
        self.input_state: dict[tuple[str, str], bool] = {}
        self.relay_state: dict[str, bool] = {}  # last state written successfully
        self.relay_wanted: dict[str, bool] = {}
        self.relay_dirty = asyncio.Event()
        self.uplink = Uplink(cfg, self.store)
        self.uplink.on_command = self._on_command
        self.stop_event = asyncio.Event()
        self.started_monotonic = clock()
        self.counters = {"polls": 0, "poll_failures": 0, "readings": 0,
                         "alarms_raised": 0, "relay_writes": 0, "relay_failures": 0,
                         "store_failures": 0}
        self.store_healthy = True
        self.beats: dict[str, float] = {}  # loop name -> last turn (monotonic)

    # -- relays --------------------------------------------------------------------

    def _desired_relays(self) -> dict[str, bool]:
        wanted = {name: False for name in self.cfg.relays}
        for rule in self.rules:
            if rule.active:
                for relay in rule.cfg.relays:
                    wanted[relay] = True
        if self.cfg.gateway.healthy_relay:
            wanted[self.cfg.gateway.healthy_relay] = not self.stop_event.is_set()
        return wanted

    def _update_relays(self) -> None:
        self.relay_wanted = self._desired_relays()
        if any(self.relay_state.get(k) != v for k, v in self.relay_wanted.items()):
            self.relay_dirty.set()

    async def _write_relay(self, name: str, on: bool) -> bool:
        relay = self.cfg.relays[name]
        dev = self.devices[relay.device]
        point = dev.map.points[relay.point]
        bus = self.buses[self.bus_of[relay.device]]
        try:
            await bus.write_coil(
                dev.cfg.unit_id, dev.map.wire(point.address), on == relay.active_high
            )
        except BusError as exc:
            self.counters["relay_failures"] += 1
            log.error("site=%s relay=%s write %s failed: %s", self.cfg.site.id, name,
                      "on" if on else "off", exc)
            return False
        self.counters["relay_writes"] += 1
        if self.relay_state.get(name) != on:
            log.info("site=%s relay=%s -> %s", self.cfg.site.id, name,
                     "ON" if on else "off")
        self.relay_state[name] = on
        return True

    async def _relay_task(self) -> None:
        """Write changed relays at once; refresh all of them periodically."""
        healthy = self.cfg.gateway.healthy_relay
        next_refresh = 0.0
        while not self.stop_event.is_set():
            now = self.clock()
            self.beats["relays"] = now
            refresh = now >= next_refresh
            for name, on in self._desired_relays().items():
                if refresh or self.relay_state.get(name) != on:
                    await self._write_relay(name, on)
            if refresh:
                next_refresh = now + HEALTHY_REFRESH_S
            self.relay_dirty.clear()
            try:
                await asyncio.wait_for(self.relay_dirty.wait(), HEALTHY_REFRESH_S / 4)
            except TimeoutError:
                pass
        if healthy:  # an orderly stop de-energises "gateway healthy"
            await self._write_relay(healthy, False)

    # -- alarms --------------------------------------------------------------------

    def _record_transition(self, t: Transition, ts: str) -> None:
        a = t.alarm
        if t.state == "raised":
            self.counters["alarms_raised"] += 1
        (log.warning if t.state == "raised" else log.info)(
            "site=%s alarm=%s %s value=%s", self.cfg.site.id, a.name, t.state, t.value
        )
        self.store.add_event(
            a.name, "alarm", t.state, severity=a.severity, point=a.point, value=t.value,
            message=a.message, ts=ts,
        )

    def _evaluate(self, device: str, samples, ts: str) -> None:  # type: ignore[no-untyped-def]
        changed = []
        now_s = self.clock()
        for s in samples:
            rules = self.rules_by_point.get((device, s.point))
            if not rules or (self.maintenance and self.in_maintenance(device, s.point)):
                continue  # maintenance suppresses the point's alarms
            for rule in rules:
                t = rule.evaluate(s.value, s.quality == Quality.GOOD, ts, now_s)
                if rule.learned is not None:
                    self._store_baseline(rule)
                if t is not None:
                    changed.append((rule, t))
        self._commit_transitions(changed, ts)

    def _leak_checks(self, device: str, samples, ts: str) -> None:  # type: ignore[no-untyped-def]
        """Tank tests, sudden loss and cable zones on one poll: relays, then records."""
        if self.maintenance and self.in_maintenance(device, ""):
            return
        events, changed = self.leaks.feed(device, samples, self.clock(), ts)
        self._commit_transitions(changed, ts)
        for ev in events:
            self._stored("leak test", self.store.add_event, ev.source, "leak_test",
                         ev.state, severity=ev.severity, point=ev.point, value=ev.value,
                         message=ev.message, ts=ts, durable=ev.state == "fail")

    def _stored_baseline(self, alarm: str) -> Baseline | None:
        """A cusum alarm's baseline learned before a restart (store meta table)."""
        text = self.store.meta(f"alarm_baseline.{alarm}")
        if text is None:
            return None
        data = json.loads(text)
        return Baseline(float(data["mean"]), float(data["sd"]), int(data["n"]))

    def _store_baseline(self, rule: AlarmRule) -> None:
        b = rule.learned
        assert b is not None
        if self._stored(f"baseline {rule.cfg.name}", self.store.set_meta,
                        f"alarm_baseline.{rule.cfg.name}",
                        json.dumps({"mean": b.mean, "sd": b.sd, "n": b.n})):
            rule.learned = None  # else tried again at the next sample
            log.info("site=%s alarm=%s baseline learned: mean %.6g sd %.6g of %d values",
                     self.cfg.site.id, rule.cfg.name, b.mean, b.sd, b.n)

    def _commit_transitions(self, changed: list[tuple[AlarmRule, Transition]],
                            ts: str) -> None:
        if not changed:
            return
        # Relays first: the site is protected before the disk or the network is asked.
        self._update_relays()
        for rule, t in changed:
            self._stored(f"alarm {rule.cfg.name}", self._record_transition, t, ts)
            self._stored(f"alarm state {rule.cfg.name}", self.store.save_alarm_state,
                         rule.state)

    async def _stale_task(self, rules: list[AlarmRule]) -> None:
        """Age the stale alarms between samples: a silent device stops feeding them."""
        interval_s = min(0.5, min(r.cfg.max_age_s or 0.5 for r in rules) / 4)
        while not self.stop_event.is_set():
            now_s, ts = self.clock(), utc_now_iso()
            changed = [(r, t) for r in rules
                       if not (self.maintenance and self.in_maintenance(r.device, r.point))
                       and (t := r.evaluate(None, False, ts, now_s)) is not None]
            self._commit_transitions(changed, ts)
            try:
                await asyncio.wait_for(self.stop_event.wait(), interval_s)
            except TimeoutError:
                pass

    # -- polling -------------------------------------------------------------------

    async def _poll_device(self, bus: ModbusBus, dev: DeviceState) -> None:
        unit = dev.cfg.unit_id
        timeout_s = dev.cfg.timeout_s or bus.cfg.timeout_s
        retries = bus.cfg.retries if dev.cfg.retries is None else dev.cfg.retries
        data: dict[str, dict[int, int]] = {}
        errors: set[str] = set()
        ts = utc_now_iso()
        try:
            for block in dev.map.blocks:
                for attempt in range(retries + 1):
                    try:
                        data.setdefault(block.table, {}).update(
                            await bus.read(unit, block, timeout_s)
                        )
                        break
                    except NoAnswer:
                        if attempt == retries:
                            raise
                    except DeviceReportedError as exc:
                        errors.add(block.table)
                        log.debug("device=%s %s", dev.cfg.name, exc)
                        break
        except NoAnswer as exc:
            self._device_failed(dev, ts, str(exc))
            return

        samples = dev.map.decode(data)
        rows = []
        name = dev.cfg.name
        maintenance = bool(self.maintenance)
        for s in samples:
            quality = s.quality
            if quality == Quality.COMM_LOST and dev.map.points[s.point].table in errors:
                quality = Quality.DEVICE_ERROR
            if maintenance and self.in_maintenance(name, s.point):
                quality = Quality.MAINTENANCE
            rows.append((s.point, s.value, quality.value, s.unit))
            dev.latest[s.point] = (s.value, quality.value)
        dev.last_poll = ts
        # Alarms and relays before the store: a full or broken disk must not delay,
        # let alone stop, a leak alarm.
        self._evaluate(name, samples, ts)
        if self.leaks is not None and name in self.leaks.devices:
            self._leak_checks(name, samples, ts)
        if self.ack_inputs:
            self._check_ack_inputs(name, samples)
        if self._stored("readings", self.store.add_readings, ts, dev.cfg.name, rows):
            self.counters["readings"] += len(rows)
        dev.last_good_poll, dev.polls, dev.silent_polls = ts, dev.polls + 1, 0
        dev.note_poll(self.clock(), True)
        if dev.online is False:
            log.info("site=%s device=%s unit=%s answering again", self.cfg.site.id,
                     dev.cfg.name, unit)
            self._stored("event", self.store.add_event, dev.cfg.name, "device",
                         "online", ts=ts)
        dev.online = True

    def _stored(self, what: str, func: Callable[..., Any], *args: Any,
                **kwargs: Any) -> bool:
        """Run a store call; a failure (disk full, I/O error) is counted, never raised."""
        try:
            func(*args, **kwargs)
        except sqlite3.Error as exc:
            self.counters["store_failures"] += 1
            if self.counters["store_failures"] == 1 or self.store_healthy:
                log.error("site=%s cannot store %s: %s", self.cfg.site.id, what, exc)
            self.store_healthy = False
            return False
        if not self.store_healthy:
            log.warning("site=%s store writable again after %d failures",
                        self.cfg.site.id, self.counters["store_failures"])
            self.store_healthy = True
        return True

    def _device_failed(self, dev: DeviceState, ts: str, reason: str) -> None:
        dev.failures += 1
        dev.silent_polls += 1
        dev.note_poll(self.clock(), False)
        self.counters["poll_failures"] += 1
        if dev.online is False:
            log.debug("device=%s still silent: %s", dev.cfg.name, reason)
            return
        # First failure: say it once, loudly; store no fabricated values, only the
        # fact that communication is lost, so the cloud's latest value says so too.
        log.error("site=%s device=%s unit=%s offline: %s", self.cfg.site.id,
                  dev.cfg.name, dev.cfg.unit_id, reason)
        dev.online = False
        dev.latest = {n: (None, Quality.COMM_LOST.value) for n in dev.latest}
        self._stored("event", self.store.add_event, dev.cfg.name, "device", "offline",
                     message=reason, ts=ts)
        self._stored("readings", self.store.add_readings, ts, dev.cfg.name, [
            (name, None, Quality.COMM_LOST.value, p.unit)
            for name, p in dev.map.points.items() if p.type != "string"
        ])

    @staticmethod
    def _next_due(dev: DeviceState, now: float) -> float:
        """Keep the period; back off a silent device (doubling, capped) to spare the bus."""
        period = dev.cfg.poll_interval_s
        if dev.online is False:
            period = min(period * 2 ** min(dev.silent_polls, 16), max(
                dev.cfg.backoff_max_s, period))
        return max(dev.next_due + period, now) if dev.online else now + period

    async def _bus_task(self, bus: ModbusBus) -> None:
        devices = [d for d in self.devices.values() if self.bus_of[d.cfg.name] == bus.cfg.name]
        if not devices:
            return
        while not self.stop_event.is_set():
            self.beats[f"bus {bus.cfg.name}"] = self.clock()
            dev = min(devices, key=lambda d: d.next_due)
            delay = dev.next_due - self.clock()
            if delay > 0:
                # Sleep in short steps so the loop's heartbeat stays fresh for the
                # service watchdog even when every device polls rarely.
                try:
                    await asyncio.wait_for(self.stop_event.wait(), min(delay, 1.0))
                    break
                except TimeoutError:
                    continue
            self.counters["polls"] += 1
            try:
                await self._poll_device(bus, dev)
            except Exception:  # noqa: BLE001 - a sensor never kills the poll loop
                log.exception("site=%s device=%s poll crashed", self.cfg.site.id,
                              dev.cfg.name)
            dev.next_due = self._next_due(dev, self.clock())
            self._stored("requests", self._process_requests)

    # -- housekeeping --------------------------------------------------------------

    def housekeeping(self) -> dict[str, int]:
        """Keep the store within its disk budget and its WAL cut back; report counts."""
        budget_mb = self.cfg.gateway.disk_budget_mb
        evicted = {"evicted_delivered": 0, "evicted_unsent": 0}
        if budget_mb is not None:
            evicted = self.store.enforce_budget(int(budget_mb * 1024 * 1024))
        else:
            self.store.checkpoint()
        for key, n in evicted.items():
            self.counters[key] = self.counters.get(key, 0) + n
        if evicted["evicted_unsent"]:
            log.warning("site=%s disk budget of %s MB reached: evicted %d unsent and "
                        "%d delivered readings, oldest first", self.cfg.site.id,
                        budget_mb, evicted["evicted_unsent"], evicted["evicted_delivered"])
        if any(evicted.values()):
            self.store.add_event(
                "store", "store", "evicted", severity="warning",
                value=float(evicted["evicted_unsent"]),
                message=(f"disk budget {budget_mb} MB: evicted "
                         f"{evicted['evicted_unsent']} unsent and "
                         f"{evicted['evicted_delivered']} delivered readings"),
            )
        return evicted

    async def _housekeeping_task(self) -> None:
        interval_s = self.cfg.gateway.housekeeping_interval_s
        while not self.stop_event.is_set():
            self._stored("housekeeping", self.housekeeping)
            try:
                await asyncio.wait_for(self.stop_event.wait(), interval_s)
            except TimeoutError:
                pass

    # -- health --------------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        """The gateway's health as the contract's health message names it."""
        now = self.clock()
        oldest = self.store.oldest_unsent_ts()
        age_s = None if oldest is None else max(0.0, round(
            (datetime.now(UTC) - datetime.fromisoformat(oldest)).total_seconds(), 3))
        try:
            free_bytes: int | None = shutil.disk_usage(self.cfg.data_dir).free
        except OSError:
            free_bytes = None
        try:
            db_bytes = os.stat(self.store.path).st_size
        except OSError:
            db_bytes = 0
        drops = {"evicted_unsent": int(self.store.meta("evicted_unsent_total") or 0),
                 "dead_lettered": int(self.uplink.stats.get("dead_lettered", 0)),
                 "store_failures": self.counters["store_failures"]}
        if "parked" in self.uplink.stats:
            drops["parked"] = int(self.uplink.stats["parked"])
        return {
            "ts": utc_now_iso(),
            "uptime_s": round(now - self.started_monotonic, 3),
            "outbox_depth": self.store.outbox_depth(),
            "oldest_unsent_age_s": age_s,
            "drops": drops,
            "error_window_s": ERROR_WINDOW_S,
            "devices": {name: {
                "polls": dev.polls + dev.failures, "failures": dev.failures,
                "error_rate": dev.error_rate(now), "online": dev.online,
                "last_good_poll": dev.last_good_poll,
            } for name, dev in self.devices.items()},
            "relays": {name: self.relay_state.get(name) for name in self.cfg.relays},
            "disk": {"db_bytes": db_bytes, "wal_bytes": self.store.wal_bytes(),
                     "free_bytes": free_bytes},
            "clock_synchronised": self.wall.synchronised(),
            "schema_version": SCHEMA_VERSION,
            "maintenance": sorted(self.maintenance),
        }

    def health_payload(self) -> bytes | None:
        """The encoded health message; None (logged) if the store cannot be read."""
        try:
            return contract.encode_health(self.cfg.site.id, self.cfg.gateway.id,
                                          self.health())
        except (sqlite3.Error, contract.ContractError) as exc:
            log.warning("site=%s cannot build the health message: %s",
                        self.cfg.site.id, exc)
            return None

    async def _health_task(self) -> None:
        """Publish health every status_interval_s, and at once on each connection."""
        interval_s = self.cfg.gateway.status_interval_s
        next_due, was_connected = 0.0, False
        while not self.stop_event.is_set():
            connected, now = self.uplink.connected, self.clock()
            if connected and (not was_connected or now >= next_due):
                payload = self.health_payload()
                if payload is not None:
                    self.uplink.publish_health(payload)
                next_due = now + interval_s
            was_connected = connected
            try:
                await asyncio.wait_for(self.stop_event.wait(), min(0.5, interval_s))
            except TimeoutError:
                pass

    # -- clock ---------------------------------------------------------------------

    def check_clock(self) -> dict[str, int]:
        """Correct held records once the clock is synchronised; release stale holds."""
        boot = self.wall.boot_id
        held, oldest_mono_ms = self.store.held_unsynced(boot)
        counts: dict[str, int] = {}
        if held and self.wall.synchronised():
            counts = self.store.correct_clock(boot, self.wall.offset_ms())
            log.info("site=%s clock synchronised: corrected the time of %d records",
                     self.cfg.site.id, counts["corrected"])
            self.store.add_event(
                self.cfg.gateway.id, "clock", "synchronised", durable=False,
                value=float(counts["corrected"]),
                message=f"time corrected on {counts['corrected']} records stamped "
                        "before synchronisation")
        elif held and oldest_mono_ms is not None and (
                self.wall.monotonic() * 1000 - oldest_mono_ms
                > self.cfg.gateway.clock_hold_max_s * 1000):
            counts = self.store.release_unsynced()
            log.warning("site=%s clock still not synchronised after %.0f s: sending %d "
                        "records marked clock_unsynced", self.cfg.site.id,
                        self.cfg.gateway.clock_hold_max_s, counts["released_unsynced"])
        return counts

    async def _clock_task(self) -> None:
        # Held from an earlier boot: that monotonic clock is gone, so they go as marked.
        released = self.store.release_unsynced(keep_boot_id=self.wall.boot_id)
        if released["released_unsynced"]:
            log.warning("site=%s %d records from an earlier boot were never "
                        "time-corrected: sending them marked clock_unsynced",
                        self.cfg.site.id, released["released_unsynced"])
        while not self.stop_event.is_set():
            self._stored("clock correction", self.check_clock)
            try:
                await asyncio.wait_for(self.stop_event.wait(), 1.0)
            except TimeoutError:
                pass

    # -- service watchdog ----------------------------------------------------------

    def stalled_loops(self) -> list[str]:
        """Loops (each bus, the relays) whose heartbeat is older than LOOP_STALL_S."""
        now = self.clock()
        return sorted(n for n, t in self.beats.items() if now - t > LOOP_STALL_S)

    async def _watchdog_task(self, interval_s: float) -> None:
        """Ping systemd's watchdog while every loop turns; stop pinging if one hangs."""
        stalled_before: list[str] = []
        while not self.stop_event.is_set():
            stalled = self.stalled_loops()
            if not stalled:
                notify("WATCHDOG=1")
            elif stalled != stalled_before:
                log.error("site=%s loops stalled: %s; no watchdog ping, systemd will "
                          "restart the gateway", self.cfg.site.id, ", ".join(stalled))
            stalled_before = stalled
            try:
                await asyncio.wait_for(self.stop_event.wait(), interval_s)
            except TimeoutError:
                pass

    # -- lifecycle -----------------------------------------------------------------

    async def run(self) -> None:
        """Run until stop_event is set."""
        site, gw = self.cfg.site.id, self.cfg.gateway.id
        log.info("site=%s gateway=%s starting: %d devices on %d buses, store %s", site,
                 gw, len(self.devices), len(self.buses), self.store.path)
        self.store.add_event(gw, "gateway", "started", durable=False)
        restored = [r.cfg.name for r in self.rules if r.active]
        if restored:
            log.warning("site=%s restoring active alarms %s", site, restored)
        self._update_relays()
        tasks = [asyncio.create_task(self._bus_task(b)) for b in self.buses.values()]
        tasks.append(asyncio.create_task(self._relay_task()))
        tasks.append(asyncio.create_task(self._housekeeping_task()))
        tasks.append(asyncio.create_task(self._clock_task()))
        tasks.append(asyncio.create_task(self._health_task()))
        stale = [r for r in self.rules if r.cfg.kind == "stale"]
        if stale:
            tasks.append(asyncio.create_task(self._stale_task(stale)))
        watchdog_s = watchdog_interval_s()
        if watchdog_s is not None:
            tasks.append(asyncio.create_task(self._watchdog_task(watchdog_s)))
        page = None
        address = self.cfg.gateway.status_http_address
        if address is not None:
            page = StatusPage(self, *address)
            page.start()
        notify(f"READY=1\nSTATUS=polling {len(self.devices)} devices")
        # The uplink stops last, so that its final health message counts the
        # "stopped" event in the outbox.
        uplink_stop = asyncio.Event()
        uplink_task = asyncio.create_task(
            self.uplink.run(uplink_stop, final_health=self.health_payload))
        try:
            await self.stop_event.wait()
        finally:
            self.stop_event.set()
            notify("STOPPING=1")
            await asyncio.gather(*tasks, return_exceptions=True)
            try:
                self.store.add_event(gw, "gateway", "stopped", durable=False)
            finally:
                uplink_stop.set()
                await asyncio.gather(uplink_task, return_exceptions=True)
            if page is not None:
                page.stop()
            for bus in self.buses.values():
                bus.close()
            # An orderly stop: no integrity check needed at the next start.
            self._stored("the orderly-stop mark", self.store.set_meta, "running", "0")
            self.store.close()
            log.info("site=%s gateway=%s stopped", site, gw)


def run_gateway(config_path: str) -> int:
    """Entry point of `groundwatch edge`."""
    cfg = load_config(config_path)
    uplink_credentials(cfg)  # a bad secret or TLS file is a config error: before anything

    async def main() -> None:
        gw = Gateway(cfg)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, gw.stop_event.set)
        await gw.run()

    asyncio.run(main())
    return 0
