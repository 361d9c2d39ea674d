"""Cross-checks against Modbus stacks we did not write: minimalmodbus and mbpoll.

The project's simulator serves a site over Modbus TCP and over RTU on a socat pty
pair. minimalmodbus (pure Python, RTU) and Debian's mbpoll (C, libmodbus; TCP and RTU)
read the devices and decode with their own code; their values must equal
drivers.device.DeviceMap's decoding of the same registers, what the simulator says it
serves, and what the models and the test's overrides put there.
"""

from __future__ import annotations

import contextlib
import math
import re
import shutil
import struct
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import minimalmodbus
import pytest
import serial

from drivers.device import DeviceMap
from drivers.profile import Point
from edge.config import BusSection, SiteConfig, load_config
from groundwatch.contract import Quality
from groundwatch.sim import replay
from hil_tests.harness import ThreadedSimulator, free_port

pytestmark = [pytest.mark.hil, pytest.mark.timeout(120)]

# Simulated time barely moves (0.001 s a second): the tank's noise and the replays'
# records hold still for the whole run, so every read of a point sees the same value.
SPEED = 1e-3
LEAK_DISTANCE_M = 42.7
MBPOLL_TIMEOUT_S = 1.0
FUNCTION_CODES = {"holding": 3, "input": 4}
MBPOLL_TABLES = {"holding": "4", "input": "3"}
# (byte_order, word_order) -> minimalmodbus's name for the same layout.
MM_BYTEORDERS = {
    ("big", "big"): minimalmodbus.BYTEORDER_BIG,  # ABCD
    ("big", "little"): minimalmodbus.BYTEORDER_LITTLE_SWAP,  # CDAB
    ("little", "big"): minimalmodbus.BYTEORDER_BIG_SWAP,  # BADC
    ("little", "little"): minimalmodbus.BYTEORDER_LITTLE,  # DCBA
}
LAYOUTS = {"abcd": ("big", "big"), "cdab": ("big", "little"),
           "badc": ("little", "big"), "dcba": ("little", "little")}

# Devices served on both buses as f"{kind}_{bus}": (kind, unit id, profile, model).
# The relay model serves nothing of its own, so those devices serve only overrides.
DEVICES = [
    ("tank", 1, "tank_gauge", 'model = "tank"\nseed = 5'),
    ("cable", 2, "leak_cable",
     f'model = "leak_cable"\nleak_at_s = 0.0\nleak_distance_m = {LEAK_DISTANCE_M}'),
    ("wq", 3, "water_quality_probe", 'model = "relay"'),
    ("troll", 4, "well_probe", 'model = "replay_aquatroll"\nstart_index = {troll}'),
    ("level", 5, "well_probe", 'model = "replay_well_level"\nstart_index = {level}'),
    ("layouts", 6, "layouts.toml", 'model = "relay"'),
]
# Test inputs served through SiteSimulator.set_value on both buses.
OVERRIDES: dict[str, dict[str, float]] = {
    "tank": {"high_level_alarm": 1, "probe_fault": 1, "temperature_c": -12.34,
             "water_mm": -0.5},
    "wq": {"ph": 7.23, "temperature_c": -0.1, "conductivity_us_cm": 1234},
    "layouts": {
        "f_abcd": 10.0, "f_cdab": -1234.5678, "f_badc": 0.1, "f_dcba": 3.0e-5,
        "i_abcd": -123456789, "i_cdab": 2_000_000_007, "i_badc": -2, "i_dcba": 65539,
    },
}


def f32(value: float) -> float:
    """A number as a float32 register pair holds it."""
    return struct.unpack(">f", struct.pack(">f", value))[0]


def layouts_profile() -> str:
    """A profile with float32 and int32 in each of the four byte/word layouts."""
    lines = ['name = "xcheck_layouts"', 'description = "each layout, for cross-checks"']
    for i, (kind, (byte_order, word_order)) in enumerate(LAYOUTS.items()):
        for prefix, type_name, address in (("f", "float32", 2 * i),
                                           ("i", "int32", 8 + 2 * i)):
            lines += [f"[points.{prefix}_{kind}]", f"address = {address}",
                      f'type = "{type_name}"', f'byte_order = "{byte_order}"',
                      f'word_order = "{word_order}"']
    return "\n".join(lines) + "\n"


