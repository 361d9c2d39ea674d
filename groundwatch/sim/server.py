"""Serve a site's simulated devices over Modbus TCP, RTU-over-TCP and RTU on a pty pair.

Each device keeps a register image (one list per Modbus table, covering every address
from 0 to the highest the profile uses). On every client access the image is refreshed
from the device's model at the current time, then copied into the pymodbus block;
writes are applied to the image too, so coils keep what clients wrote.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import shutil
import signal
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

from pymodbus import FramerType
from pymodbus.constants import ExcCodes
from pymodbus.server import ModbusSerialServer, ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from drivers.codec import CodecError, encode
from drivers.device import DeviceMap
from drivers.errors import ConfigError
from drivers.profile import BIT_TABLES, Point
from edge.config import BusSection, DeviceSection, SiteConfig, load_config

from .models import DeviceModel, LeakCableModel, ReplayModel, create_model

log = logging.getLogger(__name__)

# Modbus function code -> table it addresses.
FC_TABLE = {
    1: "coil", 5: "coil", 15: "coil", 2: "discrete",
    3: "holding", 6: "holding", 16: "holding", 22: "holding", 23: "holding",
    4: "input",
}
WRITE_FCS = {5, 6, 15, 16, 22, 23}
TABLES = ("coil", "discrete", "holding", "input")  # the order SimDevice expects

_INT_BOUNDS = {
    "int16": (-(2**15), 2**15 - 1), "uint16": (0, 2**16 - 1),
    "int32": (-(2**31), 2**31 - 1), "uint32": (0, 2**32 - 1),
    "int64": (-(2**63), 2**63 - 1), "uint64": (0, 2**64 - 1),
}
SOCAT_READY_TIMEOUT_S = 5.0
SIM_LINK_SUFFIX = ".sim"

Value = float | str | None
_Server = ModbusTcpServer | ModbusSerialServer


def point_registers(p: Point, value: Value) -> list[int]:
    """Registers that serve `value` for a register point (None: its sentinel)."""
    byte_order, word_order = p.byte_order or "big", p.word_order or "big"
    if p.type == "string":
        return encode(str(value or ""), "string", byte_order, "big", p.length)
    if value is None or (isinstance(value, float) and math.isnan(value)):
        if p.sentinel:
            raw: float = p.sentinel[0]
        else:
            raw = math.nan if p.type in ("float32", "float64") else 0
    else:
        raw = (float(value) - p.offset) / p.scale
    if p.type in _INT_BOUNDS:
        low, high = _INT_BOUNDS[p.type]
        raw = min(max(round(raw), low), high)  # a real device saturates
    return encode(raw, p.type, byte_order, word_order)


class _Device:
    """One simulated device: its model, register image and overrides."""

    def __init__(
        self, bus: BusSection, section: DeviceSection, dmap: DeviceMap,
        model: DeviceModel,
    ):
        self.name = section.name
        self.bus = bus
        self.unit_id = section.unit_id
        self.model = model
        # Serve the whole profile, whichever points the gateway is configured to read.
        self.map = DeviceMap(dmap.profile, None, dmap.address_offset)
        self.overrides: dict[str, Value] = {}
        # Fault injection: answer late by this many seconds, or never (None = silent).
        self.reply_delay_s: float | None = 0.0
        sizes: dict[str, int] = {}
        self.writable: dict[str, set[int]] = {t: set() for t in TABLES}
        for p in self.map.points.values():
            addr = self.map.wire(p.address)
            end = addr + p.count
            if p.quality_address is not None:
                end = max(end, self.map.wire(p.quality_address) + 1)
            sizes[p.table] = max(sizes.get(p.table, 0), end)
            if p.writable:
                self.writable[p.table].update(range(addr, addr + p.count))
        # Bit tables hold one 0/1 per address; register tables one 16-bit word.
        self.image: dict[str, list[int]] = {t: [0] * n for t, n in sizes.items()}
        self._regular = [p for p in self.map.points.values() if p.type != "bit"]
        self._bits = [p for p in self.map.points.values() if p.type == "bit"]

    def simdata(self) -> tuple[list[SimData], ...]:
        """The four SimData lists (coil, discrete, holding, input) of this device."""
        out = []
        for table in TABLES:
            size = len(self.image.get(table, []))
            if table in BIT_TABLES:
                if size:
                    block = SimData(0, count=size, values=False, datatype=DataType.BITS)
                else:  # unused: only a block at the top, so reads from 0 fail (code 2)
                    block = SimData(
                        65520, count=16, values=False, datatype=DataType.BITS
                    )
            elif size:
                block = SimData(0, count=size, values=0, datatype=DataType.REGISTERS)
            else:
                block = SimData(65535, count=1, datatype=DataType.INVALID)
            out.append([block])
        return tuple(out)

    def refresh(self, sim_s: float, real_s: float) -> None:
        """Write the model's values now (and the overrides) into the image."""
        values: dict[str, Value] = dict(self.model.values(sim_s, real_s))
        values.update(self.overrides)
        for p in self._regular:
            if p.name in values:
                self._put(p, values[p.name])
        for p in self._bits:
            if p.name in values:
                self._put(p, values[p.name])

    def _put(self, p: Point, value: Value) -> None:
        regs = self.image[p.table]
        addr = self.map.wire(p.address)
        if p.type == "bool":
            regs[addr] = 1 if value else 0
        elif p.type == "bit":
            mask = 1 << (p.bit or 0)
            regs[addr] = regs[addr] | mask if value else regs[addr] & ~mask
        else:
            regs[addr : addr + p.count] = point_registers(p, value)

    def packed(self, table: str) -> list[int]:
        """The image of a table as pymodbus holds it (bits packed 16 per register)."""
        regs = self.image[table]
        if table not in BIT_TABLES:
            return regs
        return [
            sum(bit << i for i, bit in enumerate(regs[n : n + 16]))
            for n in range(0, len(regs), 16)
        ]

    def apply_write(self, table: str, address: int, values: list[Any]) -> None:
        """Apply a client's write to the image."""
        regs = self.image[table]
        for i, value in enumerate(values):
            regs[address + i] = (1 if value else 0) if table in BIT_TABLES else value

    def decoded(self) -> dict[str, float | None]:
        """Decode the image as a client would."""
        data = {t: dict(enumerate(regs)) for t, regs in self.image.items()}
        return {s.point: s.value for s in self.map.decode(data)}


