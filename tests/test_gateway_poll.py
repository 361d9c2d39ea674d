"""The poll path with a scripted bus: exception responses, silence, recovery, backoff."""

from __future__ import annotations

import asyncio
import tomllib
from pathlib import Path

import pytest

from drivers.codec import encode
from edge.bus import DeviceReportedError, NoAnswer
from edge.config import parse_config
from edge.gateway import Gateway

EXAMPLE = Path(__file__).parents[1] / "groundwatch" / "examples" / "site.toml"


class ScriptedBus:
    """Answers reads from a register dict, or fails as told."""

    def __init__(self, cfg, registers):
        self.cfg, self.registers, self.fail = cfg, registers, None

    async def read(self, unit, block, timeout_s=None):
        if self.fail == "silent":
            raise NoAnswer(f"unit {unit}: no reply")
        if self.fail == "exception":
            raise DeviceReportedError(unit, block, 2)
        return {a: self.registers.get(a, 0) for a in range(block.start,
                                                           block.start + block.count)}

    async def write_coil(self, unit, address, on, timeout_s=None):
        pass

    def close(self):
        pass


@pytest.fixture
def gateway(tmp_path):
    doc = tomllib.loads(EXAMPLE.read_text())
    doc["gateway"]["data_dir"] = str(tmp_path / "gw")
    doc["gateway"]["clock_sync"] = "assume"
    cfg = parse_config(doc, "site.toml", tmp_path)
    gw = Gateway(cfg)
    level = dict(enumerate(encode(123456, "int32"), start=2))  # 1234.56 mm
    bus = ScriptedBus(cfg.buses[0], level)
    yield gw, bus
    gw.store.close()


def rows(gw, sql):
    return gw.store.conn.execute(sql).fetchall()


def poll(gw, bus, device):
    asyncio.run(gw._poll_device(bus, gw.devices[device]))


def test_exception_response_becomes_device_error_quality(gateway):
    gw, bus = gateway
    bus.fail = "exception"
    poll(gw, bus, "tank1")
    qualities = {q for (q,) in rows(gw, "SELECT quality FROM readings")}
    assert qualities == {"device_error"}
    assert rows(gw, "SELECT count(*) FROM events WHERE event='device'") == [(0,)]


def test_silence_marks_offline_once_then_recovery_once(gateway):
    gw, bus = gateway
    poll(gw, bus, "tank1")
    assert rows(gw, "SELECT value, quality FROM readings WHERE point='level_mm'") == [
        (1234.56, "good")]
    bus.fail = "silent"
    for _ in range(3):
        poll(gw, bus, "tank1")
    bus.fail = None
    poll(gw, bus, "tank1")
    poll(gw, bus, "tank1")
    events = rows(gw, "SELECT state FROM events WHERE source='tank1' ORDER BY seq")
    assert events == [("offline",), ("online",)]
    # One comm_lost marker when it went silent, never a repeated old value.
    level = rows(gw, "SELECT value, quality FROM readings WHERE point='level_mm' "
                 "ORDER BY seq")
    assert level == [(1234.56, "good"), (None, "comm_lost"), (1234.56, "good"),
                     (1234.56, "good")]


def test_silent_device_backs_off_capped(gateway):
    gw, bus = gateway
    dev = gw.devices["tank1"]  # poll_interval_s = 2
    bus.fail = "silent"
    waits = []
    for _ in range(8):
        poll(gw, bus, "tank1")
        waits.append(gw._next_due(dev, 100.0) - 100.0)
    assert waits == [4, 8, 16, 32, 60, 60, 60, 60]
    bus.fail = None
    poll(gw, bus, "tank1")
    dev.next_due = 100.0
    assert gw._next_due(dev, 100.0) == 102.0


def test_housekeeping_keeps_the_budget_and_says_so_with_an_event(tmp_path):
    doc = tomllib.loads(EXAMPLE.read_text())
    doc["gateway"]["data_dir"] = str(tmp_path / "gw")
    doc["gateway"]["clock_sync"] = "assume"
    doc["gateway"]["disk_budget_mb"] = 0.1
    gw = Gateway(parse_config(doc, "site.toml", tmp_path))
    bus = ScriptedBus(gw.cfg.buses[0], dict(enumerate(encode(123456, "int32"), start=2)))
    try:
        for _ in range(400):
            poll(gw, bus, "tank1")
        assert gw.store.used_bytes() > 0.1 * 1024 * 1024
        evicted = gw.housekeeping()
        assert evicted["evicted_unsent"] > 0
        assert gw.store.used_bytes() <= 0.1 * 1024 * 1024
        [(value, message)] = rows(gw, "SELECT value, message FROM events "
                                      "WHERE source='store' AND state='evicted'")
        assert value == evicted["evicted_unsent"]
        assert f"evicted {evicted['evicted_unsent']} unsent" in message
        assert gw.counters["evicted_unsent"] == evicted["evicted_unsent"]
    finally:
        gw.store.close()


def test_a_hung_loop_is_reported_stalled_so_the_watchdog_stops(tmp_path):
    doc = tomllib.loads(EXAMPLE.read_text())
    doc["gateway"]["data_dir"] = str(tmp_path / "gw")
    doc["gateway"]["clock_sync"] = "assume"
    now = [1000.0]
    gw = Gateway(parse_config(doc, "site.toml", tmp_path), clock=lambda: now[0])
    try:
        gw.beats.update({"bus plant-lan": 1000.0, "bus wells-485": 1000.0,
                         "relays": 1000.0})
        now[0] += 29.0
        assert gw.stalled_loops() == []
        gw.beats["bus plant-lan"] = now[0]
        gw.beats["relays"] = now[0]
        now[0] += 2.0  # wells-485 has now not turned for 31 s
        assert gw.stalled_loops() == ["bus wells-485"]
    finally:
        gw.store.close()
