"""Commissioning: scan a bus, read registers or points, switch relays, plan the polls.

Synchronous on purpose: an installer runs one command at a time against one bus. Every
bus kind sits behind one small link (read, write_coil, close), so each command works
the same over Modbus TCP (pymodbus' sync client), RTU on a serial port and RTU over TCP
(drivers.rtu's master, which drains late replies and validates every frame). Every
transaction has a deadline. Nothing here prints: the CLI prints what these return.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from pydantic import ValidationError
from pymodbus import ModbusException
from pymodbus.client import ModbusTcpClient

from drivers.codec import CodecError, Order, decode, register_count
from drivers.device import DeviceMap, ReadBlock, Sample
from drivers.errors import ConfigError
from drivers.profile import BIT_TABLES, MAX_READ_BITS, MAX_READ_REGISTERS
from drivers.rtu import (
    READ_FUNCTIONS,
    RtuError,
    RtuException,
    RtuMaster,
    SerialTransport,
    SocketTransport,
)
from edge.config import BusSection, SiteConfig

log = logging.getLogger(__name__)

# --order names -> (byte_order, word_order) of drivers.codec. A is the most
# significant byte of the value; the letters give the order on the wire.
ORDERS: dict[str, tuple[Order, Order]] = {
    "ABCD": ("big", "big"),
    "CDAB": ("big", "little"),
    "BADC": ("little", "big"),
    "DCBA": ("little", "little"),
}
FUNCTION_TABLES: dict[int, str] = {fc: table for table, fc in READ_FUNCTIONS.items()}
READ_TYPES = ("int16", "uint16", "int32", "uint32", "float32", "float64", "string")
DEFAULT_STRING_REGISTERS = 8

# Modbus application protocol v1.1b3, 7: exception codes.
EXCEPTION_NAMES: dict[int, str] = {
    1: "illegal function",
    2: "illegal data address",
    3: "illegal data value",
    4: "server device failure",
    5: "acknowledge",
    6: "server device busy",
    8: "memory parity error",
    0x0A: "gateway path unavailable",
    0x0B: "gateway target device failed to respond",
}
# A gateway answering for a unit behind it that is not there: the unit did not speak.
GATEWAY_EXCEPTIONS = frozenset({0x0A, 0x0B})



class CommissionError(Exception):
    """Base error of a commissioning command."""


class UsageError(ConfigError):
    """Command-line options that do not fit together; the CLI exits 2, as for a file."""

    def __init__(self, message: str):
        super().__init__("options", "", message)


class LinkError(CommissionError):
    """A transaction that did not bring a normal reply."""


class LinkDown(LinkError):
    """The port cannot be opened or the host cannot be reached."""


class NoReply(LinkError):
    """Silence, garbage or a broken connection within the deadline."""


class ExceptionReply(LinkError):
    """The unit answered with a Modbus exception response: it is there and spoke."""

    def __init__(self, unit: int, code: int):
        self.unit, self.code = unit, code
        name = EXCEPTION_NAMES.get(code, "unknown")
        super().__init__(f"unit {unit}: exception code {code} ({name})")


def _exception_code(reply: Any) -> int:
    return int(getattr(reply, "exception_code", 0) or 0)


# -- options -----------------------------------------------------------------------


def parse_units(text: str) -> list[int]:
    """Unit ids from "1-10,17": ranges and single ids, in order, without duplicates."""
    units: list[int] = []
    for part in text.replace(" ", "").split(","):
        if not part:
            continue
        low_s, dash, high_s = part.partition("-")
        try:
            low = int(low_s)
            high = int(high_s) if dash else low
        except ValueError:
            raise UsageError(f"--units: {part!r} is not a unit id or a range") from None
        if not 0 <= low <= high <= 247:
            raise UsageError(f"--units: {part!r} is not within 0..247 (low to high)")
        units.extend(u for u in range(low, high + 1) if u not in units)
    if not units:
        raise UsageError("--units: no unit ids given")
    return units


def parse_endpoint(text: str, default_port: int = 502) -> tuple[str, int]:
    """HOST:PORT (or HOST, with the default port) of a TCP endpoint."""
    host, colon, port_s = text.rpartition(":")
    if not colon:
        host, port_s = text, str(default_port)
    try:
        port = int(port_s)
    except ValueError:
        raise UsageError(f"{text!r}: the port is not a number") from None
    if not host or not 1 <= port <= 65535:
        raise UsageError(f"{text!r} is not HOST:PORT")
    return host, port


def bus_from_options(
    tcp: str | None = None,
    rtu: str | None = None,
    rtu_over_tcp: str | None = None,
    baudrate: int = 9600,
    parity: str = "N",
    stopbits: int = 1,
    timeout_s: float = 1.0,
) -> BusSection:
    """The bus named on the command line, validated as a site file's bus would be."""
    given = [x for x in (tcp, rtu, rtu_over_tcp) if x]
    if len(given) != 1:
        raise UsageError("name one bus: --tcp HOST:PORT, --rtu PORT or "
                         "--rtu-over-tcp HOST:PORT")
    fields: dict[str, Any] = {
        "name": "cli", "baudrate": baudrate, "parity": parity, "stopbits": stopbits,
        "timeout_s": timeout_s,
    }
    if rtu:
        fields.update(kind="rtu", serial_port=rtu)
    else:
        host, port = parse_endpoint(tcp or rtu_over_tcp or "")
        fields.update(kind="tcp" if tcp else "rtu_over_tcp", host=host, port=port)
    try:
        return BusSection.model_validate(fields)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        raise UsageError(f"{where}: {err['msg']}" if where else err["msg"]) from None


