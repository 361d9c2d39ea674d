"""Simulation models: a device's point values as a function of time.

Every model answers ``values(sim_s, real_s)``: the point values (keyed by profile point
name) at ``sim_s`` simulated seconds since start (real seconds x speed), ``real_s`` real
wall seconds since start. A value of None means "no reading" (the server serves the
point's sentinel). Points a model does not return keep what the server last served
(for a relay module: the coils its clients wrote).
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from drivers.errors import ConfigError
from drivers.profile import Profile
from leak_detection.tank_chart import horizontal_cylinder_volume_l

L_PER_US_GAL = 3.785411784

from .replay import AquaTrollRecord, WellLevelRecord, load_aquatroll, load_well_level

log = logging.getLogger(__name__)

PointValues = dict[str, float | None]

# In-Situ parameter codes served in the probe's "parameter id" registers.
PARAM_TEMPERATURE = 1
PARAM_DEPTH = 3
PARAM_SPECIFIC_CONDUCTIVITY = 10


class OptionError(ValueError):
    """A simulation option that is not valid; `key` names it."""

    def __init__(self, key: str, message: str):
        self.key, self.message = key, message
        super().__init__(f"{key}: {message}")


@dataclass(frozen=True)
class Option:
    """One key a model accepts in its [simulation.<device>] table."""

    kind: type
    minimum: float | None = None

    def check(self, key: str, value: Any) -> Any:
        """The value, converted to the option's kind, or OptionError."""
        if self.kind is float:
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise OptionError(key, f"expected a number, got {value!r}")
            value = float(value)
        elif self.kind is int:
            if isinstance(value, bool) or not isinstance(value, int):
                raise OptionError(key, f"expected an integer, got {value!r}")
        elif not isinstance(value, self.kind):
            raise OptionError(key, f"expected {self.kind.__name__}, got {value!r}")
        if self.minimum is not None and value < self.minimum:
            raise OptionError(key, f"must be at least {self.minimum:g}")
        return value


class DeviceModel:
    """Base class: the point values of one simulated device over time."""

    name: ClassVar[str] = ""
    # Keys of the [simulation.<device>] table besides `model`.
    OPTIONS: ClassVar[dict[str, Option]] = {}
    # Points the device's profile must have for this model to fit it.
    REQUIRED: ClassVar[frozenset[str]] = frozenset()

    def values(self, sim_s: float, real_s: float) -> PointValues:
        """Point values at sim_s simulated and real_s real seconds since start."""
        raise NotImplementedError


class ReplayModel(DeviceModel):
    """Replays recorded samples, one record per STEP_S simulated seconds."""

    STEP_S: ClassVar[float] = 900.0
    OPTIONS = {"loop": Option(bool), "start_index": Option(int, 0)}

    def __init__(
        self,
        records: Sequence[Any] | None = None,
        loop: bool = True,
        start_index: int = 0,
    ):
        self.records: Sequence[Any] = records if records is not None else self._load()
        if not self.records:
            raise ValueError("a replay needs at least one record")
        self.loop = loop
        self.start_index = start_index

    def _load(self) -> Sequence[Any]:
        """The shipped recording this model replays."""
        raise NotImplementedError

    def index(self, sim_s: float) -> int:
        """Record index served at sim_s: loops (or sticks) at the end of the file."""
        i = self.start_index + max(0, math.floor(sim_s / self.STEP_S))
        n = len(self.records)
        return i % n if self.loop else min(i, n - 1)


class AquaTrollReplay(ReplayModel):
    """Well probe replaying the Aqua TROLL 100 export: temperature, conductivity."""

    name = "replay_aquatroll"
    STEP_S = 900.0
    REQUIRED = frozenset({"temperature_c", "conductivity_us_cm"})

    def _load(self) -> Sequence[AquaTrollRecord]:
        return load_aquatroll()

    def values(self, sim_s: float, real_s: float) -> PointValues:
        rec: AquaTrollRecord = self.records[self.index(sim_s)]
        return {
            "temperature_c": rec.temperature_c,
            "conductivity_us_cm": rec.specific_conductivity_us_cm,
            "level_m": None,  # the Aqua TROLL 100 has no pressure sensor
            "temperature_param_id": PARAM_TEMPERATURE,
            "conductivity_param_id": PARAM_SPECIFIC_CONDUCTIVITY,
            "level_param_id": PARAM_DEPTH,
        }


