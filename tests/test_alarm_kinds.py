"""Edge early warning: rate-of-change and Shewhart-CUSUM alarms on a steppable clock,
setpoints as a fraction of a GB/T 14848 class limit, learned baselines kept."""

from __future__ import annotations

import tomllib
from pathlib import Path

import numpy as np
import pytest

from drivers.device import Sample
from drivers.errors import ConfigError
from edge.alarms import RATE_MAX_SAMPLES, AlarmRule
from edge.config import AlarmSection, parse_config
from edge.gateway import Gateway
from groundwatch.contract import Quality

EXAMPLE = Path(__file__).parents[1] / "groundwatch" / "examples" / "site.toml"

# Unified Guidance example 20-1: nickel (ppb), 8 baseline and 8 compliance values;
# baseline mean 25.1375, sd 11.51818; the 8th compliance value (Z = 4.919) is the
# first to break SCL = 4.5, and the CUSUM (h = 5, k = 1) never exceeds 3.919.
NICKEL_BASELINE = [32.8, 15.2, 13.5, 39.6, 37.1, 10.4, 31.9, 20.6]
NICKEL_COMPLIANCE = [19.0, 34.5, 17.8, 23.6, 34.8, 28.8, 23.7, 81.8]


class Clock:
    """Monotonic seconds that a test steps."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def rule(clock: Clock | None = None, **kw) -> AlarmRule:
    return AlarmRule(AlarmSection(name="a", point="d.p", **kw), clock=clock or Clock())


def feed(r: AlarmRule, clock: Clock, values, step_s: float) -> list[str | None]:
    """Feed values step_s apart on the rule's clock (evaluate gets no now_s)."""
    out = []
    for v in values:
        t = r.evaluate(v, True, "t")
        out.append(t.state if t else None)
        clock.now += step_s
    return out


# -- rate of change ------------------------------------------------------------------


def test_rate_alarm_raises_on_a_ramp_once_half_the_window_is_seen():
    clock = Clock()
    # 100 uS/cm per hour, one value a minute; limit 50 per hour over 10 minutes.
    r = rule(clock, kind="rate", setpoint=50.0, window_s=600.0)
    ramp = [800.0 + 100.0 * i / 60 for i in range(12)]
    got = feed(r, clock, ramp, 60.0)
    # Values at 0, 60, ... s: the window spans 300 s (half of 600) at the 6th value.
    assert got == [None] * 5 + ["raised"] + [None] * 6
    assert r.rate_per_h == pytest.approx(100.0)
    assert r.active


def test_rate_below_the_setpoint_and_the_falling_direction():
    clock = Clock()
    slow = rule(clock, kind="rate", setpoint=50.0, window_s=600.0)
    assert feed(slow, clock, [800.0 + 40.0 * i / 60 for i in range(20)], 60.0) == [
        None] * 20
    assert slow.rate_per_h == pytest.approx(40.0)
    clock = Clock()
    falling = rule(clock, kind="rate", setpoint=0.5, window_s=3600.0,
                   direction="falling")
    # A well's level dropping 1 m per hour: raised; rising at the same rate: not.
    got = feed(falling, clock, [10.0 - i / 60 for i in range(40)], 60.0)
    assert "raised" in got and falling.rate_per_h == pytest.approx(-1.0)
    clock = Clock()
    up = rule(clock, kind="rate", setpoint=0.5, window_s=3600.0, direction="falling")
    assert "raised" not in feed(up, clock, [10.0 + i / 60 for i in range(40)], 60.0)


def test_rate_alarm_clears_with_hysteresis_once_the_ramp_stops():
    clock = Clock()
    r = rule(clock, kind="rate", setpoint=50.0, hysteresis=10.0, window_s=600.0)
    ramp = [800.0 + 100.0 * i / 60 for i in range(11)]
    flat = [ramp[-1]] * 15
    values = ramp + flat
    got = feed(r, clock, values, 60.0)
    # The same least-squares slope, computed independently, over the window kept at
    # each sample (the values of the last 600 s, ends included).
    times = [60.0 * i for i in range(len(values))]
    expected: list[str | None] = []
    active = False
    for i in range(len(values)):
        keep = [j for j in range(i + 1) if times[j] >= times[i] - 600.0]
        if times[i] - times[keep[0]] < 300.0:
            expected.append(None)
            continue
        slope = np.polyfit([times[j] for j in keep], [values[j] for j in keep], 1)[0]
        rate = slope * 3600.0
        now = rate > (40.0 if active else 50.0)
        expected.append("raised" if now and not active else
                        "cleared" if active and not now else None)
        active = now
    assert got == expected
    assert got.count("raised") == 1 and got.count("cleared") == 1
    assert not r.active


