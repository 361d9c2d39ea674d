"""Site configuration: one TOML file, validated at load, errors name the key path."""

from __future__ import annotations

import logging
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from drivers.device import DeviceMap
from drivers.errors import ConfigError, from_validation_error
from drivers.profile import Profile, load_profile
from groundwatch import standards
from edge.tank_config import CableSection, TankSection
from edge.tank_config import cross_check as _cross_check_leaks
from groundwatch.credentials import parse_broker_url
from leak_detection.control_chart import DEFAULT_H, DEFAULT_K, DEFAULT_SCL, MIN_BASELINE

log = logging.getLogger(__name__)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SiteSection(_Strict):
    id: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    name: str = ""


class GatewaySection(_Strict):
    id: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    data_dir: str = "var"
    healthy_relay: str | None = None
    status_interval_s: float = Field(default=30.0, gt=0)
    # Size limit of the gateway's database; the oldest readings are evicted beyond it
    # (alarm events never are). None: limited only by the disk.
    disk_budget_mb: float | None = Field(default=None, gt=0)
    housekeeping_interval_s: float = Field(default=60.0, gt=0)
    # How the gateway learns that its wall clock is right (see edge/clock.py):
    # "kernel", "assume", or the path of a file that exists once it is.
    clock_sync: str = "kernel"
    # Records stamped before synchronisation wait this long for it, then go out
    # marked clock_unsynced with the time they have.
    clock_hold_max_s: float = Field(default=3600.0, gt=0)
    # A digital input ("device.point", e.g. a push button on the relay module): its
    # rising edge acknowledges every latched alarm (docs/operations.md).
    ack_input: str | None = None
    # The local operator page, "host:port"; "" turns it off. 127.0.0.1 keeps it on
    # the gateway itself; "0.0.0.0:8081" opens it to the plant LAN.
    status_http: str = "127.0.0.1:8081"

    @model_validator(mode="after")
    def _check_clock_sync(self) -> "GatewaySection":
        if self.clock_sync not in ("kernel", "assume") and not self.clock_sync.startswith(
                "/"):
            raise ValueError('clock_sync must be "kernel", "assume" or an absolute path')
        if self.status_http:
            host, _, port = self.status_http.rpartition(":")
            if not host or not port.isdigit() or not 0 <= int(port) <= 65535:
                raise ValueError('status_http must look like "127.0.0.1:8081" (or "")')
        return self

    @property
    def status_http_address(self) -> tuple[str, int] | None:
        if not self.status_http:
            return None
        host, _, port = self.status_http.rpartition(":")
        return host.strip("[]"), int(port)


class UplinkSection(_Strict):
    broker_url: str = "mqtt://127.0.0.1:1883"  # mqtts://host:8883 for TLS
    username: str | None = None
    # The broker password: the name of an environment variable, or a file only the
    # service may read (docs/security.md). `password` (plain text) is for tests.
    password_env: str | None = None
    password_file: str | None = None
    password: str | None = None
    # TLS (mqtts://): the CA that signed the broker's certificate (default: the
    # system's CAs), and an optional client certificate and key.
    tls_ca_file: str | None = None
    tls_cert_file: str | None = None
    tls_key_file: str | None = None
    client_id: str | None = None
    batch_size: int = Field(default=200, ge=1, le=5000)
    max_inflight_batches: int = Field(default=4, ge=1, le=64)
    ack_timeout_s: float = Field(default=10.0, gt=0)
    keepalive_s: int = Field(default=30, ge=5, le=3600)
    historical_after_s: float = Field(default=300.0, gt=0)
    # Batches go out zlib-compressed (docs/uplink.md); false for a receiver of a
    # release before compression.
    compress: bool = True
    # The largest data payload sent, in bytes on the wire; a batch that encodes
    # bigger is cut before it is sent. Keep it under the broker's message_size_limit.
    max_payload_bytes: int = Field(default=256 * 1024, ge=512, le=1 << 20)
    # After a lost connection, wait a random time in [0, min(reconnect_max_s,
    # reconnect_min_s * 2**attempt)] ("full jitter") before each attempt.
    reconnect_min_s: float = Field(default=0.5, gt=0)
    reconnect_max_s: float = Field(default=4.0, gt=0, le=3600)

    @model_validator(mode="after")
    def _check_url(self) -> "UplinkSection":
        try:
            address = parse_broker_url(self.broker_url)
        except ValueError:
            raise ValueError("broker_url must look like mqtt://host:port or "
                             "mqtts://host:port") from None
        tls_keys = [k for k in ("tls_ca_file", "tls_cert_file", "tls_key_file")
                    if getattr(self, k) is not None]
        if tls_keys and not address.tls:
            raise ValueError(f"{tls_keys[0]} needs a mqtts:// broker_url")
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("tls_cert_file and tls_key_file go together")
        given = [k for k in ("password", "password_env", "password_file")
                 if getattr(self, k) is not None]
        if len(given) > 1:
            raise ValueError(f"give only one of {', '.join(given)}")
        if self.reconnect_min_s > self.reconnect_max_s:
            raise ValueError("reconnect_min_s is above reconnect_max_s")
        return self

    @property
    def host(self) -> str:
        return parse_broker_url(self.broker_url).host

    @property
    def port(self) -> int:
        return parse_broker_url(self.broker_url).port

    @property
    def tls(self) -> bool:
        return parse_broker_url(self.broker_url).tls


