"""Profiles and device maps: block planning and quality flags from registers."""

import textwrap

import pytest

from drivers.codec import encode
from drivers.device import DeviceMap, ReadBlock
from drivers.errors import ConfigError
from drivers.profile import builtin_profiles, load_profile
from groundwatch.contract import Quality


def test_every_builtin_profile_loads():
    names = builtin_profiles()
    assert {"tank_gauge", "leak_cable", "well_probe", "relay_module"} <= set(names)
    for name in names:
        assert load_profile(name).points


def test_well_probe_uses_one_based_numbers_and_one_block():
    probe = DeviceMap(load_profile("well_probe"))
    # level value at register number 38 -> wire address 37; conductivity quality at 60.
    assert probe.blocks == [ReadBlock("holding", 37, 23)]


def test_blocks_respect_the_protocol_limit(tmp_path):
    points = "\n".join(
        f"[points.p{i}]\naddress = {i * 2}\ntype = \"float32\"" for i in range(100)
    )
    path = tmp_path / "wide.toml"
    path.write_text(f'name = "wide"\n{points}\n')
    blocks = DeviceMap(load_profile(str(path))).blocks
    assert [b.count for b in blocks] == [124, 76]
    assert all(b.count <= 125 for b in blocks)


def _registers(device_map, table, values):
    regs = {}
    for name, value in values.items():
        p = device_map.points[name]
        for i, r in enumerate(encode(value, p.type, p.byte_order, p.word_order)):
            regs[device_map.wire(p.address) + i] = r
    return {table: regs}


def test_well_probe_quality_flags():
    probe = DeviceMap(load_profile("well_probe"), ranges={"level_m": (0.0, 10.0)})
    data = _registers(probe, "holding", {"level_m": 3.5, "temperature_c": -99999.0,
                                         "conductivity_us_cm": 0.0})
    data["holding"].update({37 + i: 0 for i in range(23) if 37 + i not in data["holding"]})
    data["holding"][59] = 0
    samples = {s.point: s for s in probe.decode(data)}
    assert samples["level_m"].value == 3.5 and samples["level_m"].quality == Quality.GOOD
    # The sentinel is never a value.
    assert samples["temperature_c"].value is None
    assert samples["temperature_c"].quality == Quality.SENTINEL
    # A probe in water never reads 0 µS/cm: flagged by the plausibility range.
    assert samples["conductivity_us_cm"].quality == Quality.OUT_OF_RANGE
    # The device's own data-quality register marks a device error.
    data["holding"][41] = 3
    samples = {s.point: s for s in probe.decode(data)}
    assert samples["level_m"].quality == Quality.DEVICE_ERROR


def test_leak_cable_bits_and_swapped_float():
    cable = DeviceMap(load_profile("leak_cable"))
    regs = {a: 0 for a in range(10)}
    regs[0] = 0b01  # leak
    regs[8], regs[9] = encode(42.5, "float32", "big", "little")
    samples = {s.point: s for s in cable.decode({"input": regs})}
    assert samples["leak"].value == 1.0
    assert samples["cable_break"].value == 0.0
    assert samples["leak_distance_m"].value == 42.5


def test_signed_scaled_int16_is_negative():
    tank = DeviceMap(load_profile("tank_gauge"))
    regs = {a: 0 for a in range(14)}
    regs[9] = 0xFFF6  # -10 x 0.01 °C
    samples = {s.point: s for s in tank.decode({"holding": regs})}
    assert samples["temperature_c"].value == pytest.approx(-0.1)


@pytest.mark.parametrize(
    ("body", "path"),
    [
        ('[points.a]\naddress = 0\ntype = "int32"\n[points.b]\naddress = 1\n', "overlaps"),
        ('[points.a]\naddress = 0\ntype = "int33"\n', "points.a.type"),
        ('[points.a]\naddress = 70000\n', "points.a.address"),
        ('[points.a]\naddress = 0\ntable = "coil"\ntype = "int16"\n', "points.a"),
        ('[points.a]\naddress = 0\ncolour = "red"\n', "points.a.colour"),
    ],
)
def test_bad_profiles_are_rejected_with_their_key_path(tmp_path, body, path):
    f = tmp_path / "bad.toml"
    f.write_text('name = "bad"\n' + textwrap.dedent(body))
    load_profile.cache_clear()
    with pytest.raises(ConfigError) as err:
        load_profile(str(f))
    assert path in str(err.value)


def test_scaled_integer_water_quality_probe():
    probe = DeviceMap(load_profile("water_quality_probe"))
    regs = {0: 712, 1: 0xFFFF, 2: 0, 3: 1234}
    s = {x.point: x for x in probe.decode({"holding": regs})}
    assert s["ph"].value == pytest.approx(7.12) and s["ph"].quality == Quality.GOOD
    assert s["temperature_c"].value == pytest.approx(-0.1)
    assert s["conductivity_us_cm"].value == 1234
    regs[0] = 0xFFFF
    s = {x.point: x for x in probe.decode({"holding": regs})}
    assert s["ph"].value is None and s["ph"].quality == Quality.SENTINEL


def test_pid_sensor_and_module_controller_offsets():
    pid = DeviceMap(load_profile("pid_voc_sensor"))
    regs = {0: 5123, 1: 0b10, 2: 0x4420, 3: 0x1000, 4: 0, 5: 100}
    s = {x.point: x.value for x in pid.decode({"input": regs})}
    assert s["voc_ppm"] == pytest.approx(512.3) and s["high_alarm"] == 1.0
    assert s["voc_ppm_float"] == pytest.approx(640.25)
    module3 = DeviceMap(load_profile("leak_module_controller"), address_offset=32)
    assert module3.blocks == [ReadBlock("input", 32, 4)]
    s = {x.point: x.value for x in module3.decode(
        {"input": {32: 0b1, 33: 355, 34: 1500, 35: 2}})}
    assert s["leak"] == 1.0 and s["leak_location_m"] == pytest.approx(35.5)


def test_read_limit_past_the_protocol_is_rejected(tmp_path):
    f = tmp_path / "big.toml"
    f.write_text('name = "big"\nmax_read_registers = 200\n[points.a]\naddress = 0\n')
    load_profile.cache_clear()
    with pytest.raises(ConfigError) as err:
        load_profile(str(f))
    assert "max_read_registers" in str(err.value)
