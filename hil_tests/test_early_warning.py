"""Edge early warning with the broker down: a conductivity ramp on the simulated well
probe trips the rate alarm and its relay, offline, through the real gateway."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from edge.config import load_config
from hil_tests.harness import Proc, ThreadedSimulator, free_port, query, wait_for

pytestmark = pytest.mark.hil

SITE = """\
[site]
id = "ew-site"

[gateway]
id = "gw-ew"
data_dir = "gateway"
clock_sync = "assume"
status_http = ""

[uplink]
# Nothing listens here: the broker is down for the whole test.
broker_url = "mqtt://127.0.0.1:{dead_port}"

[[buses]]
name = "plant-lan"
kind = "tcp"
host = "127.0.0.1"
port = {modbus_port}
timeout_s = 1.0

  [[buses.devices]]
  name = "mw1"
  unit_id = 1
  profile = "well_probe"
  poll_interval_s = 0.5
  points = ["temperature_c", "conductivity_us_cm"]

  [[buses.devices]]
  name = "relay1"
  unit_id = 3
  profile = "relay_module"
  poll_interval_s = 1

[relays.horn]
device = "relay1"
point = "relay_1"

[[alarms]]
name = "mw1-ec-rising"
point = "mw1.conductivity_us_cm"
kind = "rate"
setpoint = 3600.0      # uS/cm per hour: 1 uS/cm a second
window_s = 20.0
latch = true
relays = ["horn"]
message = "Conductivity rising fast at MW-1"

[simulation.mw1]
model = "replay_aquatroll"

[simulation.relay1]
model = "relay"
"""


def test_conductivity_ramp_trips_the_rate_alarm_and_relay_offline(tmp_path: Path):
    path = tmp_path / "site.toml"
    path.write_text(SITE.format(dead_port=free_port(), modbus_port=free_port()))
    cfg = load_config(path)
    sim = ThreadedSimulator(cfg)
    edge = None
    try:
        sim.call(lambda: sim.sim.set_value("mw1", "conductivity_us_cm", 800.0))
        edge = Proc("edge", ["edge", "--config", str(path)], tmp_path)
        db = cfg.data_dir / "gateway.sqlite"

        def coil() -> bool:
            return bool(sim.call(lambda: sim.sim.coil("relay1", "relay_1")))

        def readings() -> int:
            return query(db, "SELECT count(*) FROM readings WHERE "
                         "point='conductivity_us_cm' AND quality='good'")[0][0]

        wait_for(lambda: db.exists() and readings() >= 20, 30,
                 f"steady readings\n{edge.tail()}")
        assert not coil()  # a steady value: no rate, no alarm
        # Ramp at 5 uS/cm a second (18,000 per hour), five times the setpoint.
        value, ramp_start = 800.0, time.monotonic()
        deadline = ramp_start + 30
        while not coil() and time.monotonic() < deadline:
            value += 1.25
            sim.call(lambda v=value: sim.sim.set_value("mw1", "conductivity_us_cm", v))
            time.sleep(0.25)
        tripped_s = time.monotonic() - ramp_start
        assert coil(), f"horn never on after {tripped_s:.1f} s of ramp\n{edge.tail()}"
        events = query(db, "SELECT state, value, severity FROM events "
                       "WHERE source='mw1-ec-rising'")
        assert [e[0] for e in events] == ["raised"]
        # The rate when it tripped is above the setpoint and at most the ramp's.
        assert 3600.0 < events[0][1] <= 18_000.0 * 1.05
        # Offline: nothing was acknowledged by a receiver; the event waits to be sent.
        pending = query(db, "SELECT count(*) FROM pending_events")[0][0]
        assert pending >= 1
        # Latched: a steady value again keeps the horn on until acknowledged.
        sim.call(lambda: sim.sim.set_value("mw1", "conductivity_us_cm", value))
        time.sleep(3)
        assert coil()
        print(f"rate alarm and horn {tripped_s:.1f} s after the ramp began")
    finally:
        if edge is not None:
            edge.stop()
        sim.close()