def test_rate_window_is_bounded_and_bad_values_hold():
    clock = Clock()
    r = rule(clock, kind="rate", setpoint=50.0, window_s=3600.0)
    # One value a second for two hours, rising 30 per hour: below the setpoint.
    got = feed(r, clock, [500.0 + 30.0 * i / 3600 for i in range(7200)], 1.0)
    assert "raised" not in got
    assert len(r.window) <= RATE_MAX_SAMPLES
    # Kept values are at least 3600 / 239 s apart: with 1 s samples, every 16 s.
    assert r.window[-1][0] - r.window[0][0] >= 3600.0 - 16.0
    assert r.rate_per_h == pytest.approx(30.0)
    # Bad data neither moves the alarm nor enters the window.
    before = list(r.window)
    assert r.evaluate(1e6, False, "t") is None
    assert r.evaluate(float("nan"), True, "t") is None
    assert list(r.window) == before


def test_rate_alarm_config_is_checked():
    with pytest.raises(ValueError, match="needs setpoint"):
        AlarmSection(name="a", point="d.p", kind="rate", window_s=60.0)
    with pytest.raises(ValueError, match="window_s"):
        AlarmSection(name="a", point="d.p", kind="rate", setpoint=5.0)
    with pytest.raises(ValueError, match="above 0"):
        AlarmSection(name="a", point="d.p", kind="rate", setpoint=-5.0, window_s=60.0)
    with pytest.raises(ValueError, match="window_s"):
        AlarmSection(name="a", point="d.p", kind="high", setpoint=5.0, window_s=60.0)


# -- Shewhart-CUSUM ------------------------------------------------------------------


def test_cusum_with_a_fixed_baseline_trips_where_the_guidance_says():
    clock = Clock()
    r = rule(clock, kind="cusum", baseline_mean=25.1375, baseline_sd=11.51818)
    assert feed(r, clock, NICKEL_COMPLIANCE, 1.0) == [None] * 7 + ["raised"]
    assert r.chart is not None and r.chart.cusum == pytest.approx(3.919, abs=1e-3)
    assert r.chart.points == []  # the gateway keeps only the sum, not the history


def test_cusum_learns_its_baseline_from_the_first_values():
    clock = Clock()
    r = rule(clock, kind="cusum")  # h = 5, k = 1, SCL = 4.5, baseline_n = 8
    assert feed(r, clock, NICKEL_BASELINE, 1.0) == [None] * 8
    assert r.learned is not None
    assert r.learned.mean == pytest.approx(25.1375)
    assert r.learned.sd == pytest.approx(11.51818, abs=1e-5)
    assert r.learned.n == 8
    assert feed(r, clock, NICKEL_COMPLIANCE, 1.0) == [None] * 7 + ["raised"]
    # With h = 3.5 the CUSUM (3.919 at the last value) trips too; with SCL = 5 and
    # h = 5 nothing does (Z = 4.919 < 5).
    clock = Clock()
    tight = rule(clock, kind="cusum", h=3.5, scl=5.0)
    assert feed(tight, clock, NICKEL_BASELINE + NICKEL_COMPLIANCE, 1.0)[-1] == "raised"
    clock = Clock()
    loose = rule(clock, kind="cusum", scl=5.0)
    assert "raised" not in feed(loose, clock, NICKEL_BASELINE + NICKEL_COMPLIANCE, 1.0)


def test_cusum_charts_interval_means_and_starts_learning_again_over_a_flat_start():
    clock = Clock()
    r = rule(clock, kind="cusum")
    # A constant value has no spread: the 8 values are dropped and learning restarts.
    assert feed(r, clock, [500.0] * 8, 60.0) == [None] * 8
    assert r.chart is None and r.learning == []
    # Ten values a minute, 6 s apart, m - 1 and m + 1 in turn: each minute's mean is m.
    # A minute closes with the first value 60 s after it opened.
    clock = Clock()
    r = rule(clock, kind="cusum", interval_s=60.0)
    means = NICKEL_BASELINE + NICKEL_COMPLIANCE
    values = [v for m in means for v in (m - 1, m + 1) * 5]
    got = feed(r, clock, values + [0.0], 6.0)
    assert r.learned is not None and r.learned.n == 8
    assert r.learned.mean == pytest.approx(25.1375)
    assert r.learned.sd == pytest.approx(11.51818, abs=1e-5)
    assert got.count("raised") == 1 and got[-1] == "raised"  # closing the 81.8 minute


def test_cusum_config_is_checked():
    with pytest.raises(ValueError, match="go together"):
        AlarmSection(name="a", point="d.p", kind="cusum", baseline_mean=1.0)
    with pytest.raises(ValueError, match="baseline_n"):
        AlarmSection(name="a", point="d.p", kind="cusum", baseline_n=4)
    with pytest.raises(ValueError, match="cusum"):
        AlarmSection(name="a", point="d.p", kind="high", setpoint=1.0,
                     baseline_mean=1.0, baseline_sd=1.0)


# -- setpoints from a standard -------------------------------------------------------

PROFILE = """\
name = "nutrient_probe"
[points.nh4_mg_l]
address = 0
type = "float32"
unit = "mg/L"
[points.benzene_ug_l]
address = 2
type = "float32"
unit = "µg/L"
[points.ph]
address = 4
type = "float32"
unit = "pH"
[points.conductivity_us_cm]
address = 6
type = "float32"
unit = "µS/cm"
"""


