"""Tank charts over arrays, thermistor weighting and temperature compensation."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]

L_PER_US_GAL = 3.785411784
MM_PER_INCH = 25.4
SHAPES = ("horizontal_cylinder", "vertical_cylinder", "table")


def horizontal_cylinder_l(
    level_mm: npt.ArrayLike, diameter_mm: float, length_mm: float
) -> FloatArray:
    """Litres in a horizontal cylinder with flat ends filled to level_mm (vectorised)."""
    r = diameter_mm / 2
    h = np.clip(np.asarray(level_mm, dtype=float), 0.0, diameter_mm)
    # The wetted cross-section is a circular segment of height h.
    segment_mm2 = r * r * np.arccos((r - h) / r) - (r - h) * np.sqrt(
        np.maximum(2 * r * h - h * h, 0.0)
    )
    return np.asarray(segment_mm2 * length_mm / 1e6, dtype=float)


def vertical_cylinder_l(level_mm: npt.ArrayLike, diameter_mm: float) -> FloatArray:
    """Litres in an upright cylinder filled to level_mm (vectorised)."""
    h = np.maximum(np.asarray(level_mm, dtype=float), 0.0)
    return np.asarray(np.pi * (diameter_mm / 2) ** 2 * h / 1e6, dtype=float)


@dataclass(frozen=True)
class TankChart:
    """Volume as a function of level: a cylinder, or a calibration table."""

    shape: str
    diameter_mm: float = 0.0
    length_mm: float = 0.0
    table_level_mm: tuple[float, ...] = ()
    table_volume_l: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        if self.shape not in SHAPES:
            raise ValueError(f"shape must be one of {', '.join(SHAPES)}, "
                             f"not {self.shape!r}")
        if self.shape == "table":
            lv, vol = np.asarray(self.table_level_mm), np.asarray(self.table_volume_l)
            if len(lv) < 2 or len(lv) != len(vol):
                raise ValueError("a calibration table needs at least two rows of "
                                 "level and volume, as many of each")
            if np.any(np.diff(lv) <= 0) or np.any(np.diff(vol) < 0):
                raise ValueError("calibration table levels must increase and volumes "
                                 "must not decrease")
        else:
            if self.diameter_mm <= 0:
                raise ValueError("diameter_mm must be positive")
            if self.shape == "horizontal_cylinder" and self.length_mm <= 0:
                raise ValueError("length_mm must be positive")

    @property
    def height_mm(self) -> float:
        """Highest level the chart covers."""
        if self.shape == "table":
            return float(self.table_level_mm[-1])
        if self.shape == "horizontal_cylinder":
            return self.diameter_mm
        return float("inf")

    def volume_l(self, level_mm: npt.ArrayLike) -> FloatArray:
        """Litres below level_mm; a table interpolates linearly between its rows."""
        if self.shape == "horizontal_cylinder":
            return horizontal_cylinder_l(level_mm, self.diameter_mm, self.length_mm)
        if self.shape == "vertical_cylinder":
            return vertical_cylinder_l(level_mm, self.diameter_mm)
        lv = np.asarray(level_mm, dtype=float)
        return np.asarray(
            np.interp(lv, self.table_level_mm, self.table_volume_l), dtype=float
        )

    def level_mm(self, volume_l: npt.ArrayLike, top_mm: float | None = None) -> FloatArray:
        """Inverse chart: the level that holds volume_l (interpolated on a fine grid)."""
        top = top_mm if top_mm is not None else self.height_mm
        if not np.isfinite(top):
            area_mm2 = np.pi * (self.diameter_mm / 2) ** 2
            return np.asarray(np.asarray(volume_l, dtype=np.float64) * 1e6 / area_mm2)
        grid = np.linspace(0.0, top, 20001)
        vol = np.asarray(volume_l, dtype=np.float64)
        return np.asarray(np.interp(vol, self.volume_l(grid), grid), dtype=np.float64)


def us_gal(volume_l: npt.ArrayLike) -> FloatArray:
    """US gallons in volume_l litres."""
    return np.asarray(np.asarray(volume_l, dtype=float) / L_PER_US_GAL, dtype=float)


@dataclass(frozen=True)
class Product:
    """A stored product and its cubical thermal expansion coefficient."""

    name: str
    expansion_per_c: float
    reference_c: float = 15.0


# Typical cubical expansion coefficients near 15 °C; a site configures its own.
PRODUCTS = {
    "gasoline": Product("gasoline", 0.00095),
    "diesel": Product("diesel", 0.00083),
}


@dataclass(frozen=True)
class Tank:
    """A tank as the leak test needs it: chart, product, thermistor heights."""

    chart: TankChart
    product: Product
    thermistor_mm: tuple[float, ...] = field(default=())


def thermistor_weights(
    chart: TankChart, thermistor_mm: tuple[float, ...] | list[float], level_mm: float,
    slices: int = 400,
) -> FloatArray:
    """Volume weights of each thermistor in the product's average temperature.

    The temperature profile is taken as linear between submerged thermistors and
    constant beyond the outermost ones; it is integrated over the volume of thin
    horizontal slices below level_mm, so each thermistor counts for the product it
    represents. Thermistors above the level get weight 0.
    """
    heights = np.asarray(thermistor_mm, dtype=float)
    weights = np.zeros(len(heights))
    wet = np.flatnonzero(heights < level_mm)
    if len(wet) == 0:
        # No thermistor in product: the lowest one is the best guess there is.
        weights[int(np.argmin(heights))] = 1.0
        return weights
    if len(wet) == 1:
        weights[wet[0]] = 1.0
        return weights
    edges = np.linspace(0.0, level_mm, slices + 1)
    dv = np.diff(chart.volume_l(edges))
    mid = (edges[:-1] + edges[1:]) / 2
    order = wet[np.argsort(heights[wet])]
    hs = heights[order]
    # Linear interpolation weights of each slice's midpoint onto the thermistors.
    for j, h in enumerate(hs):
        basis = np.interp(mid, hs, np.eye(len(hs))[j])
        weights[order[j]] = float(np.sum(basis * dv))
    total = weights.sum()
    return weights / total if total > 0 else weights


def average_temperature_c(temperature_c: npt.ArrayLike, weights: FloatArray) -> FloatArray:
    """Volume-weighted product temperature per sample; temperature_c is (n, k)."""
    temps = np.asarray(temperature_c, dtype=float)
    if temps.ndim == 1:
        return np.asarray(temps, dtype=float)
    return np.asarray(temps @ weights, dtype=float)


def compensated_volume_l(
    volume_l: npt.ArrayLike, temperature_c: npt.ArrayLike, product: Product
) -> FloatArray:
    """Volume at the reference temperature: V (1 - beta (T - T_ref))."""
    v = np.asarray(volume_l, dtype=float)
    t = np.asarray(temperature_c, dtype=float)
    return np.asarray(v * (1 - product.expansion_per_c * (t - product.reference_c)),
                      dtype=float)
