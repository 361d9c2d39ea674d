"""Cloud commands, maintenance mode, acknowledge inputs and the operator page, at the
gateway with a scripted bus (the HIL test runs the same through real parts)."""

from __future__ import annotations

import asyncio
import json
import tomllib
import urllib.error
import urllib.parse
import urllib.request
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from edge.bus import NoAnswer
from edge.config import parse_config
from edge.gateway import Gateway
from edge.status_page import StatusPage
from edge.store import EdgeStore
from groundwatch import contract

EXAMPLE = Path(__file__).parents[1] / "groundwatch" / "examples" / "site.toml"


class TableBus:
    """Answers reads from {(table, address): value}; records coil writes."""

    def __init__(self, cfg):
        self.cfg, self.regs, self.coils = cfg, {}, {}

    async def read(self, unit, block, timeout_s=None):
        if unit == 99:
            raise NoAnswer("silent")
        return {a: self.regs.get((unit, block.table, a), 0)
                for a in range(block.start, block.start + block.count)}

    async def write_coil(self, unit, address, on, timeout_s=None):
        self.coils[(unit, address)] = on

    def close(self):
        pass


def make_gateway(tmp_path, **gateway_keys):
    doc = tomllib.loads(EXAMPLE.read_text())
    doc["gateway"].update({"data_dir": str(tmp_path / "gw"), "clock_sync": "assume",
                           "status_http": "", **gateway_keys})
    cfg = parse_config(doc, "site.toml", tmp_path)
    gw = Gateway(cfg)
    bus = TableBus(cfg.buses[0])
    return gw, bus


def poll(gw, bus, device):
    asyncio.run(gw._poll_device(bus, gw.devices[device]))
    gw._process_requests()


def rows(gw, sql, *args):
    return gw.store.conn.execute(sql, args).fetchall()


def command(gw, **body):
    body.setdefault("ts", "2026-12-03T10:00:00.000+00:00")
    return contract.encode_command(gw.cfg.site.id, gw.cfg.gateway.id, body)


def test_command_contract_round_trip_and_faults():
    payload = contract.encode_command("s1", "g1", {
        "id": "c-1", "command": "maintenance", "target": "mw1", "on": True,
        "who": "alice", "reason": "pump test", "until": "2026-12-03T12:00:00+08:00",
        "ts": "2026-12-03T10:00:00+08:00"})
    body = contract.decode_command(payload)
    assert (body["v"], body["target"], body["on"]) == (1, "mw1", True)
    assert contract.command_topic("s1", "g1") == "groundwatch/s1/g1/command"
    bad = [({"id": "has space"}, "id:"), ({"command": "reboot"}, "command:"),
           ({"on": "yes"}, "on:"), ({"until": "tomorrow"}, "until:"),
           ({"who": ""}, "who:")]
    for change, where in bad:
        with pytest.raises(contract.ContractError, match=where):
            contract.decode_command(json.dumps({**body, **change}).encode())
    with pytest.raises(contract.ContractError, match="alarm:"):
        contract.encode_command("s1", "g1", {"id": "c-2", "command": "ack",
                                             "who": "bob", "ts": body["ts"]})