def site_toml(tcp_port: int, tty: Path, troll: int, level: int) -> str:
    """The cross-check site: every device kind on a TCP bus and on an RTU pty bus."""
    out = ['[site]\nid = "xcheck"\n[gateway]\nid = "gw-xcheck"\n']
    buses = {
        "tcp": f'kind = "tcp"\nhost = "127.0.0.1"\nport = {tcp_port}',
        "rtu": f'kind = "rtu"\nserial_port = "{tty}"\nbaudrate = 19200\nparity = "N"',
    }
    for bus, transport in buses.items():
        out.append(f'[[buses]]\nname = "{bus}"\n{transport}\n')
        for kind, unit, profile, _ in DEVICES:
            out.append(f'[[buses.devices]]\nname = "{kind}_{bus}"\nunit_id = {unit}\n'
                       f'profile = "{profile}"\n')
    for bus in buses:
        for kind, _, _, model in DEVICES:
            table = model.format(troll=troll, level=level)
            out.append(f"[simulation.{kind}_{bus}]\n{table}\n")
    return "\n".join(out)


@dataclass
class CrossSite:
    """The running simulated site and what the checks need to reach it."""

    cfg: SiteConfig
    sim: ThreadedSimulator
    overrides: dict[str, dict[str, float | None]] = field(default_factory=dict)

    def bus(self, name: str) -> BusSection:
        return next(b for b in self.cfg.buses if b.name == name)

    def unit(self, device: str) -> int:
        return next(d.unit_id for _, d in self.cfg.devices() if d.name == device)

    def full_map(self, device: str) -> DeviceMap:
        dmap = self.cfg.maps[device]
        return DeviceMap(dmap.profile, None, dmap.address_offset)

    def values(self, device: str) -> dict[str, float | None]:
        return self.sim.call(lambda: self.sim.sim.values(device))

    def set_value(self, device: str, point: str, value: float | None) -> None:
        self.sim.call(lambda: self.sim.sim.set_value(device, point, value))
        self.overrides.setdefault(device, {})[point] = value

    def expected(self, device: str) -> dict[str, float | None]:
        """What the device should serve: its model's values, then the overrides."""
        sim = self.sim.sim
        values: dict[str, float | None] = dict(sim.model(device).values(*sim.elapsed()))
        values.update(self.overrides.get(device, {}))
        # A status word's value carries the bit points that live in its registers.
        points = self.full_map(device).points
        for bit in (p for p in points.values() if p.type == "bit"):
            owner = next(p for p in points.values() if p.type != "bit"
                         and p.table == bit.table
                         and p.address <= bit.address < p.address + p.count)
            last = owner.address + owner.count - 1
            words_after = (last - bit.address if owner.word_order == "big"
                           else bit.address - owner.address)
            mask = 1 << (16 * words_after + (bit.bit or 0))
            status = int(values.get(owner.name) or 0)
            values[owner.name] = float(status | mask if values.get(bit.name) else
                                       status & ~mask)
        return values


@pytest.fixture(scope="module")
def xsite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CrossSite]:
    """The cross-check site served by the project's simulator, stopped afterwards."""
    for tool, why in (("socat", "the RTU bus on a pty pair"),
                      ("mbpoll", "the independent Modbus master")):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is not installed (apt-get install {tool}); it is "
                        f"needed for {why}", pytrace=False)
    workdir = tmp_path_factory.mktemp("xcheck")
    (workdir / "layouts.toml").write_text(layouts_profile())
    troll = len(replay.load_aquatroll()) // 2
    level = len(replay.load_well_level()) // 2
    path = workdir / "site.toml"
    path.write_text(site_toml(free_port(), workdir / "tty485", troll, level))
    cfg = load_config(path)
    sim = ThreadedSimulator(cfg, speed=SPEED)
    try:
        site = CrossSite(cfg, sim)
        for bus in ("tcp", "rtu"):
            for kind, points in OVERRIDES.items():
                for point, value in points.items():
                    site.set_value(f"{kind}_{bus}", point, value)
        yield site
    finally:
        sim.close()


