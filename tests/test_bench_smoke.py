"""Coalescing on the demo site (bench item 2): counted from the real config, untimed."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/ is not installed

from bench.gateway import (
    TARGET_COALESCING,
    coalescing_counts,
    demo_site_config,
)


def test_demo_site_coalescing_saves_at_least_5x(tmp_path: Path) -> None:
    """Block reads per poll cycle against one request per point (+ quality register)."""
    cfg = demo_site_config(tmp_path)
    counts = coalescing_counts(cfg)
    assert counts.blocks == sum(len(m.blocks) for m in cfg.maps.values())
    assert counts.points == sum(
        p.type != "string" for m in cfg.maps.values() for p in m.points.values()
    )
    assert counts.per_point >= max(counts.points, counts.per_register_span)
    assert counts.ratio >= TARGET_COALESCING
    assert counts.ratio_strict >= TARGET_COALESCING
