"""What operators ask of a running gateway: acknowledgements and maintenance mode.

Requests come from `groundwatch ack` and `groundwatch maintenance` (through the
store's request table), the operator page, a push button on an acknowledge input, and
the cloud (a command, applied once by its id). Each is applied on the gateway's event
loop and answered with events through the outbox, in the transaction that marks it
done, so a power cut never applies one twice or loses its answer.
"""

from __future__ import annotations

import logging
import sqlite3
from abc import ABC, abstractmethod
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from edge.alarms import AlarmRule
from edge.config import SiteConfig
from edge.store import AlarmStateRow, EdgeStore, MaintenanceRow, Request, utc_now_iso
from groundwatch import contract
from groundwatch.contract import Quality

if TYPE_CHECKING:
    from edge.gateway import DeviceState

log = logging.getLogger(__name__)


class OperatorRequests(ABC):
    """The part of the gateway that applies operators' requests (a mixin of Gateway)."""

    cfg: SiteConfig
    store: EdgeStore
    rules: list[AlarmRule]
    rule_by_name: dict[str, AlarmRule]
    devices: dict[str, DeviceState]
    maintenance: dict[str, MaintenanceRow]
    ack_inputs: dict[tuple[str, str], list[str] | None]
    input_state: dict[tuple[str, str], bool]

    # The gateway's own: relays follow the alarm states, store calls never raise.
    @abstractmethod
    def _update_relays(self) -> None: ...

    @abstractmethod
    def _stored(self, what: str, func: Callable[..., Any], *args: Any,
                **kwargs: Any) -> bool: ...

    def in_maintenance(self, device: str, point: str) -> bool:
        return device in self.maintenance or f"{device}.{point}" in self.maintenance

    def _on_command(self, payload: bytes) -> None:
        """A command from the cloud: queue it once (by id), apply it at once."""
        site, gw = self.cfg.site.id, self.cfg.gateway.id
        try:
            cmd = contract.decode_command(payload)
            if (cmd["site"], cmd["gateway"]) != (site, gw):
                raise contract.ContractError(
                    f"addressed to {cmd['site']}/{cmd['gateway']}")
        except contract.ContractError as exc:
            log.warning("site=%s ignoring a malformed command: %s", site, exc)
            return
        try:
            new = self.store.enqueue_command(cmd)
        except sqlite3.Error as exc:  # the cloud sends it again until answered
            log.error("site=%s cannot store command %s: %s", site, cmd["id"], exc)
            return
        if not new:
            log.debug("site=%s command %s already seen", site, cmd["id"])
            return
        log.info("site=%s command %s from the cloud: %s %s by %s", site, cmd["id"],
                 cmd["command"], cmd.get("alarm") or cmd.get("target"), cmd["who"])
        self._stored("requests", self._process_requests)

    def _process_requests(self) -> None:
        for req in self.store.pending_requests():
            if req.kind == "ack":
                self._apply_ack(req)
            else:
                self._apply_maintenance(req)
        if self.maintenance:
            now = datetime.now(UTC)
            for row in list(self.maintenance.values()):
                if row.until and datetime.fromisoformat(row.until) <= now:
                    self._apply_maintenance(Request(
                        "maintenance", -1, row.target, "gateway", on=False,
                        text=f"until {row.until} reached"))

    def _command_event(self, req: Request, result: str, why: str) -> list[dict[str, Any]]:
        """The answer to a cloud command, as an event record (none for local requests)."""
        if req.command_id is None:
            return []
        return [{"source": req.command_id, "event": "command", "state": result,
                 "point": req.target, "message": f"{req.kind} by {req.who}: {why}"}]

    def _apply_ack(self, req: Request) -> None:
        site = self.cfg.site.id
        by = f"{req.who} in the cloud" if req.command_id else req.who
        note = f": {req.text}" if req.text else ""
        rule = self.rule_by_name.get(req.target)
        events: list[dict[str, Any]] = []
        states: list[AlarmStateRow] = []
        ts = utc_now_iso()
        t = None if rule is None else rule.acknowledge(ts)
        if rule is None:
            result, why = "rejected", f"no alarm {req.target!r}"
        elif t is None:
            result = "ignored"
            why = (f"alarm {req.target} is "
                   f"{'active, not latched' if rule.active else 'not active'}")
        else:
            result, why = "applied", f"alarm {req.target} {t.state}"
            self._update_relays()
            events.append({"source": req.target, "event": "alarm", "state": t.state,
                           "severity": rule.cfg.severity, "point": rule.cfg.point,
                           "message": f"acknowledged by {by}{note}", "ts": ts})
            states.append(rule.state)
        (log.info if result == "applied" else log.warning)(
            "site=%s alarm=%s acknowledgement by %s: %s", site, req.target, by, why)
        self.store.finish_request(req, events + self._command_event(req, result, why),
                                  alarm_states=states, result=result)

    def _apply_maintenance(self, req: Request) -> None:
        """Enter or leave maintenance mode of a device or point.

        Entering clears the active non-latched alarms of its points (they would
        otherwise hold their relays with nothing left to clear them); a latched alarm
        stays until it is acknowledged. On leaving, alarms are evaluated afresh.
        """
        site, target = self.cfg.site.id, req.target
        by = f"{req.who} in the cloud" if req.command_id else req.who
        device, _, point = target.partition(".")
        dev = self.devices.get(device)
        events: list[dict[str, Any]] = []
        states: list[AlarmStateRow] = []
        row: MaintenanceRow | None = None
        ts = utc_now_iso()
        if dev is None or (point and point not in dev.map.points):
            result, why = "rejected", f"no device or point {target!r}"
        elif req.on:
            result, why = "applied", f"{target} in maintenance"
            row = MaintenanceRow(target, req.who, req.text, ts, req.until)
            self.maintenance[target] = row
            until = f" until {req.until}" if req.until else ""
            events.append({"source": target, "event": "maintenance", "state": "on",
                           "message": f"by {by}{until}: {req.text or 'no reason given'}",
                           "ts": ts})
            for rule in self.rules:
                if rule.device != device or (point and rule.point != point):
                    continue
                rule.condition = False  # unknown until evaluated again
                if rule.active and not rule.state.latched:
                    rule.state = AlarmStateRow(rule.cfg.name, False, False, ts, None)
                    states.append(rule.state)
                    events.append({
                        "source": rule.cfg.name, "event": "alarm", "state": "cleared",
                        "severity": rule.cfg.severity, "point": rule.cfg.point,
                        "message": f"suppressed: {target} in maintenance", "ts": ts})
            self._update_relays()
        elif target not in self.maintenance:
            result, why = "ignored", f"{target} is not in maintenance"
        else:
            result, why = "applied", f"{target} out of maintenance"
            del self.maintenance[target]
            for rule in self.rules:
                if rule.device == device and (not point or rule.point == point):
                    rule.restart()  # ages, rate windows and CUSUMs count from now
            events.append({"source": target, "event": "maintenance", "state": "off",
                           "message": f"by {by}: {req.text or 'maintenance over'}",
                           "ts": ts})
        (log.info if result == "applied" else log.warning)(
            "site=%s maintenance %s %s by %s: %s", site, target,
            "on" if req.on else "off", by, why)
        self.store.finish_request(req, events + self._command_event(req, result, why),
                                  alarm_states=states, maintenance=row, result=result)

    def _check_ack_inputs(self, device: str, samples) -> None:  # type: ignore[no-untyped-def]
        """A rising edge on an acknowledge input asks to acknowledge its alarms."""
        for s in samples:
            key = (device, s.point)
            if key not in self.ack_inputs or s.value is None or s.quality != Quality.GOOD:
                continue
            pressed = s.value >= 0.5
            was = self.input_state.get(key)
            self.input_state[key] = pressed
            if not pressed or was is not False:
                continue
            alarms = self.ack_inputs[key]
            for rule in self.rules:
                if rule.state.latched and (alarms is None or rule.cfg.name in alarms):
                    self.store.request_ack(rule.cfg.name,
                                           who=f"push button {device}.{s.point}")

    def request_local_ack(self, alarm: str, who: str) -> bool:
        """Queue an acknowledgement from the operator page; False for no such alarm."""
        if alarm not in self.rule_by_name:
            return False
        self.store.request_ack(alarm, who=who)
        self._stored("requests", self._process_requests)
        return True
