"""The commissioning CLI against real servers: pymodbus 3.16, mbpoll, socat ptys.

The registers that `groundwatch read` decodes are encoded by third parties, never by
drivers.codec: pymodbus' own ModbusTcpClient.convert_to_registers, and Debian's mbpoll
writing into the server over the wire. The commands run as subprocesses, as an
installer runs them.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import serial
from pymodbus.client import ModbusTcpClient
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from drivers.rtu import crc16, frame
from edge.config import SiteConfig, load_config
from groundwatch.demo import write_site
from hil_tests.harness import ThreadedSimulator, free_port, port_open, wait_for

pytestmark = [pytest.mark.hil, pytest.mark.timeout(180)]

REPO = Path(__file__).resolve().parent.parent
DT = ModbusTcpClient.DATATYPE
MBPOLL = "/usr/bin/mbpoll"


def groundwatch(*args: str, timeout_s: float = 30) -> subprocess.CompletedProcess:
    """Run a groundwatch command as a child process."""
    return subprocess.run(
        [sys.executable, "-m", "groundwatch", *args], cwd=REPO, capture_output=True,
        text=True, timeout=timeout_s,
    )


def json_lines(proc: subprocess.CompletedProcess) -> list[dict[str, Any]]:
    lines = [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]
    assert lines, f"no output; stderr: {proc.stderr}"
    return lines


def read_json(*args: str) -> dict[str, Any]:
    """One `groundwatch read --json`; it must succeed."""
    proc = groundwatch("read", *args, "--json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (line,) = json_lines(proc)
    assert line["error"] is None
    return line


def swap_bytes(registers: list[int]) -> list[int]:
    """The bytes of each register swapped: ABCD -> BADC, CDAB -> DCBA."""
    return [(r & 0xFF) << 8 | r >> 8 for r in registers]


# -- a pymodbus server whose registers a third party filled -------------------------

# Holding registers (0-based wire addresses) and what pymodbus' encoder put there.
# pymodbus' encoder has no byte order: BADC and DCBA are ABCD and CDAB with the bytes
# of each register swapped, built here from pymodbus' registers, not from ours.
FLOAT_A, FLOAT_B = 404.17, -12.5


def third_party_image() -> list[int]:
    regs = [0] * 600
    for base, value in ((100, FLOAT_A), (140, FLOAT_B)):
        abcd = ModbusTcpClient.convert_to_registers(value, DT.FLOAT32, word_order="big")
        cdab = ModbusTcpClient.convert_to_registers(value, DT.FLOAT32,
                                                    word_order="little")
        regs[base : base + 2] = abcd
        regs[base + 10 : base + 12] = cdab
        regs[base + 20 : base + 22] = swap_bytes(abcd)  # BADC
        regs[base + 30 : base + 32] = swap_bytes(cdab)  # DCBA
    regs[200:202] = ModbusTcpClient.convert_to_registers(-123456, DT.INT32)
    regs[202:204] = ModbusTcpClient.convert_to_registers(617001, DT.INT32,
                                                         word_order="little")
    regs[300:301] = ModbusTcpClient.convert_to_registers(-1, DT.INT16)  # 0xFFFF
    regs[301:302] = ModbusTcpClient.convert_to_registers(-253, DT.INT16)
    regs[310:314] = ModbusTcpClient.convert_to_registers(-2.5e-7, DT.FLOAT64)
    return regs


class ThirdPartyServer:
    """A pymodbus 3.16 Modbus TCP server, unit 1, on its own loop in a thread."""

    def __init__(self, registers: list[int]):
        self.port = free_port()
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        # One shared block: holding and input registers read the same image.
        device = SimDevice(id=1, simdata=[
            SimData(0, values=registers, datatype=DataType.REGISTERS),
        ])
        self.server = self._run(self._make(device))
        self._run(self.server.serve_forever(background=True))
        wait_for(lambda: port_open(self.port), 10, "pymodbus server")

    async def _make(self, device: SimDevice) -> ModbusTcpServer:
        return ModbusTcpServer([device], address=("127.0.0.1", self.port))

    def _run(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(30)

    def close(self) -> None:
        self._run(self.server.shutdown())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


@pytest.fixture(scope="module")
def server() -> Iterator[ThirdPartyServer]:
    srv = ThirdPartyServer(third_party_image())
    try:
        yield srv
    finally:
        srv.close()


@pytest.mark.parametrize("order,base", [("ABCD", 0), ("CDAB", 10), ("BADC", 20),
                                        ("DCBA", 30)])
@pytest.mark.parametrize("value,start", [(FLOAT_A, 100), (FLOAT_B, 140)])
def test_float32_in_every_order(server, order, base, value, start):
    out = read_json("--tcp", f"127.0.0.1:{server.port}", "--unit", "1",
                    "--register", str(start + base), "--type", "float32",
                    "--order", order)
    assert out["value"] == pytest.approx(value, rel=1e-6)
    assert out["text"] == f"{value:.7g}"
    assert len(out["raw"]) == 2


def test_the_issue_example_reads_cdab_literally(server):
    # The example of issue 3, on this server's port; register 110 holds CDAB.
    proc = groundwatch("read", "--tcp", f"127.0.0.1:{server.port}", "--unit", "1",
                       "--register", "110", "--type", "float32", "--order", "CDAB")
    assert proc.returncode == 0, proc.stderr
    assert "404.17" in proc.stdout


def test_int32_both_word_orders(server):
    port = f"127.0.0.1:{server.port}"
    assert read_json("--tcp", port, "--register", "200", "--type", "int32"
                     )["value"] == -123456
    assert read_json("--tcp", port, "--register", "202", "--type", "int32",
                     "--order", "CDAB")["value"] == 617001
    # Read as the wrong order the same registers are a different number: the order
    # option is really applied.
    assert read_json("--tcp", port, "--register", "202", "--type", "int32"
                     )["value"] != 617001


def test_signed_scaled_int16(server):
    port = f"127.0.0.1:{server.port}"
    out = read_json("--tcp", port, "--register", "300", "--type", "int16",
                    "--scale", "0.1")
    assert out["raw"] == [0xFFFF]
    assert out["value"] == pytest.approx(-0.1)
    assert read_json("--tcp", port, "--register", "301", "--type", "int16",
                     "--scale", "0.1")["value"] == pytest.approx(-25.3)
    assert read_json("--tcp", port, "--register", "301", "--type", "int16",
                     "--scale", "0.1", "--offset", "100")["value"] == pytest.approx(74.7)
    # Unsigned, the same register is 65283 * 0.1.
    assert read_json("--tcp", port, "--register", "301", "--type", "uint16",
                     "--scale", "0.1")["value"] == pytest.approx(6528.3)


def test_float64_and_input_registers(server):
    out = read_json("--tcp", f"127.0.0.1:{server.port}", "--register", "310",
                    "--type", "float64", "--function", "4")
    assert out["table"] == "input"
    assert out["value"] == pytest.approx(-2.5e-7)


def test_raw_registers_without_a_type(server):
    out = read_json("--tcp", f"127.0.0.1:{server.port}", "--register", "100",
                    "--count", "4")
    abcd = ModbusTcpClient.convert_to_registers(FLOAT_A, DT.FLOAT32)
    assert out["raw"] == abcd + [0, 0]
    assert out["value"] == out["raw"]


def mbpoll(port: int, *args: str) -> None:
    proc = subprocess.run([MBPOLL, "-m", "tcp", "-p", str(port), "-a", "1", "-0", "-1",
                           *args], capture_output=True, text=True, timeout=20)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Written 1 references" in proc.stdout, proc.stdout


def test_values_written_by_mbpoll(server):
    assert Path(MBPOLL).exists(), "mbpoll is not installed: apt-get install mbpoll"
    # mbpoll -0: 0-based references (the wire address); -t 4:float writes float32 in
    # CDAB (low word first) unless -B makes it ABCD; -t 4:int is int32 alike. Values
    # after "--" may be negative.
    port = server.port
    mbpoll(port, "-r", "400", "-t", "4:float", "127.0.0.1", "--", "-12.5")
    mbpoll(port, "-r", "402", "-t", "4:float", "-B", "127.0.0.1", "--", "404.17")
    mbpoll(port, "-r", "410", "-t", "4:int", "127.0.0.1", "--", "-123456")
    mbpoll(port, "-r", "412", "-t", "4:int", "-B", "127.0.0.1", "--", "617001")
    where = f"127.0.0.1:{port}"
    assert read_json("--tcp", where, "--register", "400", "--type", "float32",
                     "--order", "CDAB")["value"] == -12.5
    assert read_json("--tcp", where, "--register", "402", "--type", "float32"
                     )["value"] == pytest.approx(404.17, rel=1e-6)
    assert read_json("--tcp", where, "--register", "410", "--type", "int32",
                     "--order", "CDAB")["value"] == -123456
    assert read_json("--tcp", where, "--register", "412", "--type", "int32"
                     )["value"] == 617001


def test_repeat_prints_one_line_per_read_on_one_connection(server):
    t0 = time.monotonic()
    proc = groundwatch("read", "--tcp", f"127.0.0.1:{server.port}", "--register", "100",
                       "--type", "float32", "--repeat", "3", "--interval", "0.1",
                       "--json", "-v")
    assert proc.returncode == 0, proc.stderr
    lines = json_lines(proc)
    assert len(lines) == 3
    assert all(line["value"] == pytest.approx(FLOAT_A, rel=1e-6) for line in lines)
    assert time.monotonic() - t0 < 20
    # pymodbus logs each connection it makes at debug level: exactly one.
    assert proc.stderr.count("Connection to Modbus server established") == 1, \
        proc.stderr


def test_dead_port_fails_fast_with_exit_1():
    dead = free_port()
    t0 = time.monotonic()
    proc = groundwatch("read", "--tcp", f"127.0.0.1:{dead}", "--register", "0",
                       "--timeout", "0.5", "--json")
    assert proc.returncode == 1
    (line,) = json_lines(proc)
    assert line["error"] and "connect" in line["error"]
    assert line["value"] is None and line["raw"] == []
    assert time.monotonic() - t0 < 10


def test_bad_options_exit_2(server):
    proc = groundwatch("read", "--tcp", f"127.0.0.1:{server.port}", "--register", "0",
                       "--type", "float32", "--count", "3")
    assert proc.returncode == 2
    assert "float32 is 2 register(s)" in proc.stderr


# -- the project's simulated site ---------------------------------------------------


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory
         ) -> Iterator[tuple[Path, SiteConfig, ThreadedSimulator]]:
    """The demo site's devices, served by the project's simulator (speed 1: steady)."""
    workdir = tmp_path_factory.mktemp("site")
    config_path = write_site(workdir, free_port(), leak_at_s=1e9)
    cfg = load_config(config_path)
    sim = ThreadedSimulator(cfg, speed=1.0)
    try:
        yield config_path, cfg, sim
    finally:
        sim.close()


def test_read_configured_device_prints_quality_coded_points(demo):
    config_path, cfg, sim = demo
    proc = groundwatch("read", "--config", str(config_path), "--device", "tank1",
                       "--json")
    assert proc.returncode == 0, proc.stderr
    (line,) = json_lines(proc)
    expected = sim.call(lambda: sim.sim.values("tank1"))
    points = {p["point"]: p for p in line["points"]}
    assert set(points) == set(cfg.maps["tank1"].points)
    assert all(p["quality"] == "good" for p in points.values()), points
    assert points["level_mm"]["unit"] == "mm"
    assert points["level_mm"]["value"] == pytest.approx(expected["level_mm"], abs=2.0)
    assert line["error"] is None and line["raw"][0]["count"] > 0

    # The human form: point, value, unit, quality on each line.
    proc = groundwatch("read", "--config", str(config_path), "--device", "tank1",
                       "--point", "level_mm")
    assert proc.returncode == 0, proc.stderr
    (row,) = [r for r in proc.stdout.splitlines() if "level_mm" in r]
    assert row.split()[0] == "level_mm" and row.split()[-2:] == ["mm", "good"]


def test_read_configured_point_with_a_sentinel(demo):
    config_path, _, sim = demo
    sim.call(lambda: sim.sim.set_value("mw1", "temperature_c", None))
    try:
        proc = groundwatch("read", "--config", str(config_path), "--device", "mw1",
                           "--json")
    finally:
        sim.call(lambda: sim.sim.clear_override("mw1"))
    assert proc.returncode == 0, proc.stderr
    (line,) = json_lines(proc)
    points = {p["point"]: p for p in line["points"]}
    assert points["temperature_c"]["quality"] == "sentinel"
    assert points["temperature_c"]["value"] is None
    assert points["conductivity_us_cm"]["quality"] in ("good", "out_of_range")


def test_silent_unit_errors_within_the_timeout(demo):
    config_path, cfg, sim = demo
    plant = cfg.buses[0]
    sim.call(lambda: sim.sim.set_reply_delay("cable1", None))
    try:
        t0 = time.monotonic()
        proc = groundwatch("read", "--tcp", f"{plant.host}:{plant.port}", "--unit", "2",
                           "--function", "4", "--register", "0", "--timeout", "0.5",
                           "--json")
        raw_s = time.monotonic() - t0
        t0 = time.monotonic()
        by_config = groundwatch("read", "--config", str(config_path), "--device",
                                "cable1", "--timeout", "0.5", "--json")
        config_s = time.monotonic() - t0
    finally:
        sim.call(lambda: sim.sim.set_reply_delay("cable1", 0.0))
    assert proc.returncode == 1
    (line,) = json_lines(proc)
    assert "no reply" in line["error"]
    # 0.5 s deadline plus the interpreter's start (about a second on a busy machine).
    assert raw_s < 0.5 + 4
    assert by_config.returncode == 1
    (line,) = json_lines(by_config)
    assert line["error"]
    assert {p["quality"] for p in line["points"]} == {"comm_lost"}
    assert config_s < 0.5 + 4


def test_read_over_rtu_raw_and_configured(demo):
    config_path, cfg, sim = demo
    wells = cfg.buses[1]
    assert wells.kind == "rtu", (
        "socat is not installed (apt-get install socat): the demo wells fell back to "
        "RTU over TCP, so there is no pty to read")
    expected = sim.call(lambda: sim.sim.values("mw1"))
    # well_probe: temperature is register 47 of a 1-based manual: wire address 46.
    out = read_json("--rtu", str(wells.serial_port), "--baud", str(wells.baudrate),
                    "--unit", "1", "--register", "46", "--type", "float32",
                    "--timeout", "0.5")
    assert out["value"] == pytest.approx(expected["temperature_c"], rel=1e-5)
    proc = groundwatch("read", "--config", str(config_path), "--device", "mw2",
                       "--json")
    assert proc.returncode == 0, proc.stderr
    (line,) = json_lines(proc)
    assert line["points"][0]["point"] == "level_m"
    assert line["points"][0]["quality"] == "good"


def coil(sim: ThreadedSimulator, point: str) -> bool:
    return bool(sim.call(lambda: sim.sim.coil("relay1", point)))


def test_write_coil_switches_and_reads_back(demo):
    _, cfg, sim = demo
    plant = cfg.buses[0]
    where = f"{plant.host}:{plant.port}"
    proc = groundwatch("write-coil", "--tcp", where, "--unit", "3", "--address", "2",
                       "on")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "read back on: OK" in proc.stdout
    assert coil(sim, "relay_3")
    proc = groundwatch("write-coil", "--tcp", where, "--unit", "3", "--address", "2",
                       "off", "--json")
    assert proc.returncode == 0
    (line,) = json_lines(proc)
    assert line == {"unit": 3, "address": 2, "wrote": False, "read_back": False,
                    "ok": True, "error": None}
    assert not coil(sim, "relay_3")


def test_write_coil_refused_is_an_error(demo):
    _, cfg, sim = demo
    plant = cfg.buses[0]
    # The tank gauge has no coils: the device answers with an exception.
    proc = groundwatch("write-coil", "--tcp", f"{plant.host}:{plant.port}", "--unit",
                       "1", "--address", "0", "on")
    assert proc.returncode == 1
    assert "exception code" in proc.stdout


def test_test_relay_switches_on_holds_and_off(demo):
    config_path, _, sim = demo
    seen: list[bool] = []
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            seen.append(coil(sim, "relay_1"))
            time.sleep(0.05)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        proc = groundwatch("test-relay", "--config", str(config_path), "horn",
                           "--hold", "1.0")
    finally:
        stop.set()
        watcher.join(5)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "horn on: unit 3 coil 0: wrote on, read back on: OK" in proc.stdout
    assert "horn off: unit 3 coil 0: wrote off, read back off: OK" in proc.stdout
    assert proc.stdout.rstrip().endswith("relay horn: OK")
    assert any(seen), "the horn coil never went on"
    assert not coil(sim, "relay_1")


def test_test_relay_on_a_silent_module_fails(demo):
    config_path, _, sim = demo
    sim.call(lambda: sim.sim.set_reply_delay("relay1", None))
    try:
        t0 = time.monotonic()
        proc = groundwatch("test-relay", "--config", str(config_path), "beacon",
                           "--hold", "5", "--timeout", "0.3")
        elapsed_s = time.monotonic() - t0
    finally:
        sim.call(lambda: sim.sim.set_reply_delay("relay1", 0.0))
    assert proc.returncode == 1
    # Switching on failed, so it did not hold, and still tried to switch off.
    assert "beacon on: " in proc.stdout and "beacon off: " in proc.stdout
    assert proc.stdout.count("error: write") == 2
    assert elapsed_s < 5


def test_unknown_relay_exits_2(demo):
    config_path, _, _ = demo
    proc = groundwatch("test-relay", "--config", str(config_path), "siren")
    assert proc.returncode == 2
    assert "no relay 'siren'" in proc.stderr


# -- scan over RS-485: a scripted slave that answers only some unit ids --------------


def registers_reply(unit: int, function: int, values: list[int]) -> bytes:
    return frame(struct.pack(f">BBB{len(values)}H", unit, function, 2 * len(values),
                             *values))


class ScriptedBus:
    """Slaves on a socat pty pair: answer, refuse, send garbage, or stay silent."""

    def __init__(self, port: str, script: Callable[[bytes], bytes]):
        self.port = serial.Serial(port, 19200, timeout=0.05, exclusive=True)
        self.script = script
        self.requests: list[bytes] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.is_set():
            req = self.port.read(8)
            if len(req) < 8:
                continue
            assert crc16(req[:-2]) == struct.unpack("<H", req[-2:])[0]
            self.requests.append(req)
            reply = self.script(req)
            if reply:
                self.port.write(reply)

    def close(self) -> None:
        self.stop.set()
        self.thread.join(2)
        self.port.close()


@pytest.fixture
def pty_pair(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    socat = shutil.which("socat")
    assert socat, "socat is required for RTU tests: apt-get install socat"
    a, b = tmp_path / "master", tmp_path / "slave"
    proc = subprocess.Popen([socat, "-d", "-d", f"pty,raw,echo=0,link={a}",
                             f"pty,raw,echo=0,link={b}"], stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: a.exists() and b.exists(), 5, "socat pty pair",
                 interval_s=0.02)
        yield a, b
    finally:
        proc.terminate()
        proc.wait()


def test_scan_over_rtu_finds_exactly_the_answering_units(pty_pair):
    master, slave_end = pty_pair
    regs = {3: [1234], 7: [0], 12: [65535]}

    def script(req: bytes) -> bytes:
        unit, function = req[0], req[1]
        if unit in regs:
            return registers_reply(unit, function, regs[unit])
        if unit == 9:  # present, but register 0 does not exist on it
            return frame(bytes([unit, function | 0x80, 2]))
        if unit == 11:  # a gateway: "the target device failed to respond"
            return frame(bytes([unit, function | 0x80, 0x0B]))
        if unit == 4:  # a gateway: "no path to the target"
            return frame(bytes([unit, function | 0x80, 0x0A]))
        if unit == 5:  # noise on the line: not a unit speaking
            return bytes(range(0x40, 0x49))
        if unit == 6:  # a reply with a broken CRC
            return registers_reply(unit, function, [1])[:-1] + b"\x00"
        return b""  # no such slave: silence

    bus = ScriptedBus(str(slave_end), script)
    try:
        proc = groundwatch("scan", "--rtu", str(master), "--baud", "19200",
                           "--units", "1-12", "--timeout", "0.1", "--json")
        human = groundwatch("scan", "--rtu", str(master), "--baud", "19200",
                            "--units", "3,9,10", "--timeout", "0.1")
    finally:
        bus.close()
    assert proc.returncode == 0, proc.stderr
    (result,) = json_lines(proc)
    assert result["units"] == [3, 7, 9, 12]
    assert result["probed"] == 12
    found = {f["unit"]: f["detail"] for f in result["found"]}
    assert found[3] == "holding 0 = 1234"
    assert found[9].startswith("exception 2")
    # Every unit was asked, once, for holding register 0.
    asked = [r[0] for r in bus.requests[:12]]
    assert asked == list(range(1, 13))
    assert all(r[1] == 3 and r[2:6] == b"\x00\x00\x00\x01" for r in bus.requests)
    assert human.returncode == 0, human.stderr
    lines = human.stdout.splitlines()
    assert lines[0].startswith("unit   3: holding 0 = 1234")
    assert lines[1].startswith("unit   9: exception 2 (illegal data address)")
    assert "2 of 3 unit(s) answered: 3, 9" in lines[2]


def test_scan_with_input_registers_and_nothing_there(pty_pair):
    master, slave_end = pty_pair
    bus = ScriptedBus(str(slave_end), lambda req: b"")
    try:
        t0 = time.monotonic()
        proc = groundwatch("scan", "--rtu", str(master), "--baud", "19200",
                           "--units", "1-5", "--timeout", "0.1", "--function", "4",
                           "--register", "7")
        elapsed_s = time.monotonic() - t0
    finally:
        bus.close()
    assert proc.returncode == 1  # nothing answered
    assert "0 of 5 unit(s) answered: none" in proc.stdout
    assert [r[1] for r in bus.requests] == [4] * 5
    assert all(r[2:4] == b"\x00\x07" for r in bus.requests)
    # Each silent unit costs the timeout plus the drain of its reply window.
    assert elapsed_s < 5 * 2 * 0.1 + 4


def test_scan_of_a_missing_port_is_an_error(tmp_path):
    proc = groundwatch("scan", "--rtu", str(tmp_path / "nothing"), "--units", "1-3")
    assert proc.returncode == 1
    assert "cannot open" in proc.stderr
