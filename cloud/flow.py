"""Groundwater flow from well heads, and which facilities lie upgradient of a well."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

DEFAULT_SECTOR_DEG = 45.0


class FlowError(ValueError):
    """Heads cannot give a flow direction (too few wells, or collinear)."""


@dataclass(frozen=True, slots=True)
class Flow:
    """Fitted plane head = a x + b y + c, its gradient and where the water goes."""

    a: float
    b: float
    c: float
    gradient: float
    direction_deg: float
    r2: float | None
    n_wells: int

    def to_json(self) -> dict[str, float | int | None]:
        """A JSON-ready dict."""
        return {"gradient": self.gradient, "direction_deg": self.direction_deg,
                "r2": self.r2, "n_wells": self.n_wells, "a": self.a, "b": self.b,
                "c": self.c}


def azimuth_deg(dx: float, dy: float) -> float:
    """Azimuth of the vector (dx east, dy north), clockwise from north, 0-360."""
    return math.degrees(math.atan2(dx, dy)) % 360.0


def fit_flow(x: Sequence[float], y: Sequence[float], head: Sequence[float]) -> Flow:
    """Fit a plane through three or more heads (least squares beyond three).

    The water flows down the gradient, along -(a, b); direction_deg is the azimuth it
    flows toward. r2 is None with exactly three wells (the plane fits exactly).
    """
    xs, ys, hs = (np.asarray(v, dtype=float) for v in (x, y, head))
    n = int(hs.size)
    if n < 3:
        raise FlowError(f"a flow direction needs heads at 3 or more wells, got {n}")
    design = np.column_stack([xs, ys, np.ones(n)])
    # Collinear wells leave the plane's tilt across their line undetermined.
    centred = np.column_stack([xs - xs.mean(), ys - ys.mean()])
    sv = np.linalg.svd(centred, compute_uv=False)
    if sv[-1] <= 1e-6 * max(sv[0], 1e-12):
        raise FlowError("the wells are collinear: no flow direction across their line")
    (a, b, c), *_ = np.linalg.lstsq(design, hs, rcond=None)
    r2 = None
    if n > 3:
        resid = hs - design @ np.array([a, b, c])
        total = float(np.sum((hs - hs.mean()) ** 2))
        r2 = 1 - float(np.sum(resid**2)) / total if total > 0 else 1.0
    return Flow(float(a), float(b), float(c), math.hypot(a, b),
                azimuth_deg(-a, -b), r2, n)


def fit_flow_wells(
    heads: Mapping[str, float], coords: Mapping[str, tuple[float, float]],
) -> Flow:
    """Fit the flow of heads keyed by well, at wells whose coordinates are known."""
    wells = [w for w in heads if w in coords]
    return fit_flow([coords[w][0] for w in wells], [coords[w][1] for w in wells],
                    [heads[w] for w in wells])


@dataclass(frozen=True, slots=True)
class Bearing:
    """Where a well lies from a facility, relative to the flow."""

    facility: str
    well: str
    distance: float
    off_axis_deg: float
    downgradient: bool


def bearing(
    flow_deg: float, fx: float, fy: float, wx: float, wy: float, facility: str = "",
    well: str = "", sector_deg: float = DEFAULT_SECTOR_DEG,
) -> Bearing:
    """Whether a well lies downgradient of a facility: within sector_deg of the flow."""
    dx, dy = wx - fx, wy - fy
    distance = math.hypot(dx, dy)
    if distance == 0:
        return Bearing(facility, well, 0.0, 0.0, True)
    off = (azimuth_deg(dx, dy) - flow_deg + 180.0) % 360.0 - 180.0
    return Bearing(facility, well, distance, abs(off), abs(off) <= sector_deg)


def downgradient_wells(
    flow: Flow, facilities: Mapping[str, tuple[float, float]],
    wells: Mapping[str, tuple[float, float]], sector_deg: float = DEFAULT_SECTOR_DEG,
) -> dict[str, list[Bearing]]:
    """For each facility, the wells downgradient of it, nearest first."""
    out: dict[str, list[Bearing]] = {}
    for name, (fx, fy) in facilities.items():
        found = [bearing(flow.direction_deg, fx, fy, wx, wy, name, well, sector_deg)
                 for well, (wx, wy) in wells.items()]
        out[name] = sorted((b for b in found if b.downgradient),
                           key=lambda b: b.distance)
    return out


def candidate_sources(
    flow: Flow, well: str, wells: Mapping[str, tuple[float, float]],
    facilities: Mapping[str, tuple[float, float]],
    sector_deg: float = DEFAULT_SECTOR_DEG,
) -> list[Bearing]:
    """Facilities upgradient of a well (it lies downgradient of them), nearest first."""
    wx, wy = wells[well]
    found = [bearing(flow.direction_deg, fx, fy, wx, wy, name, well, sector_deg)
             for name, (fx, fy) in facilities.items()]
    return sorted((b for b in found if b.downgradient),
                  key=lambda b: (b.off_axis_deg > sector_deg / 2, b.distance))
