"""Bus faults with the real gateway: slow slaves never yield wrong values, and a dead
slave on an RS-485 bus leaves the others on schedule and the leak alarm working."""

from __future__ import annotations

import time
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest

from edge.config import load_config
from groundwatch.sim.replay import load_aquatroll
from hil_tests.harness import (
    PrivateMosquitto,
    Proc,
    ThreadedSimulator,
    free_port,
    query,
    wait_for,
)

pytestmark = pytest.mark.hil

TIMEOUT_S = 0.2

SITE = """
[site]
id = "faults"
[gateway]
id = "gw"
data_dir = "gw"
clock_sync = "assume"  # this machine's kernel reports its clock unsynchronised
[uplink]
broker_url = "mqtt://127.0.0.1:{broker}"

[[buses]]
name = "lan"
kind = "tcp"
host = "127.0.0.1"
port = {tcp}
timeout_s = {timeout}
retries = 0
  [[buses.devices]]
  name = "tank1"
  unit_id = 1
  profile = "tank_gauge"
  poll_interval_s = 0.5
  [[buses.devices]]
  name = "tank2"
  unit_id = 2
  profile = "tank_gauge"
  poll_interval_s = 0.5
  [[buses.devices]]
  name = "relay1"
  unit_id = 3
  profile = "relay_module"
  poll_interval_s = 5

[[buses]]
name = "rs485"
kind = "rtu"
serial_port = "{tty}"
baudrate = 19200
parity = "N"
timeout_s = {timeout}
retries = 1
  [[buses.devices]]
  name = "mw1"
  unit_id = 1
  profile = "well_probe"
  poll_interval_s = 1
  [[buses.devices]]
  name = "mw2"
  unit_id = 2
  profile = "well_probe"
  poll_interval_s = 1
  [[buses.devices]]
  name = "cable1"
  unit_id = 3
  profile = "leak_cable"
  poll_interval_s = 1

[relays.horn]
device = "relay1"
point = "relay_1"

[[alarms]]
name = "leak"
point = "cable1.leak"
kind = "on"
relays = ["horn"]

[simulation.tank1]
model = "tank"
level_mm = 1800.0
[simulation.tank2]
model = "tank"
level_mm = 500.0
seed = 7
[simulation.mw1]
model = "replay_aquatroll"
[simulation.mw2]
model = "replay_well_level"
[simulation.cable1]
model = "leak_cable"
leak_at_s = 1e9
"""


@pytest.fixture
def faults_site(tmp_path: Path):
    broker = PrivateMosquitto(tmp_path / "broker")
    broker.start()
    path = tmp_path / "site.toml"
    path.write_text(SITE.format(broker=broker.port, tcp=free_port(), timeout=TIMEOUT_S,
                                tty=tmp_path / "tty485"))
    cfg = load_config(path)
    sim = ThreadedSimulator(cfg)
    edge = Proc("edge", ["edge", "--config", str(path)], tmp_path)
    try:
        yield cfg, sim, edge
    finally:
        edge.stop()
        sim.close()
        broker.stop()


def readings(cfg, device, point, quality=None):
    sql = "SELECT ts, value, quality FROM readings WHERE device=? AND point=?"
    rows = query(cfg.data_dir / "gateway.sqlite", sql, device, point)
    return [r for r in rows if quality is None or r[2] == quality]


def test_slow_slaves_never_produce_a_wrong_value(faults_site):
    cfg, sim, edge = faults_site
    db = cfg.data_dir / "gateway.sqlite"
    wait_for(lambda: db.exists() and len(readings(cfg, "mw2", "level_m", "good")) >= 2,
             20, f"first polls\n{edge.tail()}")

    # tank1 (TCP) and mw1 (RTU) answer 1.5 x the timeout late for a while: their late
    # replies arrive while the gateway is already asking tank2 and mw2.
    for dev in ("tank1", "mw1"):
        sim.call(lambda dev=dev: sim.sim.set_reply_delay(dev, 1.5 * TIMEOUT_S))
    time.sleep(6)
    for dev in ("tank1", "mw1"):
        sim.call(lambda dev=dev: sim.sim.set_reply_delay(dev, 0.0))
    wait_for(lambda: query(db, "SELECT count(*) FROM events WHERE source IN "
                           "('tank1','mw1') AND state='online'")[0][0] == 2,
             20, f"both slow devices back online\n{edge.tail()}")
    time.sleep(2)
    edge.stop()

    # The slow ones went offline (no fabricated values) and came back once each.
    for dev in ("tank1", "mw1"):
        states = [r[0] for r in query(db, "SELECT state FROM events WHERE source=? "
                                      "ORDER BY seq", dev)]
        assert states == ["offline", "online"], (dev, states)
    # Every value stored is the right device's: tank2 sits near 500 mm, tank1 near
    # 1800 mm; mw2 has no conductivity sensor and mw1 no level sensor.
    t2 = [v for _, v, _ in readings(cfg, "tank2", "level_mm", "good")]
    t1 = [v for _, v, _ in readings(cfg, "tank1", "level_mm", "good")]
    assert t2 and max(t2) < 1000 and t1 and min(t1) > 1000
    assert readings(cfg, "mw2", "conductivity_us_cm", "good") == []
    assert readings(cfg, "mw1", "level_m", "good") == []
    recorded = np.array([r.specific_conductivity_us_cm for r in load_aquatroll()],
                        np.float32)
    mw1 = [v for _, v, q in readings(cfg, "mw1", "conductivity_us_cm")
           if v is not None]
    assert mw1 and all(np.float32(v) in recorded for v in mw1)
    assert len(readings(cfg, "mw2", "level_m", "good")) >= 8


def test_dead_slave_leaves_the_bus_on_schedule_and_the_leak_alarm_working(faults_site):
    cfg, sim, edge = faults_site
    db = cfg.data_dir / "gateway.sqlite"
    wait_for(lambda: db.exists() and len(readings(cfg, "cable1", "leak")) >= 2, 20,
             f"first polls\n{edge.tail()}")

    sim.call(lambda: sim.sim.set_reply_delay("mw1", None))  # mw1 dies for good
    wait_for(lambda: query(db, "SELECT 1 FROM events WHERE source='mw1' AND "
                           "state='offline'"), 10, "mw1 offline")
    t_dead = datetime.now().astimezone().isoformat()
    time.sleep(6)

    # The other two keep their 1 s period: no gap reaches two periods.
    for dev, point in (("mw2", "level_m"), ("cable1", "leak")):
        stamps = [datetime.fromisoformat(ts) for ts, _, _ in readings(cfg, dev, point)
                  if ts >= t_dead]
        gaps = np.diff([s.timestamp() for s in stamps])
        assert len(stamps) >= 5, (dev, len(stamps))
        assert gaps.max() < 2.0, (dev, gaps)

    # No fabricated values for the dead one: a single comm_lost marker, then nothing.
    mw1 = readings(cfg, "mw1", "conductivity_us_cm")
    after = [r for r in mw1 if r[0] >= t_dead]
    assert all(r[1] is None and r[2] == "comm_lost" for r in after) and len(after) <= 1

    # A leak on the same bus still reaches its relay within two poll periods.
    sim.call(lambda: sim.sim.trigger_leak("cable1", 7.0))
    t0 = time.monotonic()
    wait_for(lambda: sim.call(lambda: sim.sim.coil("relay1", "relay_1")), 2.0,
             f"horn relay\n{edge.tail()}")
    assert time.monotonic() - t0 <= 2.0
