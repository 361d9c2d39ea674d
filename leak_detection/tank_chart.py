"""Tank charts: the volume of product at a given level, for the common tank shapes."""

from __future__ import annotations

import math


def horizontal_cylinder_volume_l(
    height_mm: float, diameter_mm: float, length_mm: float
) -> float:
    """Litres in a horizontal cylinder with flat ends filled to height_mm.

    The wetted cross-section is a circular segment: r^2 acos((r-h)/r) - (r-h) sqrt(2rh-h^2).
    """
    r = diameter_mm / 2
    h = min(max(height_mm, 0.0), diameter_mm)
    segment_mm2 = r * r * math.acos((r - h) / r) - (r - h) * math.sqrt(2 * r * h - h * h)
    return segment_mm2 * length_mm / 1e6


def vertical_cylinder_volume_l(height_mm: float, diameter_mm: float) -> float:
    """Litres in an upright cylinder filled to height_mm."""
    return math.pi * (diameter_mm / 2) ** 2 * max(height_mm, 0.0) / 1e6