# -- minimalmodbus ------------------------------------------------------------------


@contextlib.contextmanager
def instrument(bus: BusSection, unit: int) -> Iterator[minimalmodbus.Instrument]:
    """A minimalmodbus master on the bus's pty, held exclusively, closed afterwards."""
    assert bus.serial_port is not None
    # Exclusive, as pymodbus opens ports: a second opener of a pty steals bytes.
    port = serial.Serial(bus.serial_port, baudrate=bus.baudrate, parity=bus.parity,
                         stopbits=bus.stopbits, bytesize=bus.bytesize, timeout=1.0,
                         exclusive=True)
    try:
        inst = minimalmodbus.Instrument(port, unit)
        inst.clear_buffers_before_each_transaction = True
        yield inst
    finally:
        port.close()


def read_blocks(
    inst: minimalmodbus.Instrument, dmap: DeviceMap
) -> dict[str, dict[int, int]]:
    """Every planned block of a device map, as {table: {address: register}}."""
    data: dict[str, dict[int, int]] = {}
    for block in dmap.blocks:
        words = inst.read_registers(block.start, block.count,
                                    functioncode=FUNCTION_CODES[block.table])
        data.setdefault(block.table, {}).update(
            {block.start + i: w for i, w in enumerate(words)})
    return data


def minimalmodbus_raw(inst: minimalmodbus.Instrument, dmap: DeviceMap,
                      p: Point) -> int | float:
    """One point read on its own and decoded by minimalmodbus's decoders (unscaled)."""
    fc, addr = FUNCTION_CODES[p.table], dmap.wire(p.address)
    order = MM_BYTEORDERS[(p.byte_order or "big", p.word_order or "big")]
    if p.type == "float32":
        return inst.read_float(addr, fc, 2, order)
    if p.type in ("int32", "uint32"):
        return inst.read_long(addr, fc, p.type == "int32", order)
    if p.type in ("int16", "uint16") and p.byte_order == "big":
        return inst.read_register(addr, 0, fc, p.type == "int16")
    if p.type == "bit":
        return inst.read_register(addr, 0, fc) >> (p.bit or 0) & 1
    raise AssertionError(f"{p.name}: no minimalmodbus decoder for {p.type}")


def profile_value(raw: int | float, p: Point) -> float | None:
    """A raw value as the profile defines it: None for a sentinel or NaN, or scaled."""
    if isinstance(raw, float) and math.isnan(raw) or raw in p.sentinel:
        return None
    return raw * p.scale + p.offset


def check_minimalmodbus(site: CrossSite, device: str) -> dict[str, float | None]:
    """minimalmodbus reads a device; its decoding, ours and the simulator's agree."""
    dmap = site.full_map(device)
    with instrument(site.bus("rtu"), site.unit(device)) as inst:
        data = read_blocks(inst, dmap)
        theirs = {n: profile_value(minimalmodbus_raw(inst, dmap, p), p)
                  for n, p in dmap.points.items()}
    ours = {s.point: s.value for s in dmap.decode(data)}
    assert theirs == ours, f"{device}: minimalmodbus vs DeviceMap"
    assert ours == site.values(device), f"{device}: DeviceMap vs simulator"
    assert_serves_expected(site, device, ours)
    return ours


def assert_serves_expected(site: CrossSite, device: str,
                           got: dict[str, float | None]) -> None:
    """Decoded values equal the model's and the overrides' (to register resolution)."""
    points = site.full_map(device).points
    for name, value in site.expected(device).items():
        p = points[name]
        if value is None:
            assert got[name] is None, (device, name)
        elif p.type == "float32":
            assert got[name] == f32(value), (device, name)
        else:
            assert got[name] == pytest.approx(value, abs=p.scale / 2 + 1e-9), (
                device, name)