def describe_bus(bus: BusSection) -> str:
    """Where a bus is, for messages."""
    if bus.kind == "rtu":
        return (f"RTU {bus.serial_port} {bus.baudrate} {bus.bytesize}{bus.parity}"
                f"{bus.stopbits}")
    kind = "TCP" if bus.kind == "tcp" else "RTU over TCP"
    return f"{kind} {bus.host}:{bus.port}"


# -- links -------------------------------------------------------------------------


class Link(Protocol):
    """One bus, one transaction at a time, a deadline on each."""

    def read(self, unit: int, table: str, address: int, count: int,
             timeout_s: float) -> list[int]: ...
    def write_coil(self, unit: int, address: int, on: bool,
                   timeout_s: float) -> None: ...
    def close(self) -> None: ...


_TCP_READERS = {
    "holding": "read_holding_registers",
    "input": "read_input_registers",
    "coil": "read_coils",
    "discrete": "read_discrete_inputs",
}


class TcpLink:
    """Modbus TCP through pymodbus' synchronous client; reconnects after a failure."""

    def __init__(self, host: str, port: int, timeout_s: float):
        self.where = f"{host}:{port}"
        # retries=0: one request, one deadline; we decide what a failure means.
        self.client = ModbusTcpClient(host, port=port, timeout=timeout_s, retries=0)

    def _set_timeout(self, timeout_s: float) -> None:
        # The client and its transaction manager each keep a copy of the parameters.
        self.client.comm_params.timeout_connect = timeout_s
        self.client.transaction.comm_params.timeout_connect = timeout_s

    def _call(self, unit: int, what: str, method: str, *args: Any,
              timeout_s: float, **kwargs: Any) -> Any:
        self._set_timeout(timeout_s)
        if not self.client.connected and not self.client.connect():
            raise LinkDown(f"cannot connect to {self.where}")
        try:
            reply = getattr(self.client, method)(*args, device_id=unit, **kwargs)
        except (ModbusException, OSError) as exc:
            # A late reply may still come: a new connection never sees it.
            self.client.close()
            log.debug("unit %d %s: %s", unit, what, exc)
            raise NoReply(f"unit {unit}: no reply to {what} within {timeout_s:g} s"
                          ) from None
        if reply.isError():
            raise ExceptionReply(unit, _exception_code(reply))
        return reply

    def read(self, unit: int, table: str, address: int, count: int,
             timeout_s: float) -> list[int]:
        """Read registers (or bits, as 0/1) of one table."""
        reply = self._call(unit, f"{table} {address}+{count}", _TCP_READERS[table],
                           address, count=count, timeout_s=timeout_s)
        if table in BIT_TABLES:
            values = [int(b) for b in reply.bits[:count]]
        else:
            values = list(reply.registers)
        if len(values) != count:
            raise NoReply(f"unit {unit}: {len(values)} values for {count} asked")
        return values

    def write_coil(self, unit: int, address: int, on: bool, timeout_s: float) -> None:
        """Function 05."""
        self._call(unit, f"coil {address}", "write_coil", address, on,
                   timeout_s=timeout_s)

    def close(self) -> None:
        self.client.close()


