"""The site simulator over real Modbus TCP (pymodbus client) and a socat pty (RTU)."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import struct
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import minimalmodbus
import pytest
import serial
from pymodbus.client import ModbusTcpClient

from drivers.codec import encode
from drivers.device import DeviceMap
from drivers.errors import ConfigError
from edge.config import SiteConfig, parse_config
from groundwatch.contract import Quality
from groundwatch.sim import replay
from groundwatch.sim.server import SiteSimulator, run_simulate

pytestmark = pytest.mark.timeout(60)

SPEED = 900.0


class FakeClock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def site(
    port: int, serial_port: Path, simulation: dict[str, Any] | None = None
) -> dict:
    return {
        "site": {"id": "test-site"},
        "gateway": {"id": "gw-test"},
        "buses": [
            {
                "name": "lan", "kind": "tcp", "host": "127.0.0.1", "port": port,
                "devices": [
                    {"name": "tank1", "unit_id": 1, "profile": "tank_gauge"},
                    {"name": "cable1", "unit_id": 2, "profile": "leak_cable"},
                    {"name": "relay1", "unit_id": 3, "profile": "relay_module"},
                    {
                        "name": "tank2", "unit_id": 4, "profile": "tank_gauge",
                        "address_offset": 16,
                    },
                ],
            },
            {
                "name": "wells", "kind": "rtu", "serial_port": str(serial_port),
                "baudrate": 19200, "parity": "E",
                "devices": [
                    {
                        "name": "mw1", "unit_id": 1, "profile": "well_probe",
                        "points": ["temperature_c", "conductivity_us_cm"],
                    },
                    {
                        "name": "mw2", "unit_id": 2, "profile": "well_probe",
                        "points": ["level_m"],
                    },
                ],
            },
        ],
        "simulation": simulation if simulation is not None else {
            "tank1": {"model": "tank", "seed": 11},
            "cable1": {"model": "leak_cable", "leak_at_s": 30.0},
            "mw2": {"model": "replay_well_level"},
        },
    }


def make_config(tmp_path: Path, **kw: Any) -> SiteConfig:
    data = site(free_port(), tmp_path / "wells", **kw)
    return parse_config(data, "test.toml", tmp_path)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def sim(tmp_path: Path, clock: FakeClock) -> Iterator[SiteSimulator]:
    simulator = SiteSimulator(make_config(tmp_path), SPEED, clock=clock)
    with simulator.serve_in_thread():
        yield simulator
    assert not os.path.lexists(tmp_path / "wells"), "pty links not cleaned up"
    assert not os.path.lexists(tmp_path / "wells.sim")


@pytest.fixture
def tcp(sim: SiteSimulator) -> Iterator[ModbusTcpClient]:
    bus = sim.cfg.buses[0]
    client = ModbusTcpClient(str(bus.host), port=int(bus.port or 0), timeout=2)
    assert client.connect()
    yield client
    client.close()


@pytest.fixture
def rtu(sim: SiteSimulator) -> Iterator[serial.Serial]:
    # pymodbus holds the simulator end exclusively; lock ours too. Parity N: this
    # kernel rejects even parity on a pty (EINVAL), and a pty has no wire anyway.
    port = serial.Serial(
        sim.cfg.buses[1].serial_port, baudrate=19200, parity="N", timeout=1,
        exclusive=True,
    )
    yield port
    port.close()


def full_map(sim: SiteSimulator, device: str) -> DeviceMap:
    dmap = sim.cfg.maps[device]
    return DeviceMap(dmap.profile, None, dmap.address_offset)


def read_tcp(client: ModbusTcpClient, dmap: DeviceMap, unit: int) -> dict:
    """Read every planned block of a device map into {table: {address: value}}."""
    data: dict[str, dict[int, int]] = {}
    for block in dmap.blocks:
        start, count = block.start, block.count
        if block.table == "holding":
            reply = client.read_holding_registers(start, count=count, device_id=unit)
        elif block.table == "input":
            reply = client.read_input_registers(start, count=count, device_id=unit)
        elif block.table == "coil":
            reply = client.read_coils(start, count=count, device_id=unit)
        else:
            reply = client.read_discrete_inputs(start, count=count, device_id=unit)
        assert not reply.isError(), f"{block}: {reply}"
        words = reply.registers if block.table in ("holding", "input") else reply.bits
        data.setdefault(block.table, {}).update(
            {start + i: int(w) for i, w in enumerate(words[:count])}
        )
    return data


def read_rtu(port: serial.Serial, dmap: DeviceMap, unit: int) -> dict:
    instrument = minimalmodbus.Instrument(port, unit)
    instrument.clear_buffers_before_each_transaction = True
    data: dict[str, dict[int, int]] = {}
    for block in dmap.blocks:
        fc = 3 if block.table == "holding" else 4
        words = instrument.read_registers(block.start, block.count, functioncode=fc)
        data.setdefault(block.table, {}).update(
            {block.start + i: w for i, w in enumerate(words)}
        )
    return data


def decoded(dmap: DeviceMap, data: dict) -> dict[str, float | None]:
    return {s.point: s.value for s in dmap.decode(data)}


def f32(value: float) -> float:
    return struct.unpack(">f", struct.pack(">f", value))[0]


def assert_matches_model(sim: SiteSimulator, device: str, got: dict) -> None:
    """Served values equal the model's at this instant (to register resolution)."""
    dmap = full_map(sim, device)
    expected = sim.model(device).values(*sim.elapsed())
    for name, value in expected.items():
        p = dmap.points[name]
        if value is None:
            assert got[name] is None, name
        elif p.type == "float32":
            assert got[name] == f32(value), name
        else:
            assert got[name] == pytest.approx(value, abs=p.scale / 2 + 1e-9), name