class _Socat:
    """A socat pty pair: the client end at `link`, the simulator end at `link`.sim."""

    def __init__(self, bus: BusSection):
        self.bus = bus
        self.link = str(bus.serial_port)
        self.sim_link = self.link + SIM_LINK_SUFFIX
        self.proc: subprocess.Popen[bytes] | None = None
        self.output: deque[str] = deque(maxlen=20)
        self._drainer: threading.Thread | None = None

    async def start(self) -> None:
        """Start socat and wait until both pty links exist."""
        exe = shutil.which("socat")
        if exe is None:
            raise RuntimeError(
                f"bus {self.bus.name}: socat is not installed; it is needed to "
                f"simulate the rtu bus on a pty pair at {self.link}"
            )
        for path in (self.link, self.sim_link):
            if os.path.islink(path):
                os.unlink(path)  # a stale link from an earlier run
            elif os.path.exists(path):
                raise RuntimeError(
                    f"bus {self.bus.name}: {path} exists and is not a pty link; "
                    f"not replacing it"
                )
        if not Path(self.link).parent.is_dir():
            raise RuntimeError(
                f"bus {self.bus.name}: directory of {self.link} does not exist"
            )
        self.proc = subprocess.Popen(
            [
                exe, "-d", "-d",
                f"pty,raw,echo=0,link={self.link}",
                f"pty,raw,echo=0,link={self.sim_link}",
            ],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )
        self._drainer = threading.Thread(
            target=self._drain, name=f"socat-{self.bus.name}", daemon=True
        )
        self._drainer.start()
        deadline = time.monotonic() + SOCAT_READY_TIMEOUT_S
        while not (os.path.exists(self.link) and os.path.exists(self.sim_link)):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                await self.stop()
                raise RuntimeError(
                    f"bus {self.bus.name}: socat did not create {self.link} and "
                    f"{self.sim_link}: {' | '.join(self.output) or 'no output'}"
                )
            await asyncio.sleep(0.02)
        log.debug("bus %s: socat pid %d, %s <-> %s", self.bus.name, self.proc.pid,
                  self.link, self.sim_link)

    def _drain(self) -> None:
        """Log socat's stderr and keep its last lines for error messages."""
        assert self.proc is not None and self.proc.stderr is not None
        for raw in self.proc.stderr:
            line = raw.decode(errors="replace").rstrip()
            self.output.append(line)
            log.debug("socat %s: %s", self.bus.name, line)

    async def stop(self) -> None:
        """Stop socat and remove the links it made."""
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                await asyncio.to_thread(proc.wait, 2.0)
            except subprocess.TimeoutExpired:
                proc.kill()
                await asyncio.to_thread(proc.wait)
        if proc is not None:
            if self._drainer is not None:
                await asyncio.to_thread(self._drainer.join, 2.0)
            if proc.stderr is not None:
                proc.stderr.close()
        for path in (self.link, self.sim_link):
            if os.path.islink(path):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)