def test_cloud_ack_unlatches_once_and_answers_with_events(tmp_path):
    gw, bus = make_gateway(tmp_path)
    try:
        cable(bus, leak=True)
        poll(gw, bus, "cable1")
        cable(bus)
        poll(gw, bus, "cable1")
        assert gw.relay_wanted["horn"] is True  # latched: the leak is gone, not acked
        payload = command(gw, id="ack-1", command="ack", alarm="trench-leak",
                          who="alice", comment="checked the trench")
        gw._on_command(payload)
        gw._on_command(payload)  # the cloud sent it again: applied once
        assert gw.relay_wanted["horn"] is False
        alarm = rows(gw, "SELECT state, message FROM events WHERE source="
                         "'trench-leak' ORDER BY seq")
        assert [a[0] for a in alarm] == ["raised", "returned", "cleared"]
        assert alarm[-1][1] == "acknowledged by alice in the cloud: checked the trench"
        answer = rows(gw, "SELECT event, state, point, message FROM events "
                          "WHERE source='ack-1'")
        assert answer == [("command", "applied", "trench-leak",
                           "ack by alice: alarm trench-leak cleared")]
        assert rows(gw, "SELECT result FROM commands") == [("applied",)]
        # Both go out through the outbox, the alarm event before the answer.
        sent = [(r["source"], r["state"]) for r in gw.store.outbox_events(50, set())]
        assert sent[-2:] == [("trench-leak", "cleared"), ("ack-1", "applied")]
        # Another ack, now that nothing is latched, is answered "ignored"; one for an
        # alarm the gateway does not have, "rejected".
        gw._on_command(command(gw, id="ack-2", command="ack", alarm="trench-leak",
                               who="alice"))
        gw._on_command(command(gw, id="ack-3", command="ack", alarm="no-such",
                               who="alice"))
        assert rows(gw, "SELECT source, state FROM events WHERE event='command' "
                        "ORDER BY seq") == [("ack-1", "applied"), ("ack-2", "ignored"),
                                            ("ack-3", "rejected")]
        # A command for another gateway, or a malformed one, changes nothing.
        before = gw.store.next_seq
        gw._on_command(contract.encode_command("other-site", "gw-01", {
            "id": "x", "command": "ack", "alarm": "trench-leak", "who": "m",
            "ts": "2026-12-03T10:00:00+00:00"}))
        gw._on_command(b"{not json")
        assert gw.store.next_seq == before
    finally:
        gw.store.close()


def test_ack_of_an_active_latched_alarm_keeps_it_active_until_its_condition_goes(
        tmp_path):
    gw, bus = make_gateway(tmp_path)
    try:
        cable(bus, leak=True)
        poll(gw, bus, "cable1")
        gw._on_command(command(gw, id="a1", command="ack", alarm="trench-leak",
                               who="bob"))
        assert gw.relay_wanted["horn"] is True  # the leak is still there
        cable(bus)
        poll(gw, bus, "cable1")
        assert gw.relay_wanted["horn"] is False
        assert [r[0] for r in rows(gw, "SELECT state FROM events WHERE source="
                                       "'trench-leak' ORDER BY seq")] == [
            "raised", "acknowledged", "cleared"]
    finally:
        gw.store.close()


def test_maintenance_flags_readings_suppresses_alarms_and_survives_a_restart(tmp_path):
    gw, bus = make_gateway(tmp_path)
    try:
        cable(bus, broken=True)
        poll(gw, bus, "cable1")
        assert gw.rule_by_name["trench-cable-break"].active
        assert gw.relay_wanted["beacon"] is True
        gw._on_command(command(gw, id="m1", command="maintenance", target="cable1",
                               on=True, who="carol", reason="re-splicing the cable"))
        # The active non-latched alarm is cleared; its relay drops.
        assert not gw.rule_by_name["trench-cable-break"].active
        assert gw.relay_wanted["beacon"] is False
        cable(bus, leak=True, broken=True)
        poll(gw, bus, "cable1")
        # Readings keep their values, flagged maintenance; no alarm is raised.
        assert rows(gw, "SELECT value, quality FROM readings WHERE device='cable1' "
                        "AND point='leak' ORDER BY seq DESC LIMIT 1") == [
            (1.0, "maintenance")]
        assert not gw.rule_by_name["trench-leak"].active
        events = rows(gw, "SELECT source, event, state, message FROM events WHERE "
                          "event IN ('maintenance', 'command') OR state='cleared' "
                          "ORDER BY seq")
        assert events == [
            ("cable1", "maintenance", "on", "by carol in the cloud: re-splicing the cable"),
            ("trench-cable-break", "alarm", "cleared", "suppressed: cable1 in maintenance"),
            ("m1", "command", "applied", "maintenance by carol: cable1 in maintenance")]
    finally:
        gw.store.close()
    # Restarted, the gateway is still in maintenance for cable1.
    gw, bus = make_gateway(tmp_path)
    try:
        assert set(gw.maintenance) == {"cable1"}
        assert gw.health()["maintenance"] == ["cable1"]
        cable(bus, leak=True)
        poll(gw, bus, "cable1")
        assert not gw.rule_by_name["trench-leak"].active
        gw.store.request_maintenance("cable1", False, who="carol", reason="done")
        gw._process_requests()
        assert gw.maintenance == {}
        poll(gw, bus, "cable1")
        assert gw.rule_by_name["trench-leak"].active  # evaluated afresh: raised
        assert rows(gw, "SELECT quality FROM readings WHERE device='cable1' AND "
                        "point='leak' ORDER BY seq DESC LIMIT 1") == [("good",)]
        assert rows(gw, "SELECT state, message FROM events WHERE event='maintenance' "
                        "ORDER BY seq") == [
            ("on", "by carol in the cloud: re-splicing the cable"),
            ("off", "by carol: done")]
    finally:
        gw.store.close()


