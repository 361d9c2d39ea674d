"""[[tanks]] and [[cables]] in the gateway: bounded windows, quiet periods found in
polled data, static-test verdicts stored as events, sudden loss in closed hours,
cable zones and re-alarms, relays; on an injected clock, with no bus."""

from __future__ import annotations

import tomllib
from pathlib import Path

import numpy as np
import pytest

from drivers.device import Sample
from drivers.errors import ConfigError
from edge.config import parse_config
from edge.gateway import Gateway
from edge.tank_monitor import RingBuffer
from groundwatch.contract import Quality
from leak_detection.evaluation import EvalModel, simulate_stream
from leak_detection.static_test import parse_leak_test_message
from leak_detection.tank import thermistor_weights

EXAMPLE = Path(__file__).parents[1] / "groundwatch" / "examples" / "site.toml"
MODEL = EvalModel()

TANK = {
    "name": "T1", "device": "tank1", "level_point": "level_mm",
    "temperature_points": ["temperature_c"], "shape": "horizontal_cylinder",
    "diameter_mm": MODEL.diameter_mm, "length_mm": MODEL.length_mm,
    "product": "gasoline", "target_gph": 0.2, "fail_relays": ["horn"],
    "sudden_loss_l": 20.0, "sudden_loss_relays": ["beacon"],
}
CABLE = {
    "name": "trench-cable", "device": "cable1", "relays": ["horn"],
    "zones": [{"name": "trench T1", "start_m": 0, "end_m": 60, "reference": "pump pit",
               "reference_m": 0},
              {"name": "trench T2", "start_m": 60, "end_m": 150}],
}


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def site(tmp_path: Path, tank: dict | None = None, cable: dict | None = None) -> dict:
    doc = tomllib.loads(EXAMPLE.read_text())
    doc["gateway"]["data_dir"] = str(tmp_path / "gw")
    doc["gateway"]["clock_sync"] = "assume"
    doc["tanks"] = [dict(TANK, **(tank or {}))]
    doc["cables"] = [dict(CABLE, **(cable or {}))]
    return doc


@pytest.fixture
def make_gateway(tmp_path):
    made = []

    def make(tank: dict | None = None, cable: dict | None = None,
             hour: float = 12.0) -> tuple[Gateway, Clock]:
        clock = Clock()
        gw = Gateway(parse_config(site(tmp_path, tank, cable), "site.toml", tmp_path),
                     clock=clock)
        for watch in gw.leaks.tanks:
            watch.local_hour = lambda: hour
        made.append(gw)
        return gw, clock
    yield make
    for gw in made:
        gw.store.close()


def feed_tank(gw: Gateway, clock: Clock, t_s, level_mm, temps_c) -> None:
    for t, level, temp in zip(t_s, level_mm, temps_c):
        clock.now = float(t)
        gw._leak_checks("tank1", [Sample("level_mm", float(level), Quality.GOOD, "mm"),
                                  Sample("temperature_c", float(temp), Quality.GOOD,
                                         "°C")], "2026-05-01T00:00:00.000Z")


def events(gw: Gateway, kind: str) -> list[tuple]:
    return gw.store.conn.execute(
        "SELECT source, state, value, message FROM events WHERE event = ? ORDER BY seq",
        (kind,)).fetchall()


def test_bad_tank_and_cable_sections_name_the_key(tmp_path):
    with pytest.raises(ConfigError) as exc:
        parse_config(site(tmp_path, {"level_point": "height"}), "site.toml", tmp_path)
    assert exc.value.path == "tanks[0].level_point"
    with pytest.raises(ConfigError) as exc:
        parse_config(site(tmp_path, {"fail_relays": ["siren"]}), "site.toml", tmp_path)
    assert exc.value.path == "tanks[0].fail_relays[0]"
    with pytest.raises(ConfigError) as exc:
        parse_config(site(tmp_path, {"shape": "table"}), "site.toml", tmp_path)
    assert exc.value.path.startswith("tanks[0]") and "levels_mm" in str(exc.value)
    with pytest.raises(ConfigError) as exc:
        parse_config(site(tmp_path, cable={"distance_point": "where"}), "site.toml",
                     tmp_path)
    assert exc.value.path == "cables[0].distance_point"


def test_ring_buffer_keeps_the_newest_samples_in_order_and_never_grows():
    buf = RingBuffer(100, 2)
    arrays = (buf.t, buf.level, buf.temps)
    for i in range(250):
        buf.append(float(i), 1000.0 + i, (15.0, 16.0 + i))
    t, level, temps = buf.arrays()
    assert list(t) == [float(i) for i in range(150, 250)]
    assert level[0] == 1150.0 and temps[-1, 1] == 16.0 + 249
    assert (buf.t, buf.level, buf.temps) == arrays and buf.t.shape == (100,)


def stream(leak_gph: float, seed: int):
    """A delivery and 16 quiet hours from the harness simulator; the gauge reports the
    volume-weighted average of its thermistors as its one temperature register."""
    s = simulate_stream(MODEL, np.random.default_rng(seed), 0.5, 0.2, 5.0, leak_gph)
    tank = MODEL.tank()
    w = thermistor_weights(tank.chart, tank.thermistor_mm, float(np.median(s.level_mm)))
    return s.t_s - s.t_s[0], s.level_mm, s.temperature_c @ w