# -- TCP ------------------------------------------------------------------------------


def test_tcp_tank_serves_the_model(sim: SiteSimulator, tcp: ModbusTcpClient) -> None:
    dmap = full_map(sim, "tank1")
    got = decoded(dmap, read_tcp(tcp, dmap, 1))
    assert got == sim.values("tank1")
    assert_matches_model(sim, "tank1", got)
    assert 1600 < got["level_mm"] < 2000 and got["status"] == 0
    # tank2 sits at address offset 16 of its unit: a block read there works too.
    dmap2 = full_map(sim, "tank2")
    assert dmap2.blocks[0].start == 16
    assert decoded(dmap2, read_tcp(tcp, dmap2, 4)) == sim.values("tank2")


def test_tcp_tank_value_moves_with_sim_time(
    sim: SiteSimulator, tcp: ModbusTcpClient, clock: FakeClock
) -> None:
    dmap = full_map(sim, "tank1")
    clock.now += 9 * 3600 / SPEED  # 09:00 simulated: two hours into dispensing
    first = decoded(dmap, read_tcp(tcp, dmap, 1))["level_mm"]
    clock.now += 3600 / SPEED
    second = decoded(dmap, read_tcp(tcp, dmap, 1))["level_mm"]
    assert first - second == pytest.approx(12.5, abs=0.5)


def test_tcp_reads_outside_the_image_and_writes_to_read_only_fail(
    sim: SiteSimulator, tcp: ModbusTcpClient
) -> None:
    assert tcp.read_holding_registers(0, count=14, device_id=1).registers[4:6]
    assert tcp.read_holding_registers(10, count=10, device_id=1).isError()
    assert tcp.read_coils(0, count=1, device_id=1).isError()  # a gauge has no coils
    assert tcp.write_register(2, 7, device_id=1).isError()
    assert tcp.read_input_registers(0, count=10, device_id=2).registers[7] == 0  # gap


