"""Recorded-data parsers and the simulation models (no servers)."""

from __future__ import annotations

import math
import statistics

import pytest

from drivers.errors import ConfigError
from drivers.profile import load_profile
from groundwatch.sim import replay
from groundwatch.sim.models import (
    AquaTrollReplay,
    LeakCableModel,
    TankModel,
    WellLevelReplay,
    create_model,
    horizontal_cylinder_volume_l,
)

HEADER = "Date and Time;Seconds"


def _aquatroll_text() -> str:
    return replay._package_file(replay.AQUATROLL_FILE).read_bytes().decode("latin-1")


def _well_text() -> str:
    return replay._package_file(replay.WELL_LEVEL_FILE).read_bytes().decode("latin-1")


# -- Aqua TROLL export ----------------------------------------------------------


def test_aquatroll_record_count_and_startup_artefact() -> None:
    records = replay.load_aquatroll()
    assert len(records) == 1892
    first = records[0]
    assert first.elapsed_s == 0.0
    assert first.specific_conductivity_us_cm == 0.0
    assert first.temperature_c == 15.388
    assert records[-1] == (1701900.0, 813.592, 12.128)


def test_aquatroll_elapsed_seconds_step_900_across_the_dst_jump() -> None:
    records = replay.load_aquatroll()
    steps = {b.elapsed_s - a.elapsed_s for a, b in zip(records, records[1:])}
    assert steps == {900.0}
    # Wall time jumps 01:50 -> 03:05 on 2014-03-30 (CET -> CEST); elapsed does not.
    lines = _aquatroll_text().splitlines()
    before = next(ln for ln in lines if ln.startswith("30.03.2014 01:50:22"))
    after = next(ln for ln in lines if ln.startswith("30.03.2014 03:05:22"))
    assert float(before.split(";")[1]) == 899100.0
    assert float(after.split(";")[1]) == 900000.0
    assert records[999].elapsed_s == 899100.0 and records[1000].elapsed_s == 900000.0


def test_aquatroll_dry_period_is_kept() -> None:
    records = replay.load_aquatroll()
    spc = [r.specific_conductivity_us_cm for r in records[1:]]
    assert min(spc) < 200 < 700 < statistics.median(spc) < 1100


def test_aquatroll_malformed_line_names_file_and_line() -> None:
    lines = _aquatroll_text().split("\r\n")
    header = next(i for i, ln in enumerate(lines) if ln.startswith(HEADER))
    assert "900.000" in lines[header + 2]
    lines[header + 2] = lines[header + 2].replace("900.000", "9OO.000", 1)
    with pytest.raises(ValueError, match=rf"troll\.csv:{header + 3}: .*not a number"):
        replay.parse_aquatroll("\r\n".join(lines), "troll.csv")


def test_aquatroll_short_row_and_count_mismatch_are_errors() -> None:
    lines = _aquatroll_text().split("\r\n")
    header = next(i for i, ln in enumerate(lines) if ln.startswith(HEADER))
    short = list(lines)
    short[header + 2] = short[header + 2].rsplit(";", 2)[0]
    with pytest.raises(ValueError, match=rf"t\.csv:{header + 3}: .*fields"):
        replay.parse_aquatroll("\r\n".join(short), "t.csv")
    dropped = lines[: header + 3] + lines[header + 4 :]
    with pytest.raises(ValueError, match="Record Count says 1892, found 1891"):
        replay.parse_aquatroll("\r\n".join(dropped), "t.csv")
    with pytest.raises(ValueError, match="header row"):
        replay.parse_aquatroll("nothing here\r\n", "t.csv")


# -- UGS hourly well log ---------------------------------------------------------


def test_well_log_records_in_metres() -> None:
    records = replay.load_well_level()
    assert len(records) == 2184
    assert records[0].elapsed_s == 0.0
    assert records[0].level_m == pytest.approx(12.19 * 0.3048)
    assert records[-1].level_m == pytest.approx(9.99 * 0.3048)
    assert {b.elapsed_s - a.elapsed_s for a, b in zip(records, records[1:])} == {3600.0}
    assert all(2.9 < r.level_m < 3.8 for r in records)


