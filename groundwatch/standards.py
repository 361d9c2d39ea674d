"""Standards as data: GB/T 14848-2017 groundwater classes, GB 36600-2018 soil values.

Shared by the gateway (alarm setpoints as a fraction of a class limit) and the cloud
(classes, exceedances, verdicts): stdlib only, the tables are CSV files in
groundwatch/data/standards/ (one copy, see its SOURCE.md).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

HERE = Path(__file__).parent / "data" / "standards"
CLASSES = ("I", "II", "III", "IV", "V")

# Concentration units to a base unit per matrix: water to mg/L, soil to mg/kg. In
# dilute water ppm and ppb are taken as mg/L and µg/L (density 1 kg/L).
_WATER = {"mg/l": 1.0, "ug/l": 1e-3, "µg/l": 1e-3, "μg/l": 1e-3, "ng/l": 1e-6,
          "g/l": 1e3, "ppm": 1.0, "ppb": 1e-3}
_SOIL = {"mg/kg": 1.0, "ug/kg": 1e-3, "µg/kg": 1e-3, "μg/kg": 1e-3, "g/kg": 1e3}


class UnitError(ValueError):
    """A unit is unknown, or cannot be converted to the other."""


def _unit_key(unit: str) -> str:
    return unit.strip().lower().replace(" ", "").replace("mcg", "ug")


def convert(value: float, from_unit: str, to_unit: str) -> float:
    """Convert a concentration between mg/L, µg/L, ng/L (or mg/kg, µg/kg)."""
    src, dst = _unit_key(from_unit), _unit_key(to_unit)
    if src == dst:
        return value
    for table in (_WATER, _SOIL):
        if src in table and dst in table:
            return value * table[src] / table[dst]
    raise UnitError(f"cannot convert {from_unit!r} to {to_unit!r}")


def is_concentration(unit: str) -> bool:
    """Whether the unit is one `convert` knows."""
    key = _unit_key(unit)
    return key in _WATER or key in _SOIL


def is_soil_unit(unit: str) -> bool:
    """Whether the unit is a soil concentration (mg/kg, µg/kg, g/kg)."""
    return _unit_key(unit) in _SOIL


def _norm(name: str) -> str:
    return " ".join(name.strip().lower().replace("_", " ").split())


@dataclass(frozen=True, slots=True)
class GroundwaterLimit:
    """Class I-IV limits of one parameter (class V is above class IV)."""

    parameter: str
    name_zh: str
    unit: str
    limits: tuple[float, float, float, float]
    ph_ranges: tuple[tuple[float, float], ...] | None
    checked: tuple[str, ...]

    def limit(self, cls: str, unit: str | None = None) -> float:
        """Upper limit of class I-IV in `unit` (default: the standard's unit)."""
        value = self.limits[CLASSES.index(cls)]
        return convert(value, self.unit, unit) if unit else value

    def classify(self, value: float, unit: str) -> str:
        """The class (I-V) of a result given in `unit`."""
        if self.ph_ranges is not None:
            for cls, (low, high) in zip(CLASSES, self.ph_ranges):
                if low <= value <= high:
                    return cls
            return "V"
        x = convert(value, unit, self.unit)
        for cls, limit in zip(CLASSES, self.limits):
            if x <= limit:
                return cls
        return "V"


@dataclass(frozen=True, slots=True)
class SoilLimit:
    """GB 36600-2018 class-2 land screening and intervention values."""

    parameter: str
    name_zh: str
    unit: str
    screening: float
    intervention: float
    checked: bool

    def assess(self, value: float, unit: str) -> str:
        """'below screening', 'above screening' or 'above intervention'."""
        x = convert(value, unit, self.unit)
        if x > self.intervention:
            return "above intervention"
        return "above screening" if x > self.screening else "below screening"


def _rows(name: str) -> list[dict[str, str]]:
    with open(HERE / name, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _range(text: str) -> tuple[float, float]:
    low, high = text.split("-")
    return float(low), float(high)


@lru_cache(maxsize=1)
def groundwater_table() -> dict[str, GroundwaterLimit]:
    """GB/T 14848-2017 limits by parameter id."""
    out = {}
    for row in _rows("gb14848_2017.csv"):
        cols = [row[f"class_{c.lower()}"] for c in CLASSES[:4]]
        ph = tuple(_range(c) for c in cols) if row["unit"] == "pH" else None
        i, ii, iii, iv = (0.0,) * 4 if ph else (float(c) for c in cols)
        out[row["parameter"]] = GroundwaterLimit(
            row["parameter"], row["name_zh"], row["unit"], (i, ii, iii, iv),
            ph, tuple(row["checked"].split(",")),
        )
    return out


@lru_cache(maxsize=1)
def soil_table() -> dict[str, SoilLimit]:
    """GB 36600-2018 class-2 values by parameter id."""
    return {
        row["parameter"]: SoilLimit(row["parameter"], row["name_zh"], row["unit"],
                                    float(row["screening_class2"]),
                                    float(row["intervention_class2"]),
                                    row["checked"] == "yes")
        for row in _rows("gb36600_2018.csv")
    }


@lru_cache(maxsize=1)
def _aliases() -> dict[str, str]:
    out: dict[str, str] = {}
    for name in ("gb14848_2017.csv", "gb36600_2018.csv"):
        for row in _rows(name):
            pid = row["parameter"]
            for alias in [pid, row["name_zh"], *row["aliases"].split("|")]:
                if alias:
                    out.setdefault(_norm(alias), pid)
    return out


def parameter_id(name: str) -> str | None:
    """The table id of a constituent name as labs write it, or None if not tabled."""
    return _aliases().get(_norm(name))


def groundwater_limit(name: str) -> GroundwaterLimit | None:
    """The GB/T 14848 row of a constituent (any alias), or None."""
    pid = parameter_id(name)
    return groundwater_table().get(pid) if pid else None


def soil_limit(name: str) -> SoilLimit | None:
    """The GB 36600 row of a constituent (any alias), or None."""
    pid = parameter_id(name)
    return soil_table().get(pid) if pid else None