class RtuLink:
    """RTU framing of drivers.rtu on a serial port or over TCP to a device server."""

    def __init__(self, bus: BusSection):
        self.bus = bus
        self.master: RtuMaster | None = None

    def _open(self) -> RtuMaster:
        if self.master is None:
            b = self.bus
            try:
                if b.kind == "rtu":
                    serial_t = SerialTransport(b.serial_port or "", b.baudrate,
                                               b.parity, b.stopbits, b.bytesize)
                    self.master = RtuMaster(serial_t, b.baudrate)
                else:
                    socket_t = SocketTransport(b.host or "", b.port or 502,
                                               b.timeout_s * 2)
                    self.master = RtuMaster(socket_t)
            except (OSError, ValueError) as exc:
                raise LinkDown(f"cannot open {describe_bus(b)}: {exc}") from None
        return self.master

    def _run(self, unit: int, func: Callable[[RtuMaster], Any]) -> Any:
        master = self._open()
        try:
            return func(master)
        except RtuException as exc:
            raise ExceptionReply(unit, exc.code) from None
        except RtuError as exc:
            raise NoReply(str(exc)) from None
        except OSError as exc:  # the adapter was unplugged, the server hung up
            self.close()
            raise NoReply(f"{describe_bus(self.bus)}: {exc}") from None

    def read(self, unit: int, table: str, address: int, count: int,
             timeout_s: float) -> list[int]:
        """Read registers (or bits, as 0/1) of one table."""
        values: list[int] = self._run(
            unit, lambda m: m.read(unit, table, address, count, timeout_s))
        return values

    def write_coil(self, unit: int, address: int, on: bool, timeout_s: float) -> None:
        """Function 05; the slave echoes the request."""
        self._run(unit, lambda m: m.write_coil(unit, address, on, timeout_s))

    def close(self) -> None:
        if self.master is not None:
            try:
                self.master.close()
            except OSError:
                pass
            self.master = None


def open_link(bus: BusSection) -> Link:
    """The link for a bus kind; opening is deferred to the first transaction."""
    if bus.kind == "tcp":
        return TcpLink(bus.host or "", bus.port or 502, bus.timeout_s)
    return RtuLink(bus)


# -- scan --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Probe:
    """What one unit id did when asked: present means it spoke."""

    unit: int
    present: bool
    detail: str
    elapsed_s: float


def scan(link: Link, units: list[int], table: str, address: int,
         timeout_s: float) -> Iterator[Probe]:
    """Ask each unit for one register (or bit); yield what each did.

    A normal reply or an exception response means the unit is there. Silence or
    garbage means it is not, and so do the gateway exceptions 0x0A and 0x0B (a TCP
    gateway saying nothing answered behind it). A link that cannot be opened raises
    LinkDown: that is no answer about any unit.
    """
    for unit in units:
        t0 = time.monotonic()
        try:
            values = link.read(unit, table, address, 1, timeout_s)
            present, detail = True, f"{table} {address} = {values[0]}"
        except ExceptionReply as exc:
            present = exc.code not in GATEWAY_EXCEPTIONS
            name = EXCEPTION_NAMES.get(exc.code, "unknown")
            detail = f"exception {exc.code} ({name})"
            if not present:
                detail = "gateway: " + detail
        except LinkDown:
            raise
        except NoReply as exc:
            present, detail = False, str(exc)
        yield Probe(unit, present, detail, time.monotonic() - t0)


# -- reading one register block ----------------------------------------------------


@dataclass(frozen=True, slots=True)
class RegisterRequest:
    """A raw read from the command line: where, how many, and how to decode."""

    unit: int
    table: str
    address: int
    count: int
    type_name: str | None
    order: str = "ABCD"
    scale: float = 1.0
    offset: float = 0.0

    def describe(self) -> str:
        what = f"unit {self.unit} {self.table} {self.address}"
        if self.count != 1:
            what += f"+{self.count}"
        if self.type_name:
            what += f" {self.type_name}"
            if self.type_name != "string" and register_count(self.type_name) > 1:
                what += f" {self.order}"
            elif self.type_name == "string" and self.order in ("BADC", "DCBA"):
                what += " byte-swapped"
        return what


