"""`[[tanks]]` and `[[cables]]` of the site configuration: leak tests, cable zones."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from drivers.errors import ConfigError
from leak_detection.cable import Zone

if TYPE_CHECKING:
    from edge.config import SiteConfig
    from leak_detection.static_test import LeakTestSettings
    from leak_detection.tank import Tank

# leak_detection.tank and .static_test import numpy: only a site with tanks loads it.

NAME = r"^[A-Za-z0-9_.-]+$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TankSection(_Strict):
    """One tank on a gauge: its chart, product, test rules and alarm relays."""

    name: str = Field(pattern=NAME)
    device: str
    level_point: str = "level_mm"
    # One point (the gauge's average) or one per thermistor, bottom to top.
    temperature_points: list[str] = Field(default_factory=lambda: ["temperature_c"],
                                          min_length=1)
    thermistor_heights_mm: list[float] = Field(default_factory=list)
    shape: Literal["horizontal_cylinder", "vertical_cylinder", "table"]
    diameter_mm: float | None = Field(default=None, gt=0)
    length_mm: float | None = Field(default=None, gt=0)
    levels_mm: list[float] = Field(default_factory=list)
    volumes_l: list[float] = Field(default_factory=list)
    product: str = "gasoline"
    expansion_per_c: float | None = Field(default=None, gt=0)
    reference_c: float = 15.0
    # Static test (docs/leak_detection.md): target 0.2 gal/h monthly, 0.1 tightness.
    target_gph: float = Field(default=0.2, gt=0)
    threshold_fraction: float = Field(default=0.5, gt=0, le=1)
    delivery_settle_h: float = Field(default=8.0, ge=0)
    dispensing_settle_h: float = Field(default=0.5, ge=0)
    min_test_h: float = Field(default=1.0, gt=0)
    max_test_h: float = Field(default=3.0, gt=0)
    max_settle_h: float = Field(default=24.0, gt=0)
    # The waiting rule after a movement (leak_detection.static_test.LeakTestSettings).
    max_temperature_rate_c_per_h: float = Field(default=0.2 * 5 / 9, gt=0)
    max_gradient_rate_c_per_h: float = Field(default=0.07, gt=0)
    settle_check_h: float = Field(default=2.0, gt=0)
    settle_step_h: float = Field(default=0.5, gt=0)
    event_l: float = Field(default=3.0, gt=0)
    block_s: float = Field(default=60.0, gt=0)
    # The rolling window the gateway keeps: one sample per sample_s, window_h long.
    sample_s: float = Field(default=10.0, gt=0)
    window_h: float = Field(default=36.0, gt=0)
    check_interval_s: float = Field(default=60.0, gt=0)
    # Tank seconds per gateway second: 1 on a site. A simulated tank played faster
    # than real time (`groundwatch simulate --speed`) sets the speed here, so that
    # rates are per hour of the tank's time and the waits above are in its hours.
    time_scale: float = Field(default=1.0, gt=0)
    fail_relays: list[str] = Field(default_factory=list)
    # Sudden loss: more than sudden_loss_l within sudden_loss_window_s, watched in
    # closed_hours (local [start, end) hours, e.g. [[22, 6]]) when no product is sold.
    sudden_loss_l: float | None = Field(default=None, gt=0)
    sudden_loss_window_s: float = Field(default=600.0, gt=0)
    sudden_loss_relays: list[str] = Field(default_factory=list)
    closed_hours: list[tuple[float, float]] = Field(default_factory=list)
    latch: bool = True

    @model_validator(mode="after")
    def _check(self) -> "TankSection":
        if self.shape == "table":
            if len(self.levels_mm) < 2 or len(self.levels_mm) != len(self.volumes_l):
                raise ValueError("a table tank needs levels_mm and volumes_l, at least "
                                 "two of each and as many of each")
        elif self.diameter_mm is None:
            raise ValueError(f"a {self.shape} tank needs diameter_mm")
        if self.shape == "horizontal_cylinder" and self.length_mm is None:
            raise ValueError("a horizontal_cylinder tank needs length_mm")
        k = len(self.temperature_points)
        if k > 1 and len(self.thermistor_heights_mm) != k:
            raise ValueError(f"{k} temperature_points need as many "
                             "thermistor_heights_mm")
        from leak_detection.tank import PRODUCTS

        if self.expansion_per_c is None and self.product not in PRODUCTS:
            raise ValueError(f"product {self.product!r} needs expansion_per_c (known: "
                             f"{', '.join(sorted(PRODUCTS))})")
        if self.min_test_h > self.max_test_h:
            raise ValueError("min_test_h is longer than max_test_h")
        if self.window_h < self.delivery_settle_h + self.max_test_h:
            raise ValueError("window_h must hold delivery_settle_h + max_test_h")
        for start, end in self.closed_hours:
            if not (0 <= start <= 24 and 0 <= end <= 24):
                raise ValueError("closed_hours are [start, end] hours between 0 and 24")
        if self.sudden_loss_l is None and self.sudden_loss_relays:
            raise ValueError("sudden_loss_relays need sudden_loss_l")
        return self

    @property
    def fail_alarm(self) -> str:
        return f"{self.name}-leak-test"

    @property
    def loss_alarm(self) -> str:
        return f"{self.name}-sudden-loss"

    def tank(self) -> Tank:
        """The tank as leak_detection describes it."""
        from leak_detection.tank import PRODUCTS, Product, Tank, TankChart

        if self.shape == "table":
            chart = TankChart("table", table_level_mm=tuple(self.levels_mm),
                              table_volume_l=tuple(self.volumes_l))
        else:
            chart = TankChart(self.shape, self.diameter_mm or 0.0,
                              self.length_mm or 0.0)
        beta = self.expansion_per_c or PRODUCTS[self.product].expansion_per_c
        return Tank(chart, Product(self.product, beta, self.reference_c),
                    tuple(self.thermistor_heights_mm))

    def settings(self) -> LeakTestSettings:
        """The static test's settings; the gateway has no history at start."""
        from leak_detection.static_test import LeakTestSettings

        return LeakTestSettings(
            target_gph=self.target_gph, threshold_fraction=self.threshold_fraction,
            delivery_settle_s=self.delivery_settle_h * 3600,
            dispensing_settle_s=self.dispensing_settle_h * 3600,
            min_test_s=self.min_test_h * 3600, max_test_s=self.max_test_h * 3600,
            max_settle_s=self.max_settle_h * 3600, event_l=self.event_l,
            block_s=self.block_s, settled_at_start=False,
            max_temperature_rate_c_per_h=self.max_temperature_rate_c_per_h,
            max_gradient_rate_c_per_h=self.max_gradient_rate_c_per_h,
            settle_check_s=self.settle_check_h * 3600,
            settle_step_s=self.settle_step_h * 3600)


