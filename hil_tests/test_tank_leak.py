"""A leaking tank and a wet cable on the simulated site, with the broker down: the
real gateway's static test fails the 0.5 gal/h leak and the cable alarm is told in
its zone, both switch their relay coils on the simulator, and once the broker is
back every leak event reaches the cloud API exactly once.

The simulator plays the tank 900 times faster than real time (`time_scale = 900` in
the tank section, so rates and waits are in the tank's hours): four hours of
dispensing take 16 s, the quiet night after it 80 s, a 3 h test 12 s.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge.config import load_config
from groundwatch.demo import write_site
from hil_tests.conftest import Site
from hil_tests.harness import PrivateMosquitto, free_port, http_json, query, wait_for

pytestmark = pytest.mark.hil

SPEED = 900.0

TANK_SIM = '''[simulation.tank1]
model = "tank"
leak_gph = 0.5
expansion = true
dispense_from_h = 0.0
dispense_to_h = 4.0
'''

LEAK_SECTIONS = '''
[relays.tank_alarm]
device = "relay1"
point = "relay_3"

[[tanks]]
name = "T1"
device = "tank1"
shape = "horizontal_cylinder"
diameter_mm = 2400.0
length_mm = 6000.0
product = "gasoline"
expansion_per_c = 0.00095
target_gph = 0.2
fail_relays = ["tank_alarm"]
time_scale = {speed}
delivery_settle_h = 1.0
event_l = 10.0
sample_s = 1.0
check_interval_s = 60.0

[[cables]]
name = "trench-cable"
device = "cable1"
relays = ["horn"]
message = "Leak on the pipe-trench cable"

  [[cables.zones]]
  name = "trench T1"
  start_m = 0.0
  end_m = 60.0
  reference = "pump pit"
  reference_m = 0.0

  [[cables.zones]]
  name = "trench T2"
  start_m = 60.0
  end_m = 150.0
'''


@pytest.fixture
def leak_site(tmp_path: Path) -> Iterator[Site]:
    broker = PrivateMosquitto(tmp_path / "broker")
    broker.start()
    path = write_site(tmp_path, broker.port, leak_at_s=1e9)
    text = path.read_text()
    # The demo's own cable alarm sounds the horn too: here only [[cables]] may.
    own = ('relays = ["horn", "beacon"]\n'
           'message = "Leak on the pipe-trench sensing cable"')
    assert own in text, "the demo site's trench-leak alarm changed: update this test"
    text = text.replace(own, 'relays = []\nmessage = "Leak on the pipe-trench sensing '
                        'cable"')
    assert '[simulation.tank1]\nmodel = "tank"\n' in text
    text = text.replace('[simulation.tank1]\nmodel = "tank"\n', TANK_SIM)
    tank_poll = ('name = "tank1"\n  unit_id = 1\n  profile = "tank_gauge"\n'
                 '  poll_interval_s = 2')
    assert tank_poll in text
    text = text.replace(tank_poll, tank_poll[:-1] + "0.5")
    path.write_text(text + LEAK_SECTIONS.format(speed=SPEED))
    s = Site(tmp_path, path, load_config(path), broker, free_port(),
             tmp_path / "cloud.sqlite", {})
    try:
        yield s
    finally:
        for proc in s.procs.values():
            proc.stop()
        if s.sim is not None:
            s.sim.close()
        broker.stop()


def coil(site: Site, point: str) -> bool:
    assert site.sim is not None
    return bool(site.sim.call(lambda: site.sim.sim.coil("relay1", point)))


def cloud_devices(site: Site) -> set[str]:
    try:
        points = http_json(f"{site.api}/api/sites/demo-site/points")
        return {p["device"] for p in points}
    except OSError:
        return set()


def events(db: Path, where: str) -> list[tuple]:
    return query(db, "SELECT seq, source, event, state, value, message FROM events "
                 f"WHERE {where} ORDER BY seq")


def test_tank_leak_and_cable_leak_alarm_offline_and_reach_the_cloud_once(leak_site):
    site = leak_site
    site.start_sim(speed=SPEED)
    site.start_cloud()
    site.start_edge()
    wait_for(lambda: "tank1" in cloud_devices(site), 40,
             f"tank readings in the cloud\n{site.logs()}")

    site.broker.stop()
    assert not coil(site, "relay_3") and not coil(site, "relay_1")
    # Dispensing ends 16 s after the simulator started; 30 tank-minutes of settling
    # and a 3 h test later (14 s) the verdict is in.
    fails = wait_for(lambda: events(site.gateway_db, "event = 'leak_test' AND state = "
                                    "'fail'"), 90,
                     f"the tank's static test to fail\n{site.logs()}")
    assert fails[0][1] == "T1" and fails[0][4] == pytest.approx(0.5, abs=0.15)
    wait_for(lambda: coil(site, "relay_3"), 5, "the tank alarm relay coil")

    site.sim.call(lambda: site.sim.sim.trigger_leak("cable1", 42.5))
    wait_for(lambda: coil(site, "relay_1"), 5, "the horn relay coil for the cable leak")
    time.sleep(2)
    site.sim.call(lambda: site.sim.sim.trigger_leak("cable1", 120.0))
    cable = wait_for(lambda: (rows := events(
        site.gateway_db, "source = 'trench-cable' AND state = 'raised'")) and
        len(rows) >= 2 and rows, 10, f"a second cable alarm\n{site.logs()}")
    assert [r[4] for r in cable] == [42.5, 120.0]
    assert "trench T1, 42 m from the pump pit" in cable[0][5]
    assert "new or spreading leak at 120.0 m, trench T2, 60 m into the zone" in \
        cable[1][5]
    tank_alarm = events(site.gateway_db, "source = 'T1-leak-test'")
    assert [r[3] for r in tank_alarm] == ["raised"]

    # The broker returns: the outbox drains past everything from the outage.
    site.broker.start()
    seq_back = query(site.gateway_db, "SELECT max(seq) FROM readings")[0][0]
    wait_for(lambda: (query(site.gateway_db, "SELECT min(seq) FROM outbox")[0][0]
                      or 1e18) > seq_back, 60,
             f"the outbox to drain after the outage\n{site.logs()}")
    leak_events = events(site.gateway_db, "event = 'leak_test' OR source IN "
                         "('T1-leak-test', 'trench-cable')")
    alarms = http_json(f"{site.api}/api/sites/demo-site/alarms")
    cloud_alarms = [e for e in alarms["events"]
                    if e["source"] in ("T1-leak-test", "trench-cable")]
    assert sorted(e["seq"] for e in cloud_alarms) == [
        r[0] for r in leak_events if r[2] == "alarm"]
    assert {"T1-leak-test", "trench-cable"} <= set(alarms["active"])
    tests = http_json(f"{site.api}/api/sites/demo-site/leak-tests")["leak_tests"]
    assert sorted(t["seq"] for t in tests) == [r[0] for r in leak_events
                                              if r[2] == "leak_test"]
    fail = next(t for t in tests if t["verdict"] == "fail")
    assert fail["tank"] == "T1" and fail["lower_gph"] < fail["rate_gph"] < \
        fail["upper_gph"]
    assert fail["threshold_gph"] == 0.1
    assert fail["window_h"] == pytest.approx(3.0, abs=0.1)