def test_point_maintenance_ends_by_itself_at_until(tmp_path):
    gw, bus = make_gateway(tmp_path)
    try:
        until = (datetime.now(UTC) + timedelta(seconds=0.3)).isoformat()
        gw.store.request_maintenance("cable1.leak", True, who="dan", until=until)
        gw._process_requests()
        cable(bus, leak=True)
        poll(gw, bus, "cable1")
        assert not gw.rule_by_name["trench-leak"].active
        q = dict(rows(gw, "SELECT point, quality FROM readings WHERE device='cable1'"))
        assert q["leak"] == "maintenance" and q["status"] == "good"
        time.sleep(0.35)
        gw._process_requests()
        assert gw.maintenance == {}
        assert rows(gw, "SELECT state, message FROM events WHERE event='maintenance' "
                        "ORDER BY seq")[-1] == (
            "off", f"by gateway: until {until} reached")
    finally:
        gw.store.close()


def test_a_rising_edge_on_the_ack_input_acknowledges_latched_alarms(tmp_path):
    gw, bus = make_gateway(tmp_path, ack_input="relay1.input_1")
    try:
        poll(gw, bus, "relay1")  # the button reads released: the edge can come
        cable(bus, leak=True)
        poll(gw, bus, "cable1")
        cable(bus)
        poll(gw, bus, "cable1")
        assert gw.relay_wanted["horn"] is True
        bus.regs[(3, "discrete", 0)] = 1
        poll(gw, bus, "relay1")
        assert gw.relay_wanted["horn"] is False
        assert rows(gw, "SELECT message FROM events WHERE source='trench-leak' "
                        "ORDER BY seq DESC LIMIT 1") == [
            ("acknowledged by push button relay1.input_1",)]
        # Held down: no second edge, nothing more to acknowledge anyway.
        cable(bus, leak=True)
        poll(gw, bus, "cable1")
        poll(gw, bus, "relay1")
        assert gw.relay_wanted["horn"] is True
        bus.regs[(3, "discrete", 0)] = 0
        poll(gw, bus, "relay1")
        bus.regs[(3, "discrete", 0)] = 1
        poll(gw, bus, "relay1")
        # Acknowledged while the leak holds: latch released, relay still on.
        assert not gw.rule_by_name["trench-leak"].state.latched
        assert gw.relay_wanted["horn"] is True
    finally:
        gw.store.close()


def test_a_pressed_button_at_start_is_not_an_edge(tmp_path):
    gw, bus = make_gateway(tmp_path, ack_input="relay1.input_1")
    try:
        cable(bus, leak=True)
        poll(gw, bus, "cable1")
        bus.regs[(3, "discrete", 0)] = 1
        poll(gw, bus, "relay1")
        assert gw.rule_by_name["trench-leak"].state.latched
    finally:
        gw.store.close()


