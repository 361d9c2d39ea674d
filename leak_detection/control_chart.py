"""Intrawell combined Shewhart-CUSUM control chart (USEPA Unified Guidance, ch. 20).

Pure Python (no numpy, no scipy) so the gateway can run it on a sensor stream.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

# Unified Guidance section 20.2: h = 5, k = 1 and SCL = 4.5 standard deviations.
DEFAULT_H = 5.0
DEFAULT_K = 1.0
DEFAULT_SCL = 4.5
MIN_BASELINE = 8


@dataclass(frozen=True, slots=True)
class Baseline:
    """Mean and standard deviation of a well's background (baseline) samples."""

    mean: float
    sd: float
    n: int

    @classmethod
    def of(cls, values: Sequence[float], min_n: int = MIN_BASELINE) -> Baseline:
        """Estimate from at least `min_n` values (the Guidance asks for 8 or more)."""
        n = len(values)
        if n < max(min_n, 2):
            need = max(min_n, 2)
            raise ValueError(f"baseline has {n} values; at least {need} needed")
        mean = math.fsum(values) / n
        sd = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1))
        if sd <= 0:
            raise ValueError("baseline values are all equal: standard deviation is 0")
        return cls(mean, sd, n)


@dataclass(frozen=True, slots=True)
class ChartPoint:
    """One standardised value with its CUSUM and the limits it crossed."""

    z: float
    cusum: float
    shewhart_out: bool
    cusum_out: bool

    @property
    def out(self) -> bool:
        """Whether this point is out of control by either limit."""
        return self.shewhart_out or self.cusum_out


@dataclass(slots=True)
class ShewhartCusum:
    """Streaming chart: feed values one at a time (edge) or a whole series (cloud)."""

    baseline: Baseline
    h: float = DEFAULT_H
    k: float = DEFAULT_K
    scl: float = DEFAULT_SCL
    cusum: float = 0.0
    points: list[ChartPoint] = field(default_factory=list)
    # False on an endless stream (the gateway): points are not kept, only the sum.
    keep_points: bool = True

    def update(self, value: float) -> ChartPoint:
        """Add one compliance value: Z = (x - mean) / sd; S = max(0, S + Z - k)."""
        z = (value - self.baseline.mean) / self.baseline.sd
        self.cusum = max(0.0, self.cusum + z - self.k)
        point = ChartPoint(z, self.cusum, z > self.scl, self.cusum > self.h)
        if self.keep_points:
            self.points.append(point)
        return point

    @property
    def out_of_control(self) -> bool:
        """Whether any point so far crossed the Shewhart limit or the CUSUM limit."""
        return any(p.out for p in self.points)


def shewhart_cusum(
    baseline: Sequence[float], compliance: Sequence[float], h: float = DEFAULT_H,
    k: float = DEFAULT_K, scl: float = DEFAULT_SCL, min_baseline: int = MIN_BASELINE,
) -> ShewhartCusum:
    """Run the combined chart of `compliance` values against a `baseline`."""
    chart = ShewhartCusum(Baseline.of(baseline, min_baseline), h=h, k=k, scl=scl)
    for value in compliance:
        chart.update(value)
    return chart