def test_leaking_tank_fails_once_per_quiet_period_and_drives_its_relay(make_gateway):
    gw, clock = make_gateway()
    t, level, temps = stream(0.5, 1)
    feed_tank(gw, clock, t, level, temps)
    tests = events(gw, "leak_test")
    assert len(tests) == 1, tests
    source, state, value, message = tests[0]
    assert (source, state) == ("T1", "fail")
    assert value == pytest.approx(0.5, abs=0.05)
    parsed = parse_leak_test_message(message)
    assert parsed["lower_gph"] < value < parsed["upper_gph"]
    assert parsed["rate_gph"] == pytest.approx(value, abs=1e-4)
    assert parsed["threshold_gph"] == 0.1
    assert parsed["window_h"] == pytest.approx(3.0, abs=0.01)
    # The test waited the 8 h after the delivery the gateway saw in its own window.
    assert parsed["start"] < parsed["end"]
    alarms = events(gw, "alarm")
    assert [(a[0], a[1]) for a in alarms] == [("T1-leak-test", "raised")]
    assert gw._desired_relays()["horn"] is True
    # The buffer holds window_h of 10 s samples, not every poll.
    watch = gw.leaks.tanks[0]
    assert watch.buffer.capacity == int(36 * 3600 / 10) + 2
    assert watch.buffer.size == pytest.approx(len(t), abs=2)


def test_tight_tank_passes_without_alarm_and_dispensing_starts_a_new_period(
        make_gateway):
    gw, clock = make_gateway()
    t, level, temps = stream(0.0, 2)
    # After the test, 100 L are dispensed: the next quiet period is too short for a
    # test (30 min settle + 1 h): no second verdict.
    extra_t = t[-1] + 10.0 * np.arange(1, 360)
    drop = np.clip((extra_t - extra_t[0]) / 600, 0, 1) * 100 / 19.9  # mm at 50% fill
    feed_tank(gw, clock, np.r_[t, extra_t], np.r_[level, level[-1] - drop],
              np.r_[temps, np.full(len(extra_t), temps[-1])])
    tests = events(gw, "leak_test")
    assert [(s, st) for s, st, _, _ in tests] == [("T1", "pass")]
    assert abs(tests[0][2]) < 0.1
    assert events(gw, "alarm") == []
    assert gw._desired_relays()["horn"] is False


def quiet_then_loss(loss_l_per_h: float, start_s: float = 1800.0):
    t = np.arange(0.0, 3600.0, 5.0)
    area_mm2 = 8106.1 * 2438.4  # at half fill, the surface is the whole diameter wide
    lost_l = np.clip(t - start_s, 0, None) / 3600 * loss_l_per_h
    level = 1219.2 - lost_l * 1e6 / area_mm2
    return t, level, np.full(len(t), 15.0)


def test_sudden_loss_in_closed_hours_alarms_within_minutes(make_gateway):
    gw, clock = make_gateway({"closed_hours": [[22, 6]]}, hour=23.0)
    t, level, temps = quiet_then_loss(300.0)
    rule = gw.rule_by_name["T1-sudden-loss"]
    raised_at = None
    for i in range(len(t)):
        feed_tank(gw, clock, t[i:i + 1], level[i:i + 1], temps[i:i + 1])
        if raised_at is None and rule.active:
            raised_at = t[i]
    # 20 L at 300 L/h take 4 minutes (the product here is at 15 °C: no compensation).
    assert raised_at is not None and 1800 + 235 <= raised_at <= 1800 + 250
    assert [(a[0], a[1]) for a in events(gw, "alarm")] == [("T1-sudden-loss", "raised")]
    assert gw._desired_relays()["beacon"] is True


def test_sudden_loss_is_disarmed_in_opening_hours(make_gateway):
    gw, clock = make_gateway({"closed_hours": [[22, 6]]}, hour=12.0)
    t, level, temps = quiet_then_loss(300.0)
    feed_tank(gw, clock, t, level, temps)
    assert events(gw, "alarm") == []


def feed_cable(gw: Gateway, clock: Clock, leak: bool, distance_m: float) -> None:
    clock.now += 1.0
    gw._leak_checks("cable1", [
        Sample("leak", float(leak), Quality.GOOD, ""),
        Sample("leak_distance_m", distance_m, Quality.GOOD, "m"),
        Sample("cable_length_m", 150.0, Quality.GOOD, "m")], "2026-05-01T00:00:00.000Z")


def test_cable_leak_is_told_in_its_zone_and_a_moved_leak_alarms_again(make_gateway):
    gw, clock = make_gateway()
    feed_cable(gw, clock, False, 0.0)
    assert events(gw, "alarm") == []
    feed_cable(gw, clock, True, 42.5)
    feed_cable(gw, clock, True, 43.0)  # within spread_m: the same leak
    feed_cable(gw, clock, True, 115.0)  # a second leak, or one spreading
    alarms = events(gw, "alarm")
    assert [(a[0], a[1]) for a in alarms] == [("trench-cable", "raised")] * 2
    assert alarms[0][2] == 42.5 and alarms[1][2] == 115.0
    assert "trench T1, 42 m from the pump pit" in alarms[0][3]
    assert "(+/- 0.8 m)" in alarms[0][3]
    assert "new or spreading leak" in alarms[1][3] and "trench T2, 55 m into" in \
        alarms[1][3]
    assert gw._desired_relays()["horn"] is True
    # Dry again: latched, the horn stays on until someone acknowledges.
    feed_cable(gw, clock, False, 0.0)
    assert events(gw, "alarm")[-1][1] == "returned"
    assert gw._desired_relays()["horn"] is True

