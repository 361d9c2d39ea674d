"""Opening the gateway's own store after whatever the last run ended with."""

from __future__ import annotations

import logging
import os
import sqlite3
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from edge.store import EdgeStore, StoreError

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Recovery:
    """What open_gateway_store did about a damaged file."""

    moved_to: Path
    reason: str
    next_seq: int


def open_gateway_store(path: str | Path) -> tuple[EdgeStore, Recovery | None]:
    """Open the gateway's own store, moving a corrupt file aside instead of failing.

    The gateway marks the store as running while it owns it. If the mark is still set
    at the next start, the last run ended without an orderly stop (a power cut, a
    SIGKILL), and the file gets a quick integrity check before it is trusted.
    A corrupt file is renamed `NAME.corrupt-UTCSTAMP` (with its WAL), a fresh store is
    started, and sequence numbers continue above any the old file had issued, so the
    cloud never mistakes new records for duplicates of old ones.
    """
    path = Path(path)
    try:
        store = EdgeStore(path)
        try:
            if store.meta("running") == "1":
                problem = store.conn.execute("PRAGMA quick_check").fetchone()[0]
                if problem != "ok":
                    raise sqlite3.DatabaseError(f"quick_check: {problem}")
            store.set_meta("running", "1")
        except BaseException:
            store.close()
            raise
        return store, None
    except sqlite3.DatabaseError as exc:
        reason = str(exc)
    log.error("store %s is damaged (%s): moving it aside and starting a fresh one",
              path, reason)
    salvaged = _salvage_next_seq(path)
    moved_to = path.with_name(
        f"{path.name}.corrupt-{datetime.now(UTC).strftime('%Y%m%dT%H%M%SZ')}")
    try:
        for suffix in ("", "-wal", "-shm"):
            src = Path(f"{path}{suffix}")
            if src.exists():
                os.replace(src, f"{moved_to}{suffix}")
    except OSError as exc:
        raise StoreError(f"{path} is damaged and cannot be moved aside: {exc}") from exc
    store = EdgeStore(path)
    # With nothing salvaged, microseconds since 1970 are above any sequence number a
    # store of ours could have reached by counting, unless the clock is wrong too.
    next_seq = max(salvaged or 1, time.time_ns() // 1000)
    store.set_next_seq(next_seq)
    store.set_meta("running", "1")
    store.add_event("store", "store", "recovered", severity="warning",
                    message=f"damaged store moved to {moved_to.name}: {reason}")
    return store, Recovery(moved_to, reason, next_seq)


def _salvage_next_seq(path: Path) -> int | None:
    """The highest sequence number a damaged store issued, as far as can be read."""
    best: int | None = None
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=1.0)
    except sqlite3.Error:
        return None
    try:
        for sql in ("SELECT value FROM meta WHERE key='next_seq'",
                    "SELECT max(seq) + 1 FROM readings", "SELECT max(seq) + 1 FROM events",
                    "SELECT max(seq) + 1 FROM outbox"):
            try:
                row = conn.execute(sql).fetchone()
            except sqlite3.Error:
                continue
            if row and row[0] is not None:
                best = max(best or 0, int(row[0]))
    finally:
        conn.close()
    return best
