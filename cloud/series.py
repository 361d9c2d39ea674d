"""A point's readings cut to at most N time buckets (min, max, mean) for charts."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import numpy as np

DEFAULT_MAX_POINTS = 2000
MAX_MAX_POINTS = 20_000


def _epoch_s(ts: str) -> float:
    return datetime.fromisoformat(ts).timestamp()


def decimate(rows: Sequence[dict[str, Any]], max_points: int) -> dict[str, Any]:
    """Bucket readings (oldest first) into at most max_points equal time spans.

    Only good readings feed min, max and mean (docs/quality.md: a value is trusted
    only when good); the others are counted per bucket in `not_good`. With no more
    readings than max_points each reading is its own bucket (`raw` true). Times are
    epoch seconds: of the reading, or of the bucket's middle.
    """
    n = len(rows)
    empty: dict[str, Any] = {"raw": True, "bucket_s": 0.0, "total": n, "t": [],
                             "min": [], "max": [], "mean": [], "count": [],
                             "not_good": []}
    if n == 0:
        return empty
    t = np.fromiter((_epoch_s(r["ts"]) for r in rows), float, n)
    good = np.fromiter(
        (r["quality"] == "good" and r["value"] is not None for r in rows), bool, n)
    v = np.fromiter(
        (r["value"] if r["value"] is not None else np.nan for r in rows), float, n)
    if n <= max_points:
        values: list[float | None] = [float(x) if g else None
                                      for x, g in zip(v, good, strict=True)]
        return dict(empty, t=t.tolist(), min=values, max=values, mean=values,
                    count=good.astype(int).tolist(),
                    not_good=(~good).astype(int).tolist())
    t0, span = float(t[0]), float(t[-1] - t[0])
    width = max(span / max_points, 1e-3)
    idx = np.minimum(((t - t0) / width).astype(np.int64), max_points - 1)
    ids = np.unique(idx)
    pos = {int(b): i for i, b in enumerate(ids)}
    m = len(ids)
    mins: list[float | None] = [None] * m
    maxs: list[float | None] = [None] * m
    means: list[float | None] = [None] * m
    counts = [0] * m
    if good.any():
        gi, gv = idx[good], v[good]
        starts = np.r_[0, np.flatnonzero(np.diff(gi)) + 1]
        lo = np.minimum.reduceat(gv, starts)
        hi = np.maximum.reduceat(gv, starts)
        sums = np.add.reduceat(gv, starts)
        sizes = np.diff(np.r_[starts, len(gv)])
        for b, a, z, s, c in zip(gi[starts], lo, hi, sums, sizes, strict=True):
            i = pos[int(b)]
            mins[i], maxs[i], counts[i] = float(a), float(z), int(c)
            means[i] = float(s / c)
    bad = np.bincount(idx[~good], minlength=max_points)
    not_good = bad[ids].astype(int).tolist()
    return {"raw": False, "bucket_s": width, "total": n,
            "t": (t0 + (ids + 0.5) * width).tolist(), "min": mins, "max": maxs,
            "mean": means, "count": counts, "not_good": not_good}