def test_tcp_leak_cable_flips_at_leak_at_s(
    sim: SiteSimulator, tcp: ModbusTcpClient, clock: FakeClock
) -> None:
    dmap = full_map(sim, "cable1")
    clock.now += 29.5  # real seconds: the sim speed does not apply
    dry = decoded(dmap, read_tcp(tcp, dmap, 2))
    assert dry["leak"] == 0 and dry["leak_distance_dm"] == 0
    clock.now += 0.5
    data = read_tcp(tcp, dmap, 2)
    wet = decoded(dmap, data)
    assert wet["leak"] == 1 and wet["status"] == 1
    assert wet["leak_distance_dm"] == 425 and wet["leak_distance_m"] == 42.5
    assert wet["cable_length_m"] == 150 and wet["distance_units"] == 0
    assert [data["input"][8], data["input"][9]] == encode(42.5, "float32")[::-1]  # CDAB
    assert_matches_model(sim, "cable1", wet)


def test_trigger_leak_with_distance(sim: SiteSimulator, tcp: ModbusTcpClient) -> None:
    dmap = full_map(sim, "cable1")
    sim.trigger_leak("cable1", distance_m=12.3)
    got = decoded(dmap, read_tcp(tcp, dmap, 2))
    assert got["leak"] == 1 and got["leak_distance_dm"] == 123
    assert got["leak_distance_m"] == f32(12.3)


def test_tcp_coils_written_by_a_client(
    sim: SiteSimulator, tcp: ModbusTcpClient
) -> None:
    assert not sim.coil("relay1", "relay_1")
    assert not tcp.write_coil(0, True, device_id=3).isError()
    assert sim.coil("relay1", "relay_1")
    assert not tcp.write_coils(5, [True, False, True], device_id=3).isError()
    assert [sim.coil("relay1", f"relay_{n}") for n in (6, 7, 8)] == [True, False, True]
    assert tcp.read_coils(0, count=8, device_id=3).bits[:8] == [
        True, False, False, False, False, True, False, True,
    ]
    assert not tcp.write_coil(0, False, device_id=3).isError()
    assert not sim.coil("relay1", "relay_1")
    assert tcp.read_discrete_inputs(0, count=4, device_id=3).bits[:4] == [False] * 4
    assert sim.values("relay1")["relay_8"] == 1.0
    assert tcp.write_coil(9, True, device_id=3).isError()  # no relay 10


def test_overrides_stick_until_cleared(
    sim: SiteSimulator, tcp: ModbusTcpClient
) -> None:
    dmap = full_map(sim, "tank1")
    sim.set_value("tank1", "level_mm", 2450.0)
    sim.set_value("tank1", "high_level_alarm", 1)
    got = decoded(dmap, read_tcp(tcp, dmap, 1))
    assert got["level_mm"] == 2450.0 and got["high_level_alarm"] == 1
    sim.set_value("tank1", "temperature_c", None)
    samples = {s.point: s for s in dmap.decode(read_tcp(tcp, dmap, 1))}
    assert samples["temperature_c"].quality == Quality.SENTINEL
    sim.clear_override("tank1")
    assert decoded(dmap, read_tcp(tcp, dmap, 1))["level_mm"] < 2000
    sim.set_value("relay1", "input_2", True)
    assert tcp.read_discrete_inputs(0, count=4, device_id=3).bits[:4] == [
        False, True, False, False,
    ]
    with pytest.raises(KeyError):
        sim.set_value("tank1", "no_such_point", 1)
    with pytest.raises(ValueError):
        sim.set_value("tank1", "level_mm", "full")


# -- RTU over a socat pty --------------------------------------------------------------