def register_request(
    unit: int, function: int, address: int, count: int | None = None,
    type_name: str | None = None, order: str = "ABCD", scale: float = 1.0,
    offset: float = 0.0,
) -> RegisterRequest:
    """Validate the read options and work out the register count."""
    if function not in FUNCTION_TABLES:
        raise UsageError(f"--function {function}: use 1, 2, 3 or 4")
    table = FUNCTION_TABLES[function]
    order = order.upper()
    if order not in ORDERS:
        raise UsageError(f"--order {order}: use one of {', '.join(ORDERS)}")
    if not 0 <= unit <= 255:
        raise UsageError(f"--unit {unit} is not within 0..255")
    if type_name is not None and type_name not in READ_TYPES:
        raise UsageError(f"--type {type_name}: use one of {', '.join(READ_TYPES)}")
    if table in BIT_TABLES:
        if type_name is not None:
            raise UsageError(f"--type is for registers; function {function} reads bits")
        limit, n = MAX_READ_BITS, 1 if count is None else count
    elif type_name is None:
        limit, n = MAX_READ_REGISTERS, 1 if count is None else count
    elif type_name == "string":
        limit = MAX_READ_REGISTERS
        n = DEFAULT_STRING_REGISTERS if count is None else count
    else:
        limit, n = MAX_READ_REGISTERS, register_count(type_name)
        if count is not None and count != n:
            raise UsageError(f"--type {type_name} is {n} register(s); drop --count "
                             f"or make it {n}")
    if not 1 <= n <= limit:
        raise UsageError(f"--count {n} is not within 1..{limit}")
    if not 0 <= address <= 65535 or address + n > 65536:
        raise UsageError(f"--register {address}+{n} is past the address space")
    if (scale != 1 or offset) and type_name in (None, "string"):
        raise UsageError("--scale and --offset need a numeric --type")
    return RegisterRequest(unit, table, address, n, type_name, order, scale, offset)


def decode_value(req: RegisterRequest, raw: list[int]) -> int | float | str | list[int]:
    """The value of the registers as the request asks: decoded, scaled, offset."""
    if req.type_name is None:
        return list(raw)
    byte_order, word_order = ORDERS[req.order]
    if req.type_name == "string":
        return decode(raw, "string", byte_order, "big")
    value = decode(raw, req.type_name, byte_order, word_order)
    assert not isinstance(value, str)
    if req.scale != 1 or req.offset:
        return value * req.scale + req.offset
    return value