def test_ack_input_must_be_a_polled_point(tmp_path):
    from drivers.errors import ConfigError
    doc = tomllib.loads(EXAMPLE.read_text())
    doc["gateway"]["ack_input"] = "mw1.level_m"  # mw1 polls only two other points
    with pytest.raises(ConfigError, match="gateway.ack_input"):
        parse_config(doc, "site.toml", tmp_path)
    doc["gateway"]["ack_input"] = "relay1.no_such"
    with pytest.raises(ConfigError, match="gateway.ack_input"):
        parse_config(doc, "site.toml", tmp_path)


def test_schema_3_store_gains_maintenance_and_commands_keeping_its_data(tmp_path):
    db = tmp_path / "g.sqlite"
    s = EdgeStore(db)
    s.add_readings("2026-12-01T08:00:00.125+00:00", "tank1",
                   [("level_mm", 1234.5, "good", "mm")])
    s.request_ack("trench-leak", who="op")
    for table in ("maintenance", "maintenance_requests", "commands"):
        s.conn.execute(f"DROP TABLE {table}")
    s.conn.execute("PRAGMA user_version=3")
    s.close()
    s = EdgeStore(db)
    try:
        assert s.conn.execute("PRAGMA user_version").fetchone()[0] == 4
        assert [r["seq"] for r in s.outbox_batch(10, set())] == [1]
        assert [(r.kind, r.target, r.who) for r in s.pending_requests()] == [
            ("ack", "trench-leak", "op")]
        assert s.enqueue_command({"id": "c1", "command": "maintenance",
                                  "target": "mw1", "on": True, "who": "x"})
        assert not s.enqueue_command({"id": "c1", "command": "maintenance",
                                      "target": "mw1", "on": True, "who": "x"})
        assert [(r.kind, r.target, r.command_id) for r in s.pending_requests()][-1] == (
            "maintenance", "mw1", "c1")
    finally:
        s.close()


def test_operator_page_shows_alarms_and_its_button_acknowledges(tmp_path):
    gw, bus = make_gateway(tmp_path)

    async def scenario():
        cable(bus, leak=True)
        await gw._poll_device(bus, gw.devices["cable1"])
        cable(bus)
        await gw._poll_device(bus, gw.devices["cable1"])
        page = StatusPage(gw, "127.0.0.1", 0)
        assert page.start()
        base = f"http://127.0.0.1:{page.port}"
        try:
            html = (await asyncio.to_thread(fetch, base + "/"))[1]
            assert "trench-leak" in html and "确认 Acknowledge" in html
            assert "设备状态 Devices" in html and "leak = 0.0" in html
            state = json.loads((await asyncio.to_thread(fetch, base + "/status.json"))[1])
            [alarm] = [a for a in state["alarms"] if a["alarm"] == "trench-leak"]
            assert alarm["active"] and alarm["latched"]
            status, _ = await asyncio.to_thread(
                fetch, base + "/ack", {"alarm": "trench-leak"})
            assert status == 200  # after the 303 back to the page
            status, _ = await asyncio.to_thread(fetch, base + "/ack", {"alarm": "nope"})
            assert status == 404
            state = json.loads((await asyncio.to_thread(fetch, base + "/status.json"))[1])
            [alarm] = [a for a in state["alarms"] if a["alarm"] == "trench-leak"]
            assert not alarm["active"]
        finally:
            page.stop()

    try:
        asyncio.run(scenario())
        assert rows(gw, "SELECT message FROM events WHERE source='trench-leak' "
                        "ORDER BY seq DESC LIMIT 1") == [
            ("acknowledged by operator page (127.0.0.1)",)]
    finally:
        gw.store.close()


def fetch(url, form=None):
    data = urllib.parse.urlencode(form).encode() if form is not None else None
    try:
        with urllib.request.urlopen(url, data=data, timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def cable(bus, leak=False, broken=False):
    bus.regs[(2, "input", 0)] = int(leak) | int(broken) << 1