def test_rtu_aquatroll_replay_advances_at_speed(
    sim: SiteSimulator, rtu: serial.Serial, clock: FakeClock
) -> None:
    records = replay.load_aquatroll()
    dmap = sim.cfg.maps["mw1"]  # the configured points: temperature, conductivity
    assert sim.record_index("mw1") == 0
    first = decoded(dmap, read_rtu(rtu, dmap, 1))
    assert first == {"temperature_c": f32(15.388), "conductivity_us_cm": 0.0}
    for advance_s, index in ((1.0, 1), (2.5, 3), (0.4, 3), (0.1, 4)):
        clock.now += advance_s  # one real second is one 15-minute record at 900x
        assert sim.record_index("mw1") == index
        got = decoded(dmap, read_rtu(rtu, dmap, 1))
        assert got["temperature_c"] == f32(records[index].temperature_c)
        spc = records[index].specific_conductivity_us_cm
        assert got["conductivity_us_cm"] == f32(spc)
    full = full_map(sim, "mw1")
    data = read_rtu(rtu, full, 1)
    assert data["holding"][full.wire(51)] == 0  # quality registers serve 0
    samples = {s.point: s for s in full.decode(data)}
    assert samples["level_m"].quality == Quality.SENTINEL  # no level sensor
    assert decoded(full, data) == sim.values("mw1")
    assert_matches_model(sim, "mw1", decoded(full, data))


def test_rtu_well_level_in_metres(sim: SiteSimulator, rtu: serial.Serial) -> None:
    records = replay.load_well_level()
    dmap = sim.cfg.maps["mw2"]
    assert decoded(dmap, read_rtu(rtu, dmap, 2)) == {"level_m": f32(records[0].level_m)}
    assert sim.record_index("mw2") == 0


def test_real_clock_advances_the_replay(tmp_path: Path) -> None:
    simulator = SiteSimulator(make_config(tmp_path), speed=9000.0)
    with simulator.serve_in_thread():
        first = simulator.record_index("mw1")
        threading.Event().wait(0.35)
        assert simulator.record_index("mw1") >= first + 3


# -- configuration and lifecycle -------------------------------------------------------


def test_simulation_errors_name_the_key(tmp_path: Path) -> None:
    cases = {
        "simulation.ghost": {"ghost": {"model": "tank"}},
        "simulation.cable1.model": {"cable1": {"model": "flood"}},
        "simulation.cable1.leak_at": {"cable1": {"leak_at": 3.0}},
        "simulation.tank1.seed": {"tank1": {"seed": "x"}},
    }
    for path, simulation in cases.items():
        cfg = make_config(tmp_path, simulation=simulation)
        with pytest.raises(ConfigError) as err:
            SiteSimulator(cfg, source="site.toml")
        assert err.value.path == path and err.value.source == "site.toml"


def test_missing_socat_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("groundwatch.sim.server.shutil.which", lambda name: None)
    simulator = SiteSimulator(make_config(tmp_path))
    with pytest.raises(RuntimeError, match="bus wells: socat is not installed"):
        asyncio.run(simulator.start())
    # The TCP bus that had started is stopped again: its port is free.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", int(simulator.cfg.buses[0].port or 0)))


def test_run_simulate_until_signal(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    port = free_port()
    (tmp_path / "site.toml").write_text(
        f"""
[site]
id = "s1"
[gateway]
id = "g1"
[[buses]]
name = "lan"
kind = "tcp"
host = "127.0.0.1"
port = {port}
  [[buses.devices]]
  name = "relay1"
  unit_id = 1
  profile = "relay_module"
[[buses]]
name = "wells"
kind = "rtu"
serial_port = "{tmp_path / 'wells'}"
  [[buses.devices]]
  name = "mw1"
  unit_id = 1
  profile = "well_probe"
"""
    )
    timer = threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGINT))
    timer.start()
    try:
        assert run_simulate(tmp_path / "site.toml", speed=900.0) == 0
    finally:
        timer.cancel()
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 2
    assert out[0].startswith(f"lan: Modbus TCP on 127.0.0.1:{port}")
    assert out[1].startswith(f"wells: Modbus RTU on {tmp_path / 'wells'}")
    assert not os.path.lexists(tmp_path / "wells")
    assert run_simulate(tmp_path / "site.toml", duration_s=0.2) == 0