def format_value(value: Any, type_name: str | None = None) -> str:
    """A value for people: float32 to its 7 significant digits, scaled values tidy."""
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, float):
        if type_name == "float32":
            return f"{value:.7g}"
        return f"{value:.10g}" if type_name != "float64" else repr(value)
    if isinstance(value, list):
        return " ".join(str(v) for v in value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


def _json_number(value: Any) -> Any:
    """JSON has no NaN or infinity: those become null (the text field keeps them)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


@dataclass(slots=True)
class ReadResult:
    """One read: the registers as they came, the value, or the error."""

    request: RegisterRequest
    raw: list[int] = field(default_factory=list)
    value: Any = None
    error: str | None = None
    elapsed_s: float = 0.0

    @property
    def ok(self) -> bool:
        return self.error is None

    def line(self) -> str:
        """One line for people."""
        req = self.request
        head = req.describe()
        if self.error is not None:
            return f"{head}: error: {self.error}"
        if req.type_name is None:
            return f"{head}: {format_value(self.raw)}"
        raw = " ".join(f"{r:04x}" for r in self.raw)
        return f"{head}: {format_value(self.value, req.type_name)}  (raw {raw})"

    def to_json(self) -> dict[str, Any]:
        """One JSON object; value, raw and error are always there."""
        req = self.request
        return {
            "unit": req.unit, "table": req.table, "address": req.address,
            "count": req.count, "type": req.type_name,
            "order": req.order if req.type_name else None,
            "scale": req.scale, "offset": req.offset,
            "value": _json_number(self.value),
            "text": None if self.error else format_value(self.value, req.type_name),
            "raw": self.raw, "error": self.error,
            "elapsed_s": round(self.elapsed_s, 4),
        }


def read_registers(link: Link, req: RegisterRequest, timeout_s: float) -> ReadResult:
    """One read with a deadline; a failure is returned, not raised."""
    t0 = time.monotonic()
    result = ReadResult(req)
    try:
        result.raw = link.read(req.unit, req.table, req.address, req.count, timeout_s)
        result.value = decode_value(req, result.raw)
    except (LinkError, CodecError) as exc:
        result.error = str(exc)
    result.elapsed_s = time.monotonic() - t0
    return result


def repeat(read: Callable[[], Any], times: int, interval_s: float) -> Iterator[Any]:
    """Call read `times` times (0: until interrupted), starting every interval_s."""
    n = 0
    next_at = time.monotonic()
    while times == 0 or n < times:
        if n:
            wait_s = next_at - time.monotonic()
            if wait_s > 0:
                time.sleep(wait_s)
        next_at = time.monotonic() + interval_s
        yield read()
        n += 1


# -- reading a configured device ---------------------------------------------------


@dataclass(slots=True)
class PointsResult:
    """One poll of a configured device: each block's registers, each point's sample."""

    device: str
    unit: int
    blocks: list[tuple[ReadBlock, list[int] | None, str | None]]
    samples: list[Sample]
    elapsed_s: float = 0.0
    types: dict[str, str] = field(default_factory=dict)  # point -> profile type

    @property
    def errors(self) -> list[str]:
        return [err for _, _, err in self.blocks if err is not None]

    @property
    def ok(self) -> bool:
        return not self.errors

    def lines(self) -> list[str]:
        """A header, one line per point (point, value, unit, quality), the errors."""
        out = [f"{self.device} (unit {self.unit}): {len(self.blocks)} block read(s), "
               f"{self.elapsed_s * 1000:.0f} ms"]
        width = max((len(s.point) for s in self.samples), default=5)
        for s in self.samples:
            if s.value is None:
                value = "-"
            else:
                value = format_value(float(s.value), self.types.get(s.point))
            out.append(f"  {s.point:{width}}  {value:>14}  {s.unit:8}  {s.quality}")
        out += [f"  error: {err}" for err in self.errors]
        return out

    def to_json(self) -> dict[str, Any]:
        """One JSON object: value (point -> value), points, raw blocks, error."""
        return {
            "device": self.device, "unit": self.unit,
            "value": {s.point: _json_number(s.value) for s in self.samples},
            "points": [
                {"point": s.point, "value": _json_number(s.value), "unit": s.unit,
                 "quality": str(s.quality)}
                for s in self.samples
            ],
            "raw": [
                {"table": b.table, "start": b.start, "count": b.count,
                 "registers": regs, "error": err}
                for b, regs, err in self.blocks
            ],
            "error": "; ".join(self.errors) or None,
            "elapsed_s": round(self.elapsed_s, 4),
        }


def device_map(cfg: SiteConfig, device: str, point: str | None = None
               ) -> tuple[BusSection, int, DeviceMap]:
    """The bus, unit id and register map of a configured device (one point or all)."""
    for bus, dev in cfg.devices():
        if dev.name == device:
            dmap = cfg.maps[device]
            if point is not None:
                if point not in dmap.points:
                    raise UsageError(f"device {device!r} reads no point {point!r} "
                                     f"(it has: {', '.join(dmap.points)})")
                dmap = DeviceMap(dmap.profile, [point], dmap.address_offset,
                                 dict(dmap.ranges))
            return bus, dev.unit_id, dmap
    names = ", ".join(d.name for _, d in cfg.devices())
    raise UsageError(f"no device {device!r} in the site configuration (have: {names})")


def device_timeout_s(cfg: SiteConfig, device: str) -> float:
    """The deadline the gateway uses for a device's reads."""
    for bus, dev in cfg.devices():
        if dev.name == device:
            return dev.timeout_s or bus.timeout_s
    raise UsageError(f"no device {device!r}")


def read_points(link: Link, name: str, unit: int, dmap: DeviceMap,
                timeout_s: float) -> PointsResult:
    """Read a device's blocks as the gateway plans them; decode with quality codes."""
    t0 = time.monotonic()
    data: dict[str, dict[int, int]] = {}
    blocks: list[tuple[ReadBlock, list[int] | None, str | None]] = []
    for block in dmap.blocks:
        try:
            regs = link.read(unit, block.table, block.start, block.count, timeout_s)
        except LinkError as exc:
            blocks.append((block, None, str(exc)))
            continue
        blocks.append((block, regs, None))
        table = data.setdefault(block.table, {})
        table.update({block.start + i: v for i, v in enumerate(regs)})
    samples = dmap.decode(data)
    # A scaled float32 still carries only float32's 7 significant digits.
    types: dict[str, str] = {n: p.type for n, p in dmap.points.items()}
    return PointsResult(name, unit, blocks, samples, time.monotonic() - t0, types)


# -- coils and relays --------------------------------------------------------------


@dataclass(slots=True)
class CoilCheck:
    """A coil written and read back."""

    unit: int
    address: int
    wrote: bool
    read_back: bool | None = None
    error: str | None = None
    label: str = ""

    @property
    def ok(self) -> bool:
        return self.error is None and self.read_back == self.wrote

    def line(self) -> str:
        """One line for people."""
        head = f"{self.label}unit {self.unit} coil {self.address}: wrote " \
               f"{format_value(self.wrote)}"
        if self.error is not None:
            return f"{head}: error: {self.error}"
        verdict = "OK" if self.ok else "MISMATCH"
        return f"{head}, read back {format_value(self.read_back)}: {verdict}"

    def to_json(self) -> dict[str, Any]:
        return {"unit": self.unit, "address": self.address, "wrote": self.wrote,
                "read_back": self.read_back, "ok": self.ok, "error": self.error}


def write_and_verify(link: Link, unit: int, address: int, on: bool,
                     timeout_s: float, label: str = "") -> CoilCheck:
    """Function 05, then function 01 on the same coil."""
    check = CoilCheck(unit, address, on, label=label)
    try:
        link.write_coil(unit, address, on, timeout_s)
    except LinkError as exc:
        check.error = f"write: {exc}"
        return check
    try:
        check.read_back = bool(link.read(unit, "coil", address, 1, timeout_s)[0])
    except LinkError as exc:
        check.error = f"read-back: {exc}"
    return check


@dataclass(frozen=True, slots=True)
class RelayTarget:
    """Where a named relay of the site lives."""

    name: str
    device: str
    point: str
    bus: BusSection
    unit: int
    address: int
    active_high: bool
    timeout_s: float


def relay_target(cfg: SiteConfig, relay: str) -> RelayTarget:
    """Resolve a relay name of the site file to bus, unit and coil address."""
    if relay not in cfg.relays:
        have = ", ".join(cfg.relays) or "none"
        raise UsageError(f"no relay {relay!r} in the site configuration (have: {have})")
    sec = cfg.relays[relay]
    bus, unit, dmap = device_map(cfg, sec.device)
    point = dmap.profile.points[sec.point]
    if point.table != "coil":
        raise UsageError(f"relay {relay!r}: {sec.device}.{sec.point} is a "
                         f"{point.table} point, not a coil")
    return RelayTarget(relay, sec.device, sec.point, bus, unit,
                       dmap.wire(point.address), sec.active_high,
                       device_timeout_s(cfg, sec.device))


def relay_test(link: Link, target: RelayTarget, hold_s: float, timeout_s: float,
               report: Callable[[CoilCheck], None]) -> list[CoilCheck]:
    """Switch a relay on, read back, hold, switch it off, read back.

    The relay is switched off even when switching on failed or was interrupted, so a
    test never leaves a horn sounding.
    """
    checks: list[CoilCheck] = []
    try:
        on = write_and_verify(link, target.unit, target.address, target.active_high,
                              timeout_s, label=f"{target.name} on: ")
        checks.append(on)
        report(on)
        if on.ok and hold_s > 0:
            time.sleep(hold_s)
    finally:
        off = write_and_verify(link, target.unit, target.address,
                               not target.active_high, timeout_s,
                               label=f"{target.name} off: ")
        checks.append(off)
        report(off)
    return checks


__all__ = [
    "ORDERS", "ExceptionReply", "Link", "LinkDown", "NoReply",
    "RtuLink", "TcpLink", "UsageError", "bus_from_options", "open_link",
    "parse_units", "read_points", "read_registers", "scan",
]