class DeviceSection(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_-]+$")
    unit_id: int = Field(ge=0, le=247)
    profile: str
    poll_interval_s: float = Field(default=5.0, gt=0)
    timeout_s: float | None = Field(default=None, gt=0)
    retries: int | None = Field(default=None, ge=0, le=10)
    backoff_max_s: float = Field(
        default=60.0, gt=0, description="longest wait between polls of a silent device"
    )
    address_offset: int = Field(default=0, ge=0, le=65000)
    points: list[str] = Field(default_factory=list)
    ranges: dict[str, tuple[float | None, float | None]] = Field(default_factory=dict)


class BusSection(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_-]+$")
    kind: Literal["tcp", "rtu", "rtu_over_tcp"]
    host: str | None = None
    port: int | None = Field(default=None, ge=1, le=65535)
    serial_port: str | None = None
    baudrate: int = Field(default=9600, ge=300, le=921600)
    parity: Literal["N", "E", "O"] = "N"
    stopbits: Literal[1, 2] = 1
    bytesize: Literal[7, 8] = 8
    timeout_s: float = Field(default=1.0, gt=0, le=60)
    retries: int = Field(default=1, ge=0, le=10)
    devices: list[DeviceSection] = Field(default_factory=list)

    @model_validator(mode="after")
    def _check_transport(self) -> "BusSection":
        if self.kind == "rtu" and not self.serial_port:
            raise ValueError("a rtu bus needs serial_port")
        if self.kind != "rtu" and (not self.host or not self.port):
            raise ValueError(f"a {self.kind} bus needs host and port")
        return self


class RelaySection(_Strict):
    device: str
    point: str
    active_high: bool = True