def test_well_log_malformed_line_names_file_and_line() -> None:
    lines = _well_text().splitlines()
    lines[9] = "5/3/16, 19:38:06, twelve, 15.40"
    with pytest.raises(ValueError, match=r"well\.csv:10: level \(ft\) 'twelve'"):
        replay.parse_well_log("\n".join(lines), "well.csv")
    lines = _well_text().splitlines()
    lines[4] = "5/3/16, 14:38:06, 12.21"
    with pytest.raises(ValueError, match=r"well\.csv:5: 3 fields"):
        replay.parse_well_log("\n".join(lines), "well.csv")


# -- replay models ----------------------------------------------------------------


def test_aquatroll_replay_index_steps_and_loops() -> None:
    model = AquaTrollReplay()
    records = replay.load_aquatroll()
    assert model.index(0) == 0 and model.index(899.9) == 0 and model.index(900) == 1
    assert model.index(1892 * 900) == 0  # loops
    values = model.values(900 * 5 + 1, 0.0)
    assert values["temperature_c"] == records[5].temperature_c
    assert values["conductivity_us_cm"] == records[5].specific_conductivity_us_cm
    assert values["level_m"] is None
    assert AquaTrollReplay(loop=False).index(10**9) == 1891


def test_well_level_replay_is_hourly() -> None:
    model = WellLevelReplay()
    records = replay.load_well_level()
    assert model.index(3599) == 0 and model.index(3600 * 7) == 7
    assert model.values(3600 * 7, 0.0)["level_m"] == records[7].level_m


# -- tank model ---------------------------------------------------------------------


def test_horizontal_cylinder_volume() -> None:
    full = math.pi * 1.2**2 * 6.0 * 1000
    assert horizontal_cylinder_volume_l(2400, 2400, 6000) == pytest.approx(full)
    assert horizontal_cylinder_volume_l(1200, 2400, 6000) == pytest.approx(full / 2)
    low = horizontal_cylinder_volume_l(300, 2400, 6000)
    high = horizontal_cylinder_volume_l(2100, 2400, 6000)
    assert low + high == pytest.approx(full)
    # A thin slice near the middle is width x length x thickness.
    assert horizontal_cylinder_volume_l(1201, 2400, 6000) - full / 2 == pytest.approx(
        2.4 * 6.0, rel=1e-3
    )


def test_tank_volumes_consistent_with_the_cylinder() -> None:
    model = TankModel(seed=7)
    for sim_s in (0.0, 9 * 3600.0, 30 * 3600.0, 44.1 * 3600.0):
        v = model.values(sim_s, 0.0)
        total = horizontal_cylinder_volume_l(v["level_mm"], 2400, 6000)
        water = horizontal_cylinder_volume_l(v["water_mm"], 2400, 6000)
        capacity = math.pi * 1.2**2 * 6.0 * 1000
        assert v["gross_volume_l"] == pytest.approx(total - water)
        expected_net = (total - water) * (1 - 0.00095 * (v["temperature_c"] - 15.0))
        assert v["net_volume_l"] == pytest.approx(expected_net)
        assert v["fill_pct"] == pytest.approx(100 * total / capacity)
        assert v["ullage_l"] == pytest.approx(capacity - total)
        assert v["status"] == 0 and 4.7 < v["water_mm"] < 5.3
        assert 1640 < v["level_mm"] < 1960


