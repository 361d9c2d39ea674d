"""Groundwater analysis benchmark of issue 6: trends and control charts at site scale.

Run from the repository root: ``.venv/bin/python -m bench.groundwater`` (1,000 wells x
10 constituents x 40 events on 2 worker processes) or ``--quick`` (100 wells). Each
series gets the Mann-Kendall test, Sen's slope with its interval, the trend class and
the intrawell Shewhart-CUSUM chart (first 8 events as baseline). Series are made up:
lognormal noise, a tenth of them with a trend, a fifth of the values non-detects.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor

import numpy as np

TARGET_S = 5.0


def make_series(n_wells: int, n_constituents: int, n_events: int,
                seed: int = 6) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Decimal years, values (n_series x n_events) and non-detect flags."""
    rng = np.random.default_rng(seed)
    n = n_wells * n_constituents
    t = 2015 + np.arange(n_events) * 0.25
    base = rng.lognormal(1.0, 1.0, size=(n, 1))
    slope = np.where(rng.random((n, 1)) < 0.1, rng.normal(0, 0.1, (n, 1)), 0.0)
    values = base * np.exp(slope * (t - t[0]) + rng.normal(0, 0.3, (n, n_events)))
    dl = np.quantile(values, 0.2, axis=1, keepdims=True)
    censored = values < dl
    values = np.where(censored, dl, values)
    return t, values, censored


def analyse_chunk(args: tuple[np.ndarray, np.ndarray, np.ndarray]) -> dict[str, int]:
    """Trend and control chart of every series of a chunk; count the classes."""
    from cloud.stats.trend import trend
    from leak_detection.control_chart import Baseline, ShewhartCusum

    t, values, censored = args
    counts: dict[str, int] = {}
    for x, c in zip(values, censored):
        result = trend(t, x, c)
        counts[result.trend] = counts.get(result.trend, 0) + 1
        try:
            chart = ShewhartCusum(Baseline.of(x[:8].tolist()))
        except ValueError:
            counts["chart n/a"] = counts.get("chart n/a", 0) + 1
            continue
        for v in x[8:].tolist():
            chart.update(v)
        key = "chart out" if chart.out_of_control else "chart in"
        counts[key] = counts.get(key, 0) + 1
    return counts


def run(n_wells: int, n_constituents: int = 10, n_events: int = 40,
        workers: int = 2) -> dict[str, object]:
    """Time the analysis of every series on `workers` processes."""
    t, values, censored = make_series(n_wells, n_constituents, n_events)
    chunks = [(t, v, c) for v, c in zip(np.array_split(values, workers * 4),
                                         np.array_split(censored, workers * 4))]
    with ProcessPoolExecutor(workers) as pool:
        list(pool.map(analyse_chunk, [(t, values[:2], censored[:2])] * workers))
        t0 = time.perf_counter()
        parts = list(pool.map(analyse_chunk, chunks))
        elapsed_s = time.perf_counter() - t0
    counts: dict[str, int] = {}
    for part in parts:
        for k, v in part.items():
            counts[k] = counts.get(k, 0) + v
    n_series = n_wells * n_constituents
    return {"wells": n_wells, "constituents": n_constituents, "events": n_events,
            "series": n_series, "workers": workers, "cpus": os.cpu_count(),
            "elapsed_s": round(elapsed_s, 3),
            "series_per_s": round(n_series / elapsed_s), "target_s": TARGET_S,
            "counts": dict(sorted(counts.items()))}


def main(argv: list[str] | None = None) -> int:
    """Print the figures as JSON; exit 1 if the full run misses the target."""
    parser = argparse.ArgumentParser(prog="python -m bench.groundwater")
    parser.add_argument("--quick", action="store_true", help="100 wells, not 1,000")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args(argv)
    out = run(100 if args.quick else 1000, workers=args.workers)
    print(json.dumps(out))
    elapsed_s = out["elapsed_s"]
    assert isinstance(elapsed_s, float)
    return 0 if args.quick or elapsed_s < TARGET_S else 1


if __name__ == "__main__":
    sys.exit(main())
