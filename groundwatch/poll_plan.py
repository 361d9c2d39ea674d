"""The poll plan of a site file: block reads per device and the load on each bus.

`groundwatch check-config` prints it, so an installer sees before the first poll
whether an RS-485 bus can carry what the site asks of it.
"""

from __future__ import annotations

from dataclasses import dataclass

from drivers.device import ReadBlock
from drivers.rtu import READ_FUNCTIONS, reply_length
from edge.config import SiteConfig, load_config
from groundwatch.commission import describe_bus

# Line time arithmetic (Modbus over serial line v1.02, 2.5.1 and 2.5.1.1): a character
# is 11 bits (start, 8 data, parity or a second stop bit, stop); frames are separated by
# 3.5 character times, fixed at 1.75 ms above 19200 baud.
BITS_PER_CHAR = 11
FIXED_SILENCE_S = 0.00175
READ_REQUEST_BYTES = 8  # unit, function, address (2), count (2), CRC (2)
WRITE_COIL_BYTES = 8  # request and its echo alike
LOAD_WARN_FRACTION = 0.5


def inter_frame_silence_s(baudrate: int) -> float:
    """3.5 character times, fixed at 1.75 ms above 19200 baud (as drivers.rtu)."""
    return 3.5 * BITS_PER_CHAR / baudrate if baudrate <= 19200 else FIXED_SILENCE_S


def transaction_line_s(request_bytes: int, reply_bytes: int, baudrate: int) -> float:
    """Line time of one transaction: both frames, and the silence after each."""
    return ((request_bytes + reply_bytes) * BITS_PER_CHAR / baudrate
            + 2 * inter_frame_silence_s(baudrate))


def read_line_s(block: ReadBlock, baudrate: int) -> float:
    """Line time of one block read with its normal full reply."""
    function = READ_FUNCTIONS[block.table]
    return transaction_line_s(READ_REQUEST_BYTES, reply_length(function, block.count),
                              baudrate)


@dataclass(slots=True)
class DevicePlan:
    """The reads of one device per poll."""

    name: str
    unit: int
    profile: str
    poll_interval_s: float
    blocks: list[ReadBlock]
    line_s_per_poll: float | None = None  # serial buses only

    @property
    def requests_per_s(self) -> float:
        return len(self.blocks) / self.poll_interval_s


@dataclass(slots=True)
class BusPlan:
    """The reads of one bus: per device, per cycle, per second, and the line load."""

    name: str
    kind: str
    where: str
    baudrate: int | None
    devices: list[DevicePlan]
    writes_per_s: float = 0.0  # the "gateway healthy" relay's refresh
    load: float | None = None  # fraction of line time, serial buses only

    @property
    def requests_per_cycle(self) -> int:
        return sum(len(d.blocks) for d in self.devices)

    @property
    def requests_per_s(self) -> float:
        return sum(d.requests_per_s for d in self.devices) + self.writes_per_s

    @property
    def overloaded(self) -> bool:
        return self.load is not None and self.load > LOAD_WARN_FRACTION


def plan_site(cfg: SiteConfig, healthy_refresh_s: float | None = None) -> list[BusPlan]:
    """What the gateway will ask of each bus, and how much of a serial line that is."""
    if healthy_refresh_s is None:
        from edge.gateway import HEALTHY_REFRESH_S

        healthy_refresh_s = HEALTHY_REFRESH_S
    healthy_device = None
    if cfg.gateway.healthy_relay:
        healthy_device = cfg.relays[cfg.gateway.healthy_relay].device
    plans = []
    for bus in cfg.buses:
        serial = bus.kind in ("rtu", "rtu_over_tcp")
        devices = []
        writes_per_s = 0.0
        for dev in bus.devices:
            dmap = cfg.maps[dev.name]
            line_s = (sum(read_line_s(b, bus.baudrate) for b in dmap.blocks)
                      if serial else None)
            devices.append(DevicePlan(dev.name, dev.unit_id, dev.profile,
                                      dev.poll_interval_s, list(dmap.blocks), line_s))
            if dev.name == healthy_device:
                writes_per_s += 1 / healthy_refresh_s
        plan = BusPlan(bus.name, bus.kind, describe_bus(bus),
                       bus.baudrate if serial else None, devices, writes_per_s)
        if serial:
            write_s = transaction_line_s(WRITE_COIL_BYTES, WRITE_COIL_BYTES,
                                         bus.baudrate)
            plan.load = sum(
                (d.line_s_per_poll or 0.0) / d.poll_interval_s for d in devices
            ) + writes_per_s * write_s
        plans.append(plan)
    return plans


def format_plan(plans: list[BusPlan]) -> list[str]:
    """The poll plan for people, with a warning line for each overloaded bus."""
    out = []
    for bus in plans:
        out.append(f"bus {bus.name}: {bus.where}")
        for d in bus.devices:
            blocks = ", ".join(f"{b.table} {b.start}+{b.count}" for b in d.blocks)
            out.append(
                f"  {d.name} (unit {d.unit}, {d.profile}) every "
                f"{d.poll_interval_s:g} s: {len(d.blocks)} read(s) per poll: "
                f"{blocks or 'none'}"
            )
        line = (f"  per cycle {bus.requests_per_cycle} read(s); "
                f"{bus.requests_per_s:.2f} requests/s")
        if bus.writes_per_s:
            line += f" (with {bus.writes_per_s:.2f}/s healthy-relay writes)"
        if bus.load is not None:
            line += f"; line load {100 * bus.load:.1f}% at {bus.baudrate} baud"
            if bus.kind == "rtu_over_tcp":
                line += " (the device server's serial side, as set in baudrate)"
        out.append(line)
        if bus.overloaded:
            assert bus.load is not None
            out.append(
                f"  warning: bus {bus.name} is {100 * bus.load:.0f}% loaded (over "
                f"{100 * LOAD_WARN_FRACTION:.0f}%): retries and slow replies will "
                f"delay polls; raise poll_interval_s or the baudrate, or split the bus"
            )
    return out


def check_site(path: str) -> tuple[SiteConfig, list[BusPlan]]:
    """Load and validate a site file (ConfigError names the key) and plan its polls."""
    cfg = load_config(path)
    return cfg, plan_site(cfg)