def test_tank_dispenses_by_day_and_refills() -> None:
    model = TankModel()
    assert model.level_mm_at(6 * 3600) == pytest.approx(1950)
    assert model.level_mm_at(19 * 3600) == pytest.approx(1800)
    assert model.level_mm_at(30 * 3600) == pytest.approx(1800)  # night: no dispensing
    assert model.level_mm_at(44 * 3600) == pytest.approx(1650)
    assert model.level_mm_at(46 * 3600) == pytest.approx(1950)
    assert model.level_mm_at(48 * 3600 + 6 * 3600) == pytest.approx(1950)
    temps = [model.temperature_c_at(h * 3600) for h in range(24)]
    assert max(temps) == pytest.approx(14.3) and temps.index(max(temps)) == 16


def test_tank_noise_is_gaussian_and_reproducible() -> None:
    a, b = TankModel(seed=3), TankModel(seed=3)
    assert a.values(1234.0, 0.0) == b.values(1234.0, 0.0)
    assert a.values(1234.0, 0.0) != TankModel(seed=4).values(1234.0, 0.0)
    level_noise = [a.values(t, 0)["level_mm"] - a.level_mm_at(t) for t in range(2000)]
    temp_noise = [
        a.values(t, 0)["temperature_c"] - a.temperature_c_at(t) for t in range(2000)
    ]
    assert 0.04 < statistics.stdev(level_noise) < 0.06
    assert 0.008 < statistics.stdev(temp_noise) < 0.012


# -- leak cable model ------------------------------------------------------------------


def test_leak_cable_flips_at_leak_at_real_seconds() -> None:
    model = LeakCableModel(leak_at_s=30.0)
    dry = model.values(sim_s=10**6, real_s=29.9)  # sim time does not matter
    assert dry["leak"] == 0 and dry["status"] == 0 and dry["leak_distance_dm"] == 0
    wet = model.values(sim_s=0.0, real_s=30.0)
    assert wet["leak"] == 1 and wet["status"] == 1
    assert wet["leak_distance_m"] == 42.5 and wet["leak_distance_dm"] == 425
    assert wet["distance_units"] == 0 and wet["cable_length_m"] == 150
    assert 300 < wet["loop_resistance_a_ohm"] < 1000
    broken = LeakCableModel(cable_break_at_s=5.0).values(0.0, 6.0)
    assert broken["cable_break"] == 1 and broken["status"] == 2 and broken["leak"] == 0


def test_leak_cable_trigger() -> None:
    model = LeakCableModel()
    assert model.values(0, 100.0)["leak"] == 0
    model.trigger_leak(100.0, 12.3)
    wet = model.values(0, 100.0)
    assert wet["leak"] == 1 and wet["leak_distance_dm"] == 123


# -- model selection -------------------------------------------------------------------


def test_create_model_errors_name_the_key() -> None:
    cable = load_profile("leak_cable")
    with pytest.raises(ConfigError) as err:
        create_model("c1", {"model": "leaky"}, cable, "s.toml")
    assert err.value.path == "simulation.c1.model"
    assert "unknown model" in str(err.value)
    with pytest.raises(ConfigError) as err:
        create_model("c1", {"leak_at": 3}, cable, "s.toml")
    assert err.value.path == "simulation.c1.leak_at"
    with pytest.raises(ConfigError) as err:
        create_model("c1", {"leak_at_s": "soon"}, cable, "s.toml")
    assert err.value.path == "simulation.c1.leak_at_s" and "number" in err.value.message
    with pytest.raises(ConfigError) as err:
        create_model("c1", {"model": "tank"}, cable, "s.toml")
    assert err.value.path == "simulation.c1.model" and "does not fit" in str(err.value)
    with pytest.raises(ConfigError) as err:
        create_model("c1", {"leak_distance_m": 400}, cable, "s.toml")
    assert err.value.path == "simulation.c1.leak_distance_m"


def test_default_models_by_profile() -> None:
    assert create_model("t", None, load_profile("tank_gauge"), "s").name == "tank"
    well = create_model("w", {}, load_profile("well_probe"), "s")
    assert well.name == "replay_aquatroll"
    assert create_model("r", None, load_profile("relay_module"), "s").name == "relay"
    assert create_model("c", None, load_profile("leak_cable"), "s").name == "leak_cable"