def site(tmp_path: Path, *alarms: dict) -> dict:
    (tmp_path / "nutrient.toml").write_text(PROFILE)
    return {
        "site": {"id": "s"}, "gateway": {"id": "g", "clock_sync": "assume"},
        "buses": [{"name": "b", "kind": "tcp", "host": "127.0.0.1", "port": 5020,
                   "devices": [{"name": "p1", "unit_id": 1,
                                "profile": "nutrient.toml"}]}],
        "alarms": list(alarms),
    }


def test_setpoint_as_a_fraction_of_a_class_limit(tmp_path):
    # GB/T 14848-2017 class III: ammonia-N 0.50 mg/L, benzene 10 ug/L; class IV
    # benzene 120 ug/L.
    cfg = parse_config(site(
        tmp_path,
        {"name": "nh4", "point": "p1.nh4_mg_l", "kind": "high",
         "setpoint_fraction": 0.5, "standard": "GB/T 14848 III",
         "parameter": "ammonia"},
        {"name": "bz", "point": "p1.benzene_ug_l", "kind": "high",
         "setpoint_fraction": 0.8, "standard": "GB/T 14848-2017 IV",
         "parameter": "BENZENE"},
        {"name": "bz3", "point": "p1.benzene_ug_l", "kind": "high",
         "setpoint_fraction": 1.0, "standard": "GB/T 14848 III", "parameter": "苯"},
    ), "site.toml", tmp_path)
    assert [a.setpoint for a in cfg.alarms] == pytest.approx([0.25, 96.0, 10.0])
    r = AlarmRule(cfg.alarms[0])
    assert r.evaluate(0.24, True, "t") is None
    assert r.evaluate(0.26, True, "t").state == "raised"


def test_setpoint_fraction_errors_name_the_key(tmp_path):
    base = {"name": "x", "kind": "high", "setpoint_fraction": 0.5,
            "standard": "GB/T 14848 III"}
    cases = [
        ({"point": "p1.nh4_mg_l", "parameter": "conductivity"}, "alarms[0].parameter"),
        ({"point": "p1.ph", "parameter": "pH"}, "alarms[0].parameter"),
        ({"point": "p1.conductivity_us_cm", "parameter": "TDS"},
         "alarms[0].setpoint_fraction"),
        ({"point": "p1.nh4_mg_l", "parameter": "ammonia", "standard": "GB 3838 III"},
         "alarms[0].standard"),
        ({"point": "p1.nh4_mg_l", "parameter": "ammonia", "standard": "GB/T 14848 V"},
         "alarms[0].standard"),
    ]
    for extra, path in cases:
        with pytest.raises(ConfigError) as exc:
            parse_config(site(tmp_path, {**base, **extra}), "site.toml", tmp_path)
        assert exc.value.path == path, (extra, exc.value)
    with pytest.raises(ConfigError, match="not both"):
        parse_config(site(tmp_path, {**base, "point": "p1.nh4_mg_l",
                                     "parameter": "ammonia", "setpoint": 1.0}),
                     "site.toml", tmp_path)


# -- in the gateway: the learned baseline survives a restart -------------------------


def test_gateway_keeps_a_learned_baseline_across_restarts(tmp_path):
    doc = tomllib.loads(EXAMPLE.read_text())
    doc["gateway"]["data_dir"] = str(tmp_path / "gw")
    doc["gateway"]["clock_sync"] = "assume"
    doc["alarms"].append({"name": "mw1-ec-chart", "point": "mw1.conductivity_us_cm",
                          "kind": "cusum", "relays": ["horn"]})
    cfg = parse_config(doc, "site.toml", tmp_path)
    clock = Clock()
    gw = Gateway(cfg, clock=clock)

    def sample(value: float) -> None:
        gw._evaluate("mw1", [Sample("conductivity_us_cm", value, Quality.GOOD,
                                    "µS/cm")], "2024-01-01T00:00:00Z")
        clock.now += 1.0

    for v in NICKEL_BASELINE:
        sample(v)
    rule = gw.rule_by_name["mw1-ec-chart"]
    assert rule.chart is not None and rule.learned is None  # stored
    gw.store.close()
    gw = Gateway(cfg, clock=clock)
    rule = gw.rule_by_name["mw1-ec-chart"]
    assert rule.chart is not None
    assert rule.chart.baseline.mean == pytest.approx(25.1375)
    assert rule.chart.baseline.sd == pytest.approx(11.51818, abs=1e-5)
    for v in NICKEL_COMPLIANCE:
        sample(v)
    assert rule.active and gw._desired_relays()["horn"]
    raised = gw.store.conn.execute(
        "SELECT value FROM events WHERE source='mw1-ec-chart' AND state='raised'"
    ).fetchall()
    assert raised == [(81.8,)]
    # Changing baseline_n asks for a new baseline.
    doc["alarms"][-1]["baseline_n"] = 10
    gw.store.close()
    gw = Gateway(parse_config(doc, "site.toml", tmp_path), clock=clock)
    assert gw.rule_by_name["mw1-ec-chart"].chart is None
    gw.store.close()