class ZoneSection(_Strict):
    """A stretch of cable (a trench, a bund) and the landmark it is told from."""

    name: str
    start_m: float = Field(ge=0)
    end_m: float = Field(ge=0)
    reference: str = ""
    reference_m: float | None = None

    @model_validator(mode="after")
    def _check(self) -> "ZoneSection":
        if self.end_m < self.start_m:
            raise ValueError("end_m is before start_m")
        return self


class CableSection(_Strict):
    """A leak-cable controller's leak alarm, located in named zones."""

    name: str = Field(pattern=NAME)
    device: str
    leak_point: str = "leak"
    distance_point: str = "leak_distance_m"
    length_point: str | None = "cable_length_m"
    zones: list[ZoneSection] = Field(default_factory=list)
    # A leak reported more than spread_m from where it alarmed alarms again.
    spread_m: float = Field(default=2.0, gt=0)
    relays: list[str] = Field(default_factory=list)
    latch: bool = True
    severity: Literal["info", "warning", "critical"] = "critical"
    message: str = "Leak on the sensing cable"

    def zone_list(self) -> tuple[Zone, ...]:
        return tuple(Zone(z.name, z.start_m, z.end_m, z.reference, z.reference_m)
                     for z in self.zones)


def cross_check(cfg: SiteConfig, source: str) -> None:
    """Devices, points and relays of [[tanks]] and [[cables]] resolve; names unique."""
    names = {a.name for a in cfg.alarms}

    def point(path: str, device: str, name: str) -> None:
        if device not in cfg.maps:
            raise ConfigError(source, path, f"no device {device!r}")
        if name not in cfg.maps[device].points:
            raise ConfigError(source, path, f"device {device!r} does not poll {name!r}")

    def alarm(path: str, name: str) -> None:
        if name in names:
            raise ConfigError(source, path, f"alarm name {name!r} used twice")
        names.add(name)

    def relays(path: str, listed: list[str]) -> None:
        for r, relay in enumerate(listed):
            if relay not in cfg.relays:
                raise ConfigError(source, f"{path}[{r}]", f"no relay {relay!r}")

    for i, tank in enumerate(cfg.tanks):
        path = f"tanks[{i}]"
        point(f"{path}.level_point", tank.device, tank.level_point)
        for j, name in enumerate(tank.temperature_points):
            point(f"{path}.temperature_points[{j}]", tank.device, name)
        alarm(f"{path}.name", tank.fail_alarm)
        alarm(f"{path}.name", tank.loss_alarm)
        relays(f"{path}.fail_relays", tank.fail_relays)
        relays(f"{path}.sudden_loss_relays", tank.sudden_loss_relays)
        try:
            tank.tank()
        except ValueError as exc:
            raise ConfigError(source, path, str(exc)) from None
    for i, cable in enumerate(cfg.cables):
        path = f"cables[{i}]"
        point(f"{path}.leak_point", cable.device, cable.leak_point)
        point(f"{path}.distance_point", cable.device, cable.distance_point)
        if cable.length_point:
            point(f"{path}.length_point", cable.device, cable.length_point)
        alarm(f"{path}.name", cable.name)
        relays(f"{path}.relays", cable.relays)