class AlarmSection(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    point: str = Field(description="device.point")
    kind: Literal["high", "low", "on", "off", "stale", "rate", "cusum"]
    # high/low: the limit in the point's unit; rate: the rate in its unit per hour.
    setpoint: float | None = None
    hysteresis: float = Field(default=0.0, ge=0)
    # high/low instead of setpoint: a fraction of a standard's class limit, resolved
    # at load into the point's unit: standard = "GB/T 14848 III", parameter = "ammonia".
    setpoint_fraction: float | None = Field(default=None, gt=0)
    standard: str | None = None
    parameter: str | None = None
    # stale: raised when the point's good value has not changed for max_age_s (a
    # heartbeat counter that stops, or a device that stops answering).
    max_age_s: float | None = Field(default=None, gt=0)
    # rate: least-squares slope of the good values of the last window_s seconds.
    window_s: float | None = Field(default=None, gt=0)
    direction: Literal["rising", "falling"] = "rising"
    # cusum: intrawell Shewhart-CUSUM against a fixed baseline (mean and sd) or one
    # learned from the first baseline_n charted values and kept in the store.
    baseline_mean: float | None = None
    baseline_sd: float | None = Field(default=None, gt=0)
    baseline_n: int = Field(default=MIN_BASELINE, ge=MIN_BASELINE, le=10_000)
    h: float = Field(default=DEFAULT_H, gt=0)
    k: float = Field(default=DEFAULT_K, ge=0)
    scl: float = Field(default=DEFAULT_SCL, gt=0)
    # cusum: chart the mean of each interval_s of good values (0: every value).
    interval_s: float = Field(default=0.0, ge=0)
    latch: bool = False
    severity: Literal["info", "warning", "critical"] = "warning"
    relays: list[str] = Field(default_factory=list)
    message: str = ""
    # A digital input ("device.point") whose rising edge acknowledges this alarm.
    ack_input: str | None = None

    @model_validator(mode="after")
    def _check_setpoint(self) -> "AlarmSection":
        fraction = self.setpoint_fraction is not None
        if fraction:
            if self.kind not in ("high", "low"):
                raise ValueError("setpoint_fraction goes with kind high or low")
            if self.setpoint is not None:
                raise ValueError("give setpoint or setpoint_fraction, not both")
            if not self.standard or not self.parameter:
                raise ValueError("setpoint_fraction needs standard and parameter")
        elif self.standard is not None or self.parameter is not None:
            raise ValueError("standard and parameter go with setpoint_fraction")
        needs = self.kind in ("high", "low", "rate")
        if needs and self.setpoint is None and not fraction:
            raise ValueError(f"a {self.kind} alarm needs setpoint")
        if self.kind == "rate" and self.setpoint is not None and self.setpoint <= 0:
            raise ValueError("a rate alarm's setpoint (per hour) must be above 0; "
                             'direction = "falling" for a falling rate')
        if (self.kind == "stale") != (self.max_age_s is not None):
            raise ValueError("max_age_s goes with kind = \"stale\", and only with it")
        if (self.kind == "rate") != (self.window_s is not None):
            raise ValueError("window_s goes with kind = \"rate\", and only with it")
        if (self.baseline_mean is None) != (self.baseline_sd is None):
            raise ValueError("baseline_mean and baseline_sd go together")
        if self.kind != "cusum" and self.baseline_mean is not None:
            raise ValueError("baseline_mean goes with kind = \"cusum\"")
        return self


class SiteConfig(_Strict):
    site: SiteSection
    gateway: GatewaySection
    uplink: UplinkSection = Field(default_factory=UplinkSection)
    buses: list[BusSection] = Field(default_factory=list)
    relays: dict[str, RelaySection] = Field(default_factory=dict)
    alarms: list[AlarmSection] = Field(default_factory=list)
    tanks: list[TankSection] = Field(default_factory=list)
    cables: list[CableSection] = Field(default_factory=list)
    simulation: dict[str, Any] = Field(
        default_factory=dict, description="read by `groundwatch simulate` only"
    )

    # Filled in by load_config: where the file lives, and each device's register map.
    base_dir: Path = Path(".")
    source: str = Field(default="site configuration", exclude=True)
    maps: dict[str, DeviceMap] = Field(default_factory=dict, exclude=True)

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)

    def devices(self) -> list[tuple[BusSection, DeviceSection]]:
        return [(bus, dev) for bus in self.buses for dev in bus.devices]

    def device(self, name: str) -> DeviceSection:
        for _, dev in self.devices():
            if dev.name == name:
                return dev
        raise KeyError(name)

    @property
    def data_dir(self) -> Path:
        return (self.base_dir / self.gateway.data_dir).resolve()