class SiteSimulator:
    """Simulates every device of every bus of a site configuration."""

    def __init__(
        self,
        cfg: SiteConfig,
        speed: float = 900.0,
        *,
        clock: Callable[[], float] = time.monotonic,
        source: str = "<site config>",
    ):
        if not speed > 0:
            raise ValueError(f"speed must be positive, got {speed!r}")
        self.cfg = cfg
        self.speed = speed
        self._clock = clock
        self._t0 = clock()
        self._lock = threading.RLock()
        self._servers: list[tuple[BusSection, _Server]] = []
        self._socats: list[_Socat] = []
        self.endpoints: dict[str, str] = {}  # bus name -> where it is served
        simulation = cfg.simulation
        known = {dev.name for _, dev in cfg.devices()}
        for name in simulation:
            if name not in known:
                raise ConfigError(source, f"simulation.{name}", f"no device {name!r}")
        self._devices: dict[str, _Device] = {}
        for bus, dev in cfg.devices():
            dmap = cfg.maps[dev.name]
            table = simulation.get(dev.name)
            model = create_model(dev.name, table, dmap.profile, source)
            self._devices[dev.name] = _Device(bus, dev, dmap, model)
            log.debug("device %s (unit %d on %s): model %s", dev.name, dev.unit_id,
                      bus.name, model.name)

    # -- time -------------------------------------------------------------------

    def elapsed(self) -> tuple[float, float]:
        """(simulated seconds, real seconds) since start."""
        real_s = self._clock() - self._t0
        return real_s * self.speed, real_s

    # -- serving ----------------------------------------------------------------

    async def start(self) -> None:
        """Serve every bus; raise (after cleaning up) if one cannot be served."""
        self._t0 = self._clock()
        try:
            for bus in self.cfg.buses:
                await self._start_bus(bus)
        except BaseException:
            await self.stop()
            raise

    async def _start_bus(self, bus: BusSection) -> None:
        devices = [
            SimDevice(
                id=d.unit_id, simdata=d.simdata(), action=partial(self._on_access, d)
            )
            for d in self._devices.values() if d.bus is bus
        ]
        if not devices:
            log.info("bus %s has no devices; not served", bus.name)
            return
        server: _Server
        if bus.kind == "rtu":
            socat = _Socat(bus)
            await socat.start()
            self._socats.append(socat)
            # A pty has no wire, so parity means nothing on it, and some kernels
            # (seen on 6.18) reject even parity on a pty with EINVAL: open it "N".
            server = ModbusSerialServer(
                devices, port=socat.sim_link, framer=FramerType.RTU,
                baudrate=bus.baudrate, parity="N", stopbits=bus.stopbits,
                bytesize=bus.bytesize,
            )
            where = f"Modbus RTU on {socat.link} (simulator end {socat.sim_link})"
        else:
            framer = FramerType.SOCKET if bus.kind == "tcp" else FramerType.RTU
            server = ModbusTcpServer(
                devices, address=(str(bus.host), int(bus.port or 0)), framer=framer,
            )
            kind = "TCP" if bus.kind == "tcp" else "RTU over TCP"
            where = f"Modbus {kind} on {bus.host}:{bus.port}"
        try:
            await server.serve_forever(background=True)
        except RuntimeError as exc:
            raise RuntimeError(f"bus {bus.name}: cannot serve {where}: {exc}") from None
        self._servers.append((bus, server))
        units = ", ".join(
            f"{d.unit_id} {d.name} ({d.model.name})"
            for d in self._devices.values() if d.bus is bus
        )
        self.endpoints[bus.name] = f"{where}, units {units}"
        log.debug("bus %s: %s", bus.name, self.endpoints[bus.name])

    async def stop(self) -> None:
        """Stop every server and socat this simulator started."""
        servers, self._servers = self._servers, []
        for bus, server in servers:
            try:
                await server.shutdown()
            except Exception:  # noqa: BLE001 - keep stopping the others
                log.exception("bus %s: error while shutting down", bus.name)
        socats, self._socats = self._socats, []
        for socat in socats:
            await socat.stop()
        self.endpoints.clear()

    @contextlib.contextmanager
    def serve_in_thread(self) -> Iterator[SiteSimulator]:
        """Serve from an event loop in a background thread (for synchronous callers)."""
        loop = asyncio.new_event_loop()
        thread = threading.Thread(
            target=loop.run_forever, name="groundwatch-sim", daemon=True
        )
        thread.start()
        try:
            asyncio.run_coroutine_threadsafe(self.start(), loop).result(timeout=30)
            yield self
        finally:
            try:
                asyncio.run_coroutine_threadsafe(self.stop(), loop).result(timeout=30)
            finally:
                loop.call_soon_threadsafe(loop.stop)
                thread.join(timeout=10)
                loop.close()

    async def _on_access(
        self,
        dev: _Device,
        function_code: int,
        start_address: int,
        address: int,
        count: int,
        current_registers: list[int],
        set_values: list[int] | list[bool] | None,
    ) -> ExcCodes | None:
        """pymodbus action: refresh the image, copy it into the served block."""
        table = FC_TABLE.get(function_code)
        if table is None:
            return ExcCodes.ILLEGAL_FUNCTION
        if table not in dev.image:  # the placeholder block of an unused table
            return ExcCodes.ILLEGAL_ADDRESS
        if dev.reply_delay_s is None:  # a silent slave: hold the reply forever
            await asyncio.Event().wait()
        if dev.reply_delay_s:
            await asyncio.sleep(dev.reply_delay_s)
        writing = function_code in WRITE_FCS and set_values is not None
        if writing:
            assert set_values is not None
            span = range(address, address + len(set_values))
            if not set(span) <= dev.writable[table]:
                log.debug("%s: refused write to read-only %s %d..%d", dev.name, table,
                          span.start, span.stop - 1)
                return ExcCodes.ILLEGAL_ADDRESS
        with self._lock:
            dev.refresh(*self.elapsed())
            if writing:
                assert set_values is not None
                dev.apply_write(table, address, list(set_values))
                log.debug("%s: client wrote %s %d = %s", dev.name, table, address,
                          list(set_values))
            packed = dev.packed(table)
            current_registers[: len(packed)] = packed
        return None

    # -- inspection and test hooks ---------------------------------------------

    def _device(self, device: str) -> _Device:
        try:
            return self._devices[device]
        except KeyError:
            raise KeyError(f"no simulated device {device!r}") from None

    def _point(self, dev: _Device, point: str) -> Point:
        try:
            return dev.map.points[point]
        except KeyError:
            raise KeyError(f"device {dev.name!r} has no point {point!r}") from None

    def devices(self) -> list[str]:
        """Names of the simulated devices."""
        return list(self._devices)

    def model(self, device: str) -> DeviceModel:
        """The model behind a device."""
        return self._device(device).model

    def values(self, device: str) -> dict[str, float | None]:
        """What the device serves now, decoded as a client would (None: sentinel)."""
        dev = self._device(device)
        with self._lock:
            dev.refresh(*self.elapsed())
            return dev.decoded()

    def coil(self, device: str, point: str) -> bool:
        """Current state of a coil (or discrete input), e.g. what a client wrote."""
        dev = self._device(device)
        p = self._point(dev, point)
        if p.table not in BIT_TABLES:
            raise ValueError(f"{device}.{point} is a {p.table} point, not a coil")
        with self._lock:
            dev.refresh(*self.elapsed())
            return bool(dev.image[p.table][dev.map.wire(p.address)])

    def set_value(self, device: str, point: str, value: Value) -> None:
        """Serve `value` for a point until clear_override (None: its sentinel)."""
        dev = self._device(device)
        p = self._point(dev, point)
        if p.type not in ("bool", "bit"):
            try:
                point_registers(p, value)
            except (CodecError, OverflowError, TypeError, ValueError) as exc:
                raise ValueError(
                    f"{device}.{point}: cannot serve {value!r}: {exc}"
                ) from None
        with self._lock:
            dev.overrides[point] = value
        log.info("override %s.%s = %r", device, point, value)

    def clear_override(self, device: str, point: str | None = None) -> None:
        """Drop one override of a device (or all of them)."""
        dev = self._device(device)
        with self._lock:
            if point is None:
                dev.overrides.clear()
            else:
                dev.overrides.pop(point, None)

    def set_reply_delay(self, device: str, delay_s: float | None) -> None:
        """Answer late by delay_s (a slow slave), or never with None (a dead one)."""
        self._device(device).reply_delay_s = delay_s

    def power_cycle(self, device: str) -> None:
        """The device loses power: overrides go and whatever clients wrote is lost."""
        dev = self._device(device)
        with self._lock:
            dev.overrides.clear()
            for p in dev.map.points.values():
                if p.writable:
                    regs = dev.image[p.table]
                    start = dev.map.wire(p.address)
                    regs[start : start + p.count] = [0] * p.count

    def record_index(self, device: str) -> int:
        """Index of the record a replay model serves now."""
        model = self._device(device).model
        if not isinstance(model, ReplayModel):
            raise ValueError(f"device {device!r} does not replay a recording")
        return model.index(self.elapsed()[0])

    def trigger_leak(self, device: str, distance_m: float | None = None) -> None:
        """Make a leak cable report a leak from now on."""
        model = self._device(device).model
        if not isinstance(model, LeakCableModel):
            raise ValueError(f"device {device!r} is not a leak cable")
        with self._lock:
            model.trigger_leak(self.elapsed()[1], distance_m)


async def _simulate(
    cfg: SiteConfig, speed: float, duration_s: float | None, source: str
) -> int:
    """Serve until duration_s has passed or SIGINT/SIGTERM arrives; return 0."""
    sim = SiteSimulator(cfg, speed, source=source)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    handled: list[signal.Signals] = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, stop.set)
            handled.append(sig)
    try:
        await sim.start()
        log.info("simulating site %s at speed %g", cfg.site.id, speed)
        for bus in cfg.buses:
            if bus.name in sim.endpoints:
                print(f"{bus.name}: {sim.endpoints[bus.name]}", flush=True)
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stop.wait(), duration_s)
    finally:
        await sim.stop()
        for sig in handled:
            loop.remove_signal_handler(sig)
    log.info("simulator stopped")
    return 0


def run_simulate(
    config_path: str | Path, speed: float = 900.0, duration_s: float | None = None
) -> int:
    """`groundwatch simulate`: serve the site's devices until duration or a signal."""
    cfg = load_config(config_path)
    return asyncio.run(_simulate(cfg, speed, duration_s, str(config_path)))


__all__ = ["SiteSimulator", "point_registers", "run_simulate"]