class WellLevelReplay(ReplayModel):
    """Well probe replaying the UGS hourly transducer log: water level in metres."""

    name = "replay_well_level"
    STEP_S = 3600.0
    REQUIRED = frozenset({"level_m"})

    def _load(self) -> Sequence[WellLevelRecord]:
        return load_well_level()

    def values(self, sim_s: float, real_s: float) -> PointValues:
        rec: WellLevelRecord = self.records[self.index(sim_s)]
        return {
            "level_m": rec.level_m,
            "temperature_c": None,  # a level-only transducer
            "conductivity_us_cm": None,
            "level_param_id": PARAM_DEPTH,
            "temperature_param_id": PARAM_TEMPERATURE,
            "conductivity_param_id": PARAM_SPECIFIC_CONDUCTIVITY,
        }


class TankModel(DeviceModel):
    """Buried horizontal tank: daytime dispensing, a refill every other evening.

    Options for leak tests: `leak_gph` (US gal/h of product lost from `leak_from_s`
    simulated seconds on; each refill tops the loss up), `expansion = true` (the level
    follows the product's thermal expansion, as in a real tank; else it ignores the
    temperature), and the daily dispensing hours `dispense_from_h`, `dispense_to_h`
    (the rest of the day is quiet: no product moves).
    """

    name = "tank"
    OPTIONS = {
        "seed": Option(int),
        "diameter_m": Option(float, 0.1),
        "length_m": Option(float, 0.1),
        "level_mm": Option(float, 0.0),
        "water_mm": Option(float, 0.0),
        "leak_gph": Option(float, 0.0),
        "leak_from_s": Option(float, 0.0),
        "expansion": Option(bool),
        "dispense_from_h": Option(float, 0.0),
        "dispense_to_h": Option(float, 0.0),
    }
    REQUIRED = frozenset({"level_mm", "temperature_c", "gross_volume_l"})

    SAMPLE_S = 1.0  # the gauge takes a new (noisy) reading each simulated second
    CYCLE_S = 2 * 86400.0  # dispense two days, refill on the second evening
    DISPENSE_H = (7.0, 19.0)
    DISPENSE_MM_PER_H = 12.5
    REFILL_AT_S = 44 * 3600.0
    REFILL_S = 1200.0
    TEMP_MEAN_C = 14.0
    TEMP_AMPLITUDE_C = 0.3
    TEMP_PEAK_H = 16.0
    EXPANSION_PER_C = 0.00095
    REFERENCE_C = 15.0
    LEVEL_NOISE_MM = 0.05
    TEMP_NOISE_C = 0.01
    HIGH_LEVEL_FRACTION = 0.9

    def __init__(
        self,
        seed: int = 1,
        diameter_m: float = 2.4,
        length_m: float = 6.0,
        level_mm: float = 1800.0,
        water_mm: float = 5.0,
        leak_gph: float = 0.0,
        leak_from_s: float = 0.0,
        expansion: bool = False,
        dispense_from_h: float | None = None,
        dispense_to_h: float | None = None,
    ):
        self.seed = seed
        self.diameter_mm = diameter_m * 1000
        self.length_mm = length_m * 1000
        self.water_mm = water_mm
        self.leak_gph, self.leak_from_s = leak_gph, leak_from_s
        self.expansion = expansion
        hours = (self.DISPENSE_H[0] if dispense_from_h is None else dispense_from_h,
                 self.DISPENSE_H[1] if dispense_to_h is None else dispense_to_h)
        if not 0 <= hours[0] < hours[1] <= 24:
            raise OptionError("dispense_from_h", "dispensing hours must satisfy 0 <= "
                              "dispense_from_h < dispense_to_h <= 24")
        self.dispense_hours = hours
        dispense_h = (hours[1] - hours[0]) * 2
        self.swing_mm = self.DISPENSE_MM_PER_H * dispense_h
        self.top_mm = level_mm + self.swing_mm / 2
        if self.top_mm > self.diameter_mm or level_mm - self.swing_mm / 2 < water_mm:
            raise OptionError(
                "level_mm",
                f"{level_mm:g} +/- {self.swing_mm / 2:g} mm does not fit between the "
                f"water ({water_mm:g} mm) and the tank top ({self.diameter_mm:g} mm)",
            )
        self.capacity_l = horizontal_cylinder_volume_l(
            self.diameter_mm, self.diameter_mm, self.length_mm
        )

    def _dispensing_s(self, t: float) -> float:
        """Seconds of dispensing between the start of the cycle and t."""
        start_s, end_s = (h * 3600 for h in self.dispense_hours)
        total = 0.0
        for day in range(int(self.CYCLE_S // 86400)):
            lo, hi = day * 86400 + start_s, day * 86400 + end_s
            total += max(0.0, min(t, hi) - lo)
        return total

    def level_mm_at(self, sim_s: float) -> float:
        """Noise-free product level (mm) at sim_s: the schedule, less the leak, with
        the product's expansion if `expansion` is set."""
        level = self._schedule_mm(sim_s)
        if not self.leak_gph and not self.expansion:
            return level
        volume_l = self.volume_l(level)
        if self.expansion:
            volume_l *= 1 + self.EXPANSION_PER_C * (
                self.temperature_c_at(sim_s) - self.REFERENCE_C)
        if self.leak_gph:
            # The loss since the leak began or since the last refill topped it up.
            cycle_start = sim_s - sim_s % self.CYCLE_S
            refilled = cycle_start - self.CYCLE_S + self.REFILL_AT_S + self.REFILL_S
            if sim_s % self.CYCLE_S >= self.REFILL_AT_S + self.REFILL_S:
                refilled += self.CYCLE_S
            since_s = sim_s - max(self.leak_from_s, refilled, 0.0)
            volume_l -= self.leak_gph * L_PER_US_GAL * max(since_s, 0.0) / 3600
        return self._level_of(volume_l)

    def _level_of(self, volume_l: float) -> float:
        """Inverse chart by bisection (the chart is monotonic)."""
        lo, hi = 0.0, self.diameter_mm
        for _ in range(50):
            mid = (lo + hi) / 2
            if self.volume_l(mid) < volume_l:
                lo = mid
            else:
                hi = mid
        return (lo + hi) / 2

    def _schedule_mm(self, sim_s: float) -> float:
        """The dispensing and refill schedule's level (mm) at sim_s."""
        t = sim_s % self.CYCLE_S
        bottom = self.top_mm - self.swing_mm
        if t < self.REFILL_AT_S:
            rate_mm_s = self.DISPENSE_MM_PER_H / 3600
            return max(bottom, self.top_mm - rate_mm_s * self._dispensing_s(t))
        if t < self.REFILL_AT_S + self.REFILL_S:
            return bottom + self.swing_mm * (t - self.REFILL_AT_S) / self.REFILL_S
        return self.top_mm

    def temperature_c_at(self, sim_s: float) -> float:
        """Noise-free product temperature (°C) at sim_s: a slow diurnal cycle."""
        hours = (sim_s % 86400) / 3600
        phase = 2 * math.pi * (hours - self.TEMP_PEAK_H + 6) / 24
        return self.TEMP_MEAN_C + self.TEMP_AMPLITUDE_C * math.sin(phase)

    def volume_l(self, height_mm: float) -> float:
        """Litres below height_mm in this tank."""
        return horizontal_cylinder_volume_l(height_mm, self.diameter_mm, self.length_mm)

    def values(self, sim_s: float, real_s: float) -> PointValues:
        tick = max(0, math.floor(sim_s / self.SAMPLE_S))
        rng = random.Random((self.seed << 40) ^ tick)
        level_mm = self.level_mm_at(sim_s) + rng.gauss(0.0, self.LEVEL_NOISE_MM)
        water_mm = max(0.0, self.water_mm + rng.gauss(0.0, self.LEVEL_NOISE_MM))
        temperature_c = self.temperature_c_at(sim_s) + rng.gauss(0.0, self.TEMP_NOISE_C)
        total_l = self.volume_l(level_mm)
        gross_l = total_l - self.volume_l(water_mm)
        expansion = self.EXPANSION_PER_C * (temperature_c - self.REFERENCE_C)
        net_l = gross_l * (1 - expansion)
        high = level_mm > self.HIGH_LEVEL_FRACTION * self.diameter_mm
        return {
            "status": 0,
            "leak_test_in_progress": 0,
            "leak_alarm": 0,
            "high_level_alarm": float(high),
            "probe_fault": 0,
            "level_mm": level_mm,
            "gross_volume_l": gross_l,
            "net_volume_l": net_l,
            "fill_pct": 100 * total_l / self.capacity_l,
            "temperature_c": temperature_c,
            "water_mm": water_mm,
            "ullage_l": self.capacity_l - total_l,
        }


class LeakCableModel(DeviceModel):
    """Leak-detection cable controller: dry until leak_at_s real seconds, then wet."""

    name = "leak_cable"
    OPTIONS = {
        "leak_at_s": Option(float, 0.0),
        "leak_distance_m": Option(float, 0.0),
        "cable_break_at_s": Option(float, 0.0),
        "cable_length_m": Option(int, 1),
    }
    REQUIRED = frozenset({"status", "leak", "leak_distance_dm", "leak_distance_m"})

    LOOP_A_OHM_PER_M = 3.2
    LOOP_B_OHM_PER_M = 3.3
    OPEN_LOOP_OHM = 65535
    LEAK_CURRENT_UA = 240

    def __init__(
        self,
        leak_at_s: float | None = None,
        leak_distance_m: float = 42.5,
        cable_break_at_s: float | None = None,
        cable_length_m: int = 150,
    ):
        if leak_distance_m > cable_length_m:
            raise OptionError(
                "leak_distance_m",
                f"{leak_distance_m:g} m is past the end of the "
                f"{cable_length_m} m cable",
            )
        self.leak_at_s = leak_at_s
        self.leak_distance_m = leak_distance_m
        self.cable_break_at_s = cable_break_at_s
        self.cable_length_m = cable_length_m

    def trigger_leak(self, real_s: float, distance_m: float | None = None) -> None:
        """Make the cable wet from real_s on (at distance_m if given)."""
        if distance_m is not None:
            self.leak_distance_m = float(distance_m)
        if self.leak_at_s is None or self.leak_at_s > real_s:
            self.leak_at_s = real_s
        log.info("leak triggered at %.1f s, %.1f m", real_s, self.leak_distance_m)

    def values(self, sim_s: float, real_s: float) -> PointValues:
        leak = self.leak_at_s is not None and real_s >= self.leak_at_s
        broken = self.cable_break_at_s is not None and real_s >= self.cable_break_at_s
        distance_m = self.leak_distance_m if leak else 0.0
        loop_a = round(self.LOOP_A_OHM_PER_M * self.cable_length_m)
        loop_b = round(self.LOOP_B_OHM_PER_M * self.cable_length_m)
        return {
            "status": int(leak) | int(broken) << 1,
            "leak": float(leak),
            "cable_break": float(broken),
            "contamination": 0,
            "loop_fault": 0,
            "leak_distance_dm": round(distance_m * 10),
            "distance_units": 0,
            "leak_current_ua": self.LEAK_CURRENT_UA if leak else 0,
            "cable_length_m": self.cable_length_m,
            "loop_resistance_a_ohm": self.OPEN_LOOP_OHM if broken else loop_a,
            "loop_resistance_b_ohm": loop_b,
            "leak_distance_m": distance_m,
        }


class RelayModel(DeviceModel):
    """Relay module: coils keep what clients write; digital inputs stay off."""

    name = "relay"

    def values(self, sim_s: float, real_s: float) -> PointValues:
        return {}


MODELS: dict[str, type[DeviceModel]] = {
    m.name: m
    for m in (AquaTrollReplay, WellLevelReplay, TankModel, LeakCableModel, RelayModel)
}

# Model of a device that has no [simulation.<device>] table (or one without `model`).
DEFAULT_MODELS = {
    "tank_gauge": "tank",
    "leak_cable": "leak_cable",
    "well_probe": "replay_aquatroll",
    "relay_module": "relay",
}


def create_model(
    device: str, table: Any, profile: Profile, source: str
) -> DeviceModel:
    """Build the model of one device from its [simulation.<device>] table."""
    where = f"simulation.{device}"
    if table is None:
        table = {}
    if not isinstance(table, dict):
        raise ConfigError(source, where, "must be a table")
    name = table.get("model", DEFAULT_MODELS.get(profile.name))
    if name is None:
        raise ConfigError(
            source, f"{where}.model",
            f"profile {profile.name!r} has no default model; name one of "
            f"{', '.join(sorted(MODELS))}",
        )
    if not isinstance(name, str) or name not in MODELS:
        raise ConfigError(
            source, f"{where}.model",
            f"unknown model {name!r} (have: {', '.join(sorted(MODELS))})",
        )
    cls = MODELS[name]
    missing = sorted(cls.REQUIRED - profile.points.keys())
    if missing:
        raise ConfigError(
            source, f"{where}.model",
            f"model {name!r} does not fit profile {profile.name!r} "
            f"(no point(s) {', '.join(missing)})",
        )
    options: dict[str, Any] = {}
    try:
        for key, value in table.items():
            if key == "model":
                continue
            if key not in cls.OPTIONS:
                keys = ", ".join(sorted(cls.OPTIONS)) or "none"
                raise OptionError(key, f"unknown key (model {name!r} takes: {keys})")
            options[key] = cls.OPTIONS[key].check(key, value)
        return cls(**options)
    except OptionError as exc:
        raise ConfigError(source, f"{where}.{exc.key}", exc.message) from None
