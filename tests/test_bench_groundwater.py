"""Short version of the groundwater benchmark (python -m bench.groundwater)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/ is not installed

from bench.groundwater import run


def test_every_series_gets_a_trend_class_and_a_chart_state() -> None:
    out = run(20, workers=1)
    counts = out["counts"]
    assert out["series"] == 200
    chart = sum(v for k, v in counts.items() if k.startswith("chart"))
    assert chart == 200
    assert sum(counts.values()) - chart == 200
    assert counts.get("Increasing", 0) + counts.get("Decreasing", 0) > 0