def _cross_check(cfg: SiteConfig, source: str) -> None:
    """Checks that span sections: names unique, references resolve to real points."""
    seen_bus: set[str] = set()
    seen_dev: dict[str, Profile] = {}
    for b, bus in enumerate(cfg.buses):
        if bus.name in seen_bus:
            raise ConfigError(source, f"buses[{b}].name", f"duplicate bus {bus.name!r}")
        seen_bus.add(bus.name)
        units: set[int] = set()
        for d, dev in enumerate(bus.devices):
            path = f"buses[{b}].devices[{d}]"
            if dev.name in seen_dev:
                raise ConfigError(source, f"{path}.name", f"duplicate device {dev.name!r}")
            if dev.unit_id in units:
                raise ConfigError(
                    source, f"{path}.unit_id", f"unit id {dev.unit_id} used twice on bus"
                )
            units.add(dev.unit_id)
            try:
                profile = load_profile(dev.profile, str(cfg.base_dir))
            except ConfigError as exc:
                raise ConfigError(
                    source, f"{path}.profile", f"{exc.source}: {exc.path} {exc.message}"
                ) from None
            seen_dev[dev.name] = profile
            for key in list(dev.points) + list(dev.ranges):
                if key not in profile.points:
                    raise ConfigError(
                        source, f"{path}.points",
                        f"profile {profile.name} has no point {key!r}",
                    )
            cfg.maps[dev.name] = DeviceMap(
                profile, dev.points, dev.address_offset, dict(dev.ranges)
            )

    def resolve(path: str, ref: str, writable: bool = False) -> None:
        dev, _, point = ref.partition(".")
        if dev not in seen_dev:
            raise ConfigError(source, path, f"no device {dev!r}")
        prof = seen_dev[dev]
        if point not in prof.points:
            raise ConfigError(source, path, f"device {dev!r} has no point {point!r}")
        if writable and not prof.points[point].writable:
            raise ConfigError(source, path, f"point {ref!r} is not writable")

    for name, relay in cfg.relays.items():
        resolve(f"relays.{name}.point", f"{relay.device}.{relay.point}", writable=True)
    def polled(path: str, ref: str) -> None:
        dev, _, point = ref.partition(".")
        if point not in cfg.maps[dev].points:
            raise ConfigError(source, path, f"device {dev!r} does not poll {point!r} "
                              "(add it to its points)")

    if cfg.gateway.ack_input:
        resolve("gateway.ack_input", cfg.gateway.ack_input)
        polled("gateway.ack_input", cfg.gateway.ack_input)
    if cfg.gateway.healthy_relay and cfg.gateway.healthy_relay not in cfg.relays:
        raise ConfigError(
            source, "gateway.healthy_relay", f"no relay {cfg.gateway.healthy_relay!r}"
        )
    names: set[str] = set()
    for a, alarm in enumerate(cfg.alarms):
        if alarm.name in names:
            raise ConfigError(source, f"alarms[{a}].name", f"duplicate alarm {alarm.name!r}")
        names.add(alarm.name)
        resolve(f"alarms[{a}].point", alarm.point)
        if alarm.setpoint_fraction is not None:
            dev_name, _, point = alarm.point.partition(".")
            unit = seen_dev[dev_name].points[point].unit
            alarm.setpoint = _class_setpoint(alarm, unit, source, f"alarms[{a}]")
        if alarm.ack_input:
            resolve(f"alarms[{a}].ack_input", alarm.ack_input)
            polled(f"alarms[{a}].ack_input", alarm.ack_input)
        for r, relay_name in enumerate(alarm.relays):
            if relay_name not in cfg.relays:
                raise ConfigError(
                    source, f"alarms[{a}].relays[{r}]", f"no relay {relay_name!r}"
                )


def _class_setpoint(alarm: AlarmSection, unit: str, source: str, path: str) -> float:
    """setpoint_fraction x the class limit of a standard, in the point's unit."""
    name, _, cls = (alarm.standard or "").strip().rpartition(" ")
    if name.replace(" ", "").upper() not in ("GB/T14848", "GB/T14848-2017"):
        raise ConfigError(source, f"{path}.standard", f"{alarm.standard!r}: only "
                          '"GB/T 14848 <class>" (classes I-IV) is known')
    if cls not in standards.CLASSES[:4]:
        raise ConfigError(source, f"{path}.standard", f"class {cls!r} is not I-IV")
    row = standards.groundwater_limit(alarm.parameter or "")
    if row is None:
        raise ConfigError(source, f"{path}.parameter",
                          f"{alarm.parameter!r} is not in GB/T 14848")
    if row.ph_ranges is not None:
        raise ConfigError(source, f"{path}.parameter",
                          "pH is a range, not a limit: use high and low setpoints")
    if not standards.is_concentration(unit):
        raise ConfigError(source, f"{path}.setpoint_fraction",
                          f"point {alarm.point} is in {unit or 'no unit'!r}, not a "
                          f"concentration comparable with {row.unit}")
    if cls not in row.checked:
        log.warning("alarm %s: class %s limit of %s is not cross-checked "
                    "(groundwatch/data/standards/SOURCE.md)", alarm.name, cls,
                    row.parameter)
    assert alarm.setpoint_fraction is not None
    return alarm.setpoint_fraction * row.limit(cls, unit)


def parse_config(data: dict[str, Any], source: str, base_dir: Path) -> SiteConfig:
    """Validate an already-parsed TOML document."""
    try:
        cfg = SiteConfig.model_validate(
            {**data, "base_dir": base_dir, "source": source})
    except ValidationError as exc:
        raise from_validation_error(source, exc) from None
    _cross_check(cfg, source)
    _cross_check_leaks(cfg, source)
    return cfg


def load_config(path: str | Path) -> SiteConfig:
    """Load and validate a site configuration; raise ConfigError naming the key."""
    path = Path(path)
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(str(path), "", "file not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(str(path), "", f"not valid TOML: {exc}") from None
    for internal in ("base_dir", "maps", "source"):
        if internal in data:
            raise ConfigError(str(path), internal, "unknown key")
    return parse_config(data, str(path), path.resolve().parent)
