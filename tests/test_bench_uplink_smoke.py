"""The drain benchmark's backlog (bench.uplink): shape and disk bytes, untimed."""

from __future__ import annotations

import sqlite3
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/ is not installed

from bench.uplink import TARGET_DISK_BYTES, prefill, used_bytes
from edge.config import load_config
from groundwatch.demo import write_site


def test_prefilled_backlog_is_the_demo_site_and_under_50_bytes_a_reading(
        tmp_path: Path) -> None:
    cfg = load_config(write_site(tmp_path, 1883, leak_at_s=1e9))
    db = cfg.data_dir / "gateway.sqlite"
    n = 20_000
    backlog = prefill(cfg, db, n)
    assert backlog.readings == n and backlog.last_seq == n

    conn = sqlite3.connect(db)
    try:
        points = set(conn.execute(
            "SELECT DISTINCT device || '.' || point FROM readings"))
        pending = conn.execute(
            "SELECT count(*), min(seq), max(seq) FROM outbox").fetchone()
        (span_ms,), = conn.execute("SELECT max(ts_ms) - min(ts_ms) FROM samples")
    finally:
        conn.close()
    # Every polled point of every device, all of it pending.
    assert {p[0] for p in points} == {
        f"{name}.{p.name}" for name, m in cfg.maps.items()
        for p in m.points.values() if p.type != "string"}
    assert pending == (n, 1, n)
    # Polled on the site's periods: n readings span n / (readings per second).
    per_s = sum(sum(p.type != "string" for p in cfg.maps[dev.name].points.values())
                / dev.poll_interval_s for _, dev in cfg.devices())
    assert abs(span_ms / 1000 - n / per_s) <= 2.0

    assert backlog.used_bytes / n <= TARGET_DISK_BYTES
    live, readings, _ = used_bytes(db)
    assert readings == n and live == backlog.used_bytes