def test_minimalmodbus_reads_well_probes(xsite: CrossSite) -> None:
    troll = check_minimalmodbus(xsite, "troll_rtu")
    level = check_minimalmodbus(xsite, "level_rtu")
    assert troll["conductivity_us_cm"] and troll["level_m"] is None
    assert level["level_m"] and level["temperature_c"] is None
    # 1-based register numbers: level (manual register 38) is at wire address 37, and
    # its data-quality register (manual 42) at 41; a missing sensor is the sentinel.
    dmap = xsite.full_map("level_rtu")
    p = dmap.points["level_m"]
    assert p.quality_address is not None and dmap.profile.register_base == 1
    with instrument(xsite.bus("rtu"), xsite.unit("level_rtu")) as inst:
        assert inst.read_float(p.address - 1) == level["level_m"]
        t = dmap.points["temperature_c"]
        assert inst.read_float(t.address - 1) in t.sentinel
        served = {q.name: (q.quality_address - 1,
                           inst.read_register(q.quality_address - 1))
                  for q in dmap.points.values() if q.quality_address is not None}
        data = read_blocks(inst, dmap)
        # The port is ours alone while we hold it.
        with pytest.raises(serial.SerialException):
            serial.Serial(xsite.bus("rtu").serial_port, exclusive=True)
    samples = {s.point: s for s in dmap.decode(data)}
    for name, (wire, quality_register) in served.items():
        assert data["holding"][wire] == quality_register, name
        if samples[name].value is None:
            assert samples[name].quality == Quality.SENTINEL
        else:
            assert samples[name].quality == (
                Quality.DEVICE_ERROR if quality_register else Quality.GOOD), name


def test_minimalmodbus_reads_tank_gauge_int32_and_status_bits(xsite: CrossSite) -> None:
    got = check_minimalmodbus(xsite, "tank_rtu")
    dmap = xsite.full_map("tank_rtu")
    with instrument(xsite.bus("rtu"), xsite.unit("tank_rtu")) as inst:
        status = inst.read_long(dmap.wire(dmap.points["status"].address))
        water_raw = inst.read_long(dmap.wire(dmap.points["water_mm"].address),
                                   signed=True)
        temp = inst.read_register(dmap.wire(dmap.points["temperature_c"].address),
                                  number_of_decimals=2, signed=True)
    bits = {n: p.bit for n, p in dmap.points.items() if p.type == "bit"}
    inputs = OVERRIDES["tank"]
    assert status == sum(1 << (b or 0) for n, b in bits.items() if inputs.get(n))
    assert got["status"] == status
    assert water_raw < 0 and got["water_mm"] == pytest.approx(inputs["water_mm"])
    assert temp == pytest.approx(inputs["temperature_c"]) == got["temperature_c"]


def test_minimalmodbus_reads_scaled_signed_int16(xsite: CrossSite) -> None:
    got = check_minimalmodbus(xsite, "wq_rtu")
    dmap = xsite.full_map("wq_rtu")
    p = dmap.points["temperature_c"]
    decimals = round(-math.log10(p.scale))
    inputs = OVERRIDES["wq"]
    with instrument(xsite.bus("rtu"), xsite.unit("wq_rtu")) as inst:
        raw = inst.read_register(dmap.wire(p.address), 0, 3, signed=False)
        temp = inst.read_register(dmap.wire(p.address), decimals, 3, signed=True)
    assert raw == 0xFFFF  # -0.1 x 10 in two's complement, not 6553.5
    assert temp == pytest.approx(inputs["temperature_c"]) == got["temperature_c"]
    # No reading: the probe serves a sentinel, which nobody decodes as a value.
    xsite.set_value("wq_rtu", "temperature_c", None)
    try:
        assert check_minimalmodbus(xsite, "wq_rtu")["temperature_c"] is None
    finally:
        xsite.set_value("wq_rtu", "temperature_c", inputs["temperature_c"])


