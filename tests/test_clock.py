"""Records stamped before the clock is synchronised are held, marked and corrected."""

from __future__ import annotations

import asyncio
import tomllib
from datetime import datetime, timedelta
from pathlib import Path

from drivers.codec import encode
from edge.clock import WallClock, kernel_synchronised
from edge.config import parse_config
from edge.gateway import Gateway
from edge.store import ClockMark, EdgeStore
from test_gateway_poll import EXAMPLE, ScriptedBus

YEAR_S = 365 * 86400.0


def make_gateway(tmp_path: Path, flag: Path) -> tuple[Gateway, ScriptedBus]:
    doc = tomllib.loads(EXAMPLE.read_text())
    doc["gateway"]["data_dir"] = str(tmp_path / "gw")
    doc["gateway"]["clock_sync"] = str(flag)
    gw = Gateway(parse_config(doc, "site.toml", tmp_path))
    bus = ScriptedBus(gw.cfg.buses[0], dict(enumerate(encode(123456, "int32"), start=2)))
    return gw, bus


def test_held_until_synchronised_then_corrected_to_the_true_time(tmp_path):
    flag = tmp_path / "synchronized"  # absent: not synchronised
    gw, bus = make_gateway(tmp_path, flag)
    try:
        asyncio.run(gw._poll_device(bus, gw.devices["tank1"]))
        stamped = gw.store.conn.execute(
            "SELECT DISTINCT ts, quality FROM readings").fetchall()
        assert [q for _, q in stamped] == ["clock_unsynced"]
        assert gw.store.outbox_batch(100, set()) == []  # nothing leaves with a bad date
        assert gw.check_clock() == {}  # still not synchronised: still held

        # NTP gets through, and it turns out the Pi's clock was a year behind.
        flag.touch()
        gw.wall._checked_at = None
        gw.wall.wall = lambda: __import__("time").time() + YEAR_S
        counts = gw.check_clock()
        n_points = len(gw.devices["tank1"].map.points)
        assert counts == {"corrected": n_points, "released_unsynced": 0}
        batch = gw.store.outbox_batch(100, set())
        readings = [r for r in batch if r["kind"] == "reading"]
        assert len(readings) == n_points
        assert {r["quality"] for r in readings} == {"good"}
        shift = (datetime.fromisoformat(readings[0]["ts"])
                 - datetime.fromisoformat(stamped[0][0]))
        assert abs(shift - timedelta(seconds=YEAR_S)) < timedelta(seconds=0.5)
        [event] = [r for r in batch if r.get("event") == "clock"]
        assert event["value"] == n_points
    finally:
        gw.store.close()


def test_held_too_long_goes_out_marked(tmp_path):
    gw, bus = make_gateway(tmp_path, tmp_path / "never")
    try:
        asyncio.run(gw._poll_device(bus, gw.devices["tank1"]))
        real = gw.wall.monotonic
        gw.wall.monotonic = lambda: real() + gw.cfg.gateway.clock_hold_max_s + 1
        assert gw.check_clock()["released_unsynced"] > 0
        readings = [r for r in gw.store.outbox_batch(100, set()) if r["kind"] == "reading"]
        assert readings and {r["quality"] for r in readings} == {"clock_unsynced"}
    finally:
        gw.store.close()


def test_records_of_an_earlier_boot_are_released_marked(tmp_path):
    s = EdgeStore(tmp_path / "g.sqlite")
    old = ClockMark(mono_ms=5000, boot_id="boot-before-the-power-cut")
    s.add_readings("1970-01-01T00:00:05.000+00:00", "mw1",
                   [("level_m", 3.2, "good", "m")], unsynced=old)
    s.add_event("trench-leak", "alarm", "raised", unsynced=old, message="Leak")
    assert s.outbox_batch(10, set()) == []
    assert s.release_unsynced(keep_boot_id="this-boot") == {"released_unsynced": 2}
    event, reading = s.outbox_batch(10, set())
    assert reading["quality"] == "clock_unsynced"
    assert reading["ts"] == "1970-01-01T00:00:05.000+00:00"
    assert event["message"] == "Leak [time from an unsynchronised clock]"


def test_assume_and_kernel_modes_answer():
    assert WallClock("assume").mark() is None
    # The kernel's flag is whatever this machine's is: the call must simply work.
    assert isinstance(kernel_synchronised(), bool)
    mark = WallClock("/nonexistent/flag").mark()
    assert mark is not None and len(mark.boot_id) > 8