def test_minimalmodbus_reads_leak_cable_swapped_float(xsite: CrossSite) -> None:
    got = check_minimalmodbus(xsite, "cable_rtu")
    dmap = xsite.full_map("cable_rtu")
    p = dmap.points["leak_distance_m"]
    assert (p.byte_order, p.word_order) == ("big", "little")  # CDAB
    with instrument(xsite.bus("rtu"), xsite.unit("cable_rtu")) as inst:
        cdab = inst.read_float(dmap.wire(p.address), 4, 2,
                               minimalmodbus.BYTEORDER_LITTLE_SWAP)
        abcd = inst.read_float(dmap.wire(p.address), 4, 2, minimalmodbus.BYTEORDER_BIG)
    assert cdab == got["leak_distance_m"] == f32(LEAK_DISTANCE_M)
    assert abcd != cdab  # the word swap is real, not a symmetric value
    assert got["leak_distance_dm"] == round(LEAK_DISTANCE_M * 10) and got["leak"] == 1


def test_minimalmodbus_reads_every_byte_and_word_order(xsite: CrossSite) -> None:
    got = check_minimalmodbus(xsite, "layouts_rtu")
    for name, value in OVERRIDES["layouts"].items():
        assert got[name] == (f32(value) if name.startswith("f_") else value), name


# -- mbpoll ---------------------------------------------------------------------------

MBPOLL_LINE = re.compile(r"^\[(\d+)\]:\s+(\S+)(?: \((-?\d+)\))?$")


def mbpoll(
    bus: BusSection, unit: int, table: str, ref: int, count: int, kind: str = "",
    big_words: bool = False, zero_based: bool = True,
) -> list[str]:
    """One mbpoll poll; its printed values (16-bit registers: the signed form)."""
    exe = shutil.which("mbpoll")
    assert exe is not None, "mbpoll is not installed (apt-get install mbpoll)"
    data_type = MBPOLL_TABLES[table] + (f":{kind}" if kind else "")
    args = [exe, "-1", "-o", str(MBPOLL_TIMEOUT_S), "-a", str(unit), "-r", str(ref),
            "-c", str(count), "-t", data_type]
    args += ["-B"] if big_words else []
    args += ["-0"] if zero_based else []
    if bus.kind == "tcp":
        args += ["-m", "tcp", "-p", str(bus.port), str(bus.host)]
    else:
        parity = {"N": "none", "E": "even", "O": "odd"}[bus.parity]
        args += ["-m", "rtu", "-b", str(bus.baudrate), "-P", parity, "-d",
                 str(bus.bytesize), "-s", str(bus.stopbits), str(bus.serial_port)]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=10)
    assert proc.returncode == 0, f"{' '.join(args)}:\n{proc.stdout}\n{proc.stderr}"
    values = {}
    for line in proc.stdout.splitlines():
        if m := MBPOLL_LINE.match(line.strip()):
            values[int(m[1])] = m[3] if m[3] is not None else m[2]
    step = 2 if kind in ("int", "float") else 1
    refs = [ref + step * i for i in range(count)]
    assert sorted(values) == refs, f"{' '.join(args)}:\n{proc.stdout}"
    return [values[r] for r in refs]


def reference(dmap: DeviceMap, p: Point) -> tuple[int, bool]:
    """mbpoll's reference of a point: the manual's 1-based number, else 0-based."""
    if dmap.profile.register_base == 1 and dmap.address_offset == 0:
        return p.address, False  # mbpoll numbers from 1 by default, as the manual does
    return dmap.wire(p.address), True


def check_mbpoll(site: CrossSite, device: str) -> dict[str, float | None]:
    """mbpoll reads a device; its decoding, ours and the simulator's agree."""
    dmap = site.full_map(device)
    bus = site.bus(device.rsplit("_", 1)[1])
    unit = site.unit(device)
    data: dict[str, dict[int, int]] = {}
    for block in dmap.blocks:
        words = mbpoll(bus, unit, block.table, block.start, block.count, "hex")
        data.setdefault(block.table, {}).update(
            {block.start + i: int(w, 16) for i, w in enumerate(words)})
    ours = {s.point: s.value for s in dmap.decode(data)}
    assert ours == site.values(device), f"{device}: DeviceMap vs simulator"
    assert_serves_expected(site, device, ours)
    for name, p in dmap.points.items():
        ref, zero_based = reference(dmap, p)
        if p.type == "float32" and p.byte_order == "big":
            (text,) = mbpoll(bus, unit, p.table, ref, 1, "float",
                             p.word_order == "big", zero_based)
            # mbpoll prints %g: compare with our value printed the same way.
            assert p.scale == 1 and not p.offset
            if ours[name] is None:
                assert profile_value(float(text), p) is None, (device, name, text)
            else:
                assert text == f"{ours[name]:g}", (device, name)
        elif p.type in ("int32", "uint32") and p.byte_order == "big":
            (text,) = mbpoll(bus, unit, p.table, ref, 1, "int",
                             p.word_order == "big", zero_based)
            raw = int(text) if p.type == "int32" else int(text) % 2**32
            assert profile_value(raw, p) == ours[name], (device, name, text)
        elif p.type in ("int16", "uint16", "bit"):
            (text,) = mbpoll(bus, unit, p.table, ref, 1, zero_based=zero_based)
            signed = int(text)  # mbpoll prints "65535 (-1)": we keep the -1
            raw = signed if p.type == "int16" else signed % 2**16
            if p.type == "bit":
                raw = raw >> (p.bit or 0) & 1
            assert profile_value(raw, p) == ours[name], (device, name, text)
        else:  # a byte-swapped layout: mbpoll has no decoder, only the hex reads
            assert p.byte_order == "little", (device, name)
    return ours


@pytest.mark.parametrize("bus", ["tcp", "rtu"])
def test_mbpoll_reads_well_probes(xsite: CrossSite, bus: str) -> None:
    troll = check_mbpoll(xsite, f"troll_{bus}")
    level = check_mbpoll(xsite, f"level_{bus}")
    assert troll["temperature_c"] and troll["level_m"] is None
    assert level["level_m"] and level["conductivity_us_cm"] is None
    # Manual register 38 read 1-based and wire address 37 read 0-based agree.
    dmap = xsite.full_map(f"level_{bus}")
    p = dmap.points["level_m"]
    one = mbpoll(xsite.bus(bus), xsite.unit(f"level_{bus}"), "holding", p.address, 1,
                 "float", True, zero_based=False)
    zero = mbpoll(xsite.bus(bus), xsite.unit(f"level_{bus}"), "holding",
                  dmap.wire(p.address), 1, "float", True)
    assert one == zero == [f"{level['level_m']:g}"]


@pytest.mark.parametrize("bus", ["tcp", "rtu"])
def test_mbpoll_reads_tank_gauge_and_water_quality_probe(
    xsite: CrossSite, bus: str
) -> None:
    tank = check_mbpoll(xsite, f"tank_{bus}")
    wq = check_mbpoll(xsite, f"wq_{bus}")
    assert tank["water_mm"] == pytest.approx(OVERRIDES["tank"]["water_mm"])
    assert tank["temperature_c"] == pytest.approx(OVERRIDES["tank"]["temperature_c"])
    assert wq["temperature_c"] == pytest.approx(OVERRIDES["wq"]["temperature_c"])


@pytest.mark.parametrize("bus", ["tcp", "rtu"])
def test_mbpoll_reads_both_word_orders(xsite: CrossSite, bus: str) -> None:
    cable = check_mbpoll(xsite, f"cable_{bus}")
    layouts = check_mbpoll(xsite, f"layouts_{bus}")
    assert cable["leak_distance_m"] == f32(LEAK_DISTANCE_M)
    for name, value in OVERRIDES["layouts"].items():
        assert layouts[name] == (f32(value) if name.startswith("f_") else value), name
    # The CDAB copy read as ABCD is another number: mbpoll's -B is not a no-op here.
    dmap = xsite.full_map(f"cable_{bus}")
    p = dmap.points["leak_distance_m"]
    (abcd,) = mbpoll(xsite.bus(bus), xsite.unit(f"cable_{bus}"), p.table,
                     dmap.wire(p.address), 1, "float", big_words=True)
    assert abcd != f"{cable['leak_distance_m']:g}"
    low, high = (int(h, 16) for h in mbpoll(xsite.bus(bus), xsite.unit(f"cable_{bus}"),
                                            p.table, dmap.wire(p.address), 2, "hex"))
    assert struct.unpack(">f", struct.pack(">HH", high, low))[0] == f32(LEAK_DISTANCE_M)
