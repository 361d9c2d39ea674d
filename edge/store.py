"""The gateway's SQLite store: readings, events, the outbox and alarm state.

Every record gets a per-gateway sequence number when it is committed, and enters the
outbox in the same transaction; it leaves the outbox only when the cloud receiver
acknowledges that it stored it. Readings are committed in batches with
synchronous=NORMAL (WAL); alarm events with synchronous=FULL, so an alarm survives a
power cut the moment it is recorded.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS readings (
    seq INTEGER PRIMARY KEY, ts TEXT NOT NULL, device TEXT NOT NULL,
    point TEXT NOT NULL, value REAL, quality TEXT NOT NULL, unit TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS readings_point_ts ON readings (device, point, ts);
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY, ts TEXT NOT NULL, source TEXT NOT NULL,
    event TEXT NOT NULL, state TEXT NOT NULL, severity TEXT, point TEXT,
    value REAL, message TEXT
);
-- Records not yet acknowledged by the cloud; priority 0 (events) goes first.
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY, kind TEXT NOT NULL, priority INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS outbox_order ON outbox (priority, seq);
CREATE TABLE IF NOT EXISTS alarm_state (
    name TEXT PRIMARY KEY, active INTEGER NOT NULL, latched INTEGER NOT NULL,
    since TEXT, value REAL
);
CREATE TABLE IF NOT EXISTS ack_requests (
    id INTEGER PRIMARY KEY, alarm TEXT NOT NULL, requested_at TEXT NOT NULL,
    who TEXT NOT NULL DEFAULT 'local'
);
"""

PRIORITY_EVENT, PRIORITY_READING = 0, 1
WAL_LIMIT_BYTES = 4 << 20
BUSY_TIMEOUT_MS = 10000

# PRAGMA user_version of the schema above. A file from before versioning (0) is
# stamped 1; a later version adds its upgrade statements to MIGRATIONS, keyed by the
# version they upgrade *from*; they run in one transaction with the new stamp.
SCHEMA_VERSION = 1
MIGRATIONS: dict[int, list[str]] = {}


class StoreError(Exception):
    """The store cannot be used as it is (a newer schema, a file that cannot be moved)."""


def utc_now_iso() -> str:
    """Now, as ISO 8601 UTC with an explicit offset and milliseconds."""
    return datetime.now(UTC).isoformat(timespec="milliseconds")


@dataclass(slots=True)
class AlarmStateRow:
    name: str
    active: bool
    latched: bool
    since: str | None
    value: float | None


def connect(path: str | Path) -> sqlite3.Connection:
    """Open a store connection: WAL, NORMAL sync, and a busy timeout for readers."""
    conn = sqlite3.connect(str(path), isolation_level=None, timeout=10.0)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    # After a checkpoint the WAL file is cut back to this size, so one burst (a
    # backfill, an eviction) does not leave a large file behind for good.
    conn.execute(f"PRAGMA journal_size_limit={WAL_LIMIT_BYTES}")
    return conn


class EdgeStore:
    """Single-writer store owned by the gateway's event loop."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.conn = connect(self.path)
        try:
            self._migrate()
            # The sequence high-water mark lives in meta, so deleting old rows can
            # never make a sequence number come back (the cloud would drop it as a
            # duplicate).
            self.next_seq = int(self.meta("next_seq") or 1)
        except BaseException:
            self.conn.close()
            raise

    def _migrate(self) -> None:
        version = self.conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"{self.path} has schema version {version}, this groundwatch knows "
                f"{SCHEMA_VERSION}: it was written by a newer release; upgrade, or "
                "move the file aside"
            )
        if version == SCHEMA_VERSION:
            return
        self.conn.executescript(SCHEMA)  # creates only what is missing
        with self._transaction():
            for from_version in range(max(version, 1), SCHEMA_VERSION):
                log.info("store %s: schema %d -> %d", self.path, from_version,
                         from_version + 1)
                for statement in MIGRATIONS[from_version]:
                    self.conn.execute(statement)
            self.conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

    def close(self) -> None:
        self.conn.close()

    def meta(self, key: str) -> str | None:
        row = self.conn.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return row[0] if row else None

    def set_meta(self, key: str, value: str) -> None:
        self.conn.execute(
            "INSERT INTO meta(key, value) VALUES(?, ?) "
            "ON CONFLICT(key) DO UPDATE SET value=excluded.value", (key, value),
        )

    def set_next_seq(self, next_seq: int) -> None:
        """Raise the sequence high-water mark (never lowers it)."""
        if next_seq > self.next_seq:
            self.set_meta("next_seq", str(next_seq))
            self.next_seq = next_seq

    def _take_seqs(self, n: int) -> range:
        seqs = range(self.next_seq, self.next_seq + n)
        self.set_meta("next_seq", str(self.next_seq + n))
        return seqs

    def add_readings(
        self, ts: str, device: str, samples: Iterable[tuple[str, float | None, str, str]]
    ) -> list[int]:
        """Commit (point, value, quality, unit) samples of one poll; return their seqs."""
        rows = list(samples)
        if not rows:
            return []
        start = self.next_seq
        with self._transaction():
            seqs = self._take_seqs(len(rows))
            self.conn.executemany(
                "INSERT INTO readings(seq, ts, device, point, value, quality, unit) "
                "VALUES (?,?,?,?,?,?,?)",
                [(s, ts, device, *r) for s, r in zip(seqs, rows, strict=True)],
            )
            self.conn.executemany(
                "INSERT INTO outbox(seq, kind, priority) VALUES (?, 'reading', ?)",
                [(s, PRIORITY_READING) for s in seqs],
            )
        self.next_seq = start + len(rows)
        return list(seqs)

    def add_event(
        self, source: str, event: str, state: str, *, severity: str | None = None,
        point: str | None = None, value: float | None = None, message: str = "",
        ts: str | None = None, durable: bool = True,
    ) -> int:
        """Commit one event; alarm events are fsynced before this returns."""
        ts = ts or utc_now_iso()
        if durable:
            self.conn.execute("PRAGMA synchronous=FULL")
        try:
            with self._transaction():
                (seq,) = self._take_seqs(1)
                self.conn.execute(
                    "INSERT INTO events(seq, ts, source, event, state, severity, point, "
                    "value, message) VALUES (?,?,?,?,?,?,?,?,?)",
                    (seq, ts, source, event, state, severity, point, value, message),
                )
                self.conn.execute(
                    "INSERT INTO outbox(seq, kind, priority) VALUES (?, 'event', ?)",
                    (seq, PRIORITY_EVENT),
                )
        finally:
            if durable:
                self.conn.execute("PRAGMA synchronous=NORMAL")
        self.next_seq = seq + 1
        return seq

    def _transaction(self) -> "_Tx":
        return _Tx(self)

    # -- outbox -------------------------------------------------------------------

    def outbox_batch(self, limit: int, exclude: set[int]) -> list[dict[str, Any]]:
        """The next records to send: events first, then readings, oldest first."""
        rows = self.conn.execute(
            "SELECT seq, kind FROM outbox ORDER BY priority, seq LIMIT ?",
            (limit + len(exclude),),
        ).fetchall()
        picked = [(s, k) for s, k in rows if s not in exclude][:limit]
        readings = [s for s, k in picked if k == "reading"]
        events = [s for s, k in picked if k == "event"]
        out: list[dict[str, Any]] = []
        for chunk in _chunks(events, 500):
            out += [
                _event_record(r) for r in self.conn.execute(
                    "SELECT seq, ts, source, event, state, severity, point, value, message "
                    f"FROM events WHERE seq IN ({','.join('?' * len(chunk))})", chunk,
                )
            ]
        for chunk in _chunks(readings, 500):
            out += [
                {"seq": r[0], "kind": "reading", "ts": r[1], "device": r[2],
                 "point": r[3], "value": r[4], "quality": r[5], "unit": r[6]}
                for r in self.conn.execute(
                    "SELECT seq, ts, device, point, value, quality, unit FROM readings "
                    f"WHERE seq IN ({','.join('?' * len(chunk))}) ORDER BY seq", chunk,
                )
            ]
        return out

    def mark_delivered(self, ranges: list[list[int]]) -> int:
        """Remove acknowledged sequence ranges from the outbox; return rows removed."""
        with self._transaction():
            removed = 0
            for first, last in ranges:
                cur = self.conn.execute(
                    "DELETE FROM outbox WHERE seq BETWEEN ? AND ?", (first, last)
                )
                removed += cur.rowcount
        return removed

    # -- disk budget ----------------------------------------------------------------

    def used_bytes(self) -> int:
        """Bytes of the database's live pages (free pages are reused, not counted)."""
        page_size, pages, free = (self.conn.execute(f"PRAGMA {p}").fetchone()[0]
                                  for p in ("page_size", "page_count", "freelist_count"))
        return (pages - free) * page_size

    def wal_bytes(self) -> int:
        wal = Path(f"{self.path}-wal")
        return wal.stat().st_size if wal.exists() else 0

    def enforce_budget(self, max_bytes: int) -> dict[str, int]:
        """Evict the oldest readings until the live data is under 90% of max_bytes.

        Readings the cloud already has go first, then the oldest unsent ones (each
        counted: they are lost to the cloud). Alarm and device events are never
        evicted. Returns the counts of this call.
        """
        evicted = {"evicted_delivered": 0, "evicted_unsent": 0}
        target = int(0.9 * max_bytes)
        used = self.used_bytes()
        if used <= max_bytes:
            return evicted
        for key, select in (
            ("evicted_delivered", "SELECT seq FROM readings WHERE seq NOT IN "
                                  "(SELECT seq FROM outbox) ORDER BY seq LIMIT ?"),
            ("evicted_unsent", "SELECT seq FROM outbox WHERE kind='reading' "
                               "ORDER BY seq LIMIT ?"),
        ):
            while used > target:
                # Estimate how many rows free the excess; deleting by ranges of seq
                # keeps each transaction short on an SD card.
                rows = self.conn.execute(
                    "SELECT count(*) FROM (SELECT seq FROM readings LIMIT 100000)"
                ).fetchone()[0]
                per_row = max(used / max(rows, 1), 16.0) if rows < 100000 else 64.0
                n = min(max(int((used - target) / per_row) + 1, 100), 20000)
                with self._transaction():
                    seqs = [r[0] for r in self.conn.execute(select, (n,))]
                    for chunk in _chunks(seqs, 500):
                        marks = ",".join("?" * len(chunk))
                        self.conn.execute(f"DELETE FROM readings WHERE seq IN ({marks})",
                                          chunk)
                        self.conn.execute(f"DELETE FROM outbox WHERE seq IN ({marks})",
                                          chunk)
                if not seqs:
                    break
                evicted[key] += len(seqs)
                used = self.used_bytes()
        total = int(self.meta("evicted_unsent_total") or 0) + evicted["evicted_unsent"]
        self.set_meta("evicted_unsent_total", str(total))
        self.checkpoint()
        return evicted

    def checkpoint(self) -> bool:
        """Copy the WAL into the database and truncate it; False while a reader holds
        an older snapshot (the WAL then waits for it, and is cut at the next call)."""
        # TRUNCATE waits for readers through the busy handler; the gateway's event
        # loop must not, so it tries once and leaves the rest to the next call.
        self.conn.execute("PRAGMA busy_timeout=0")
        try:
            busy, _, _ = self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        finally:
            self.conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        return busy == 0

    def outbox_depth(self) -> int:
        return self.conn.execute("SELECT count(*) FROM outbox").fetchone()[0]

    def oldest_unsent_ts(self) -> str | None:
        row = self.conn.execute(
            "SELECT min(ts) FROM (SELECT r.ts FROM outbox o JOIN readings r USING(seq) "
            "UNION ALL SELECT e.ts FROM outbox o JOIN events e USING(seq))"
        ).fetchone()
        return row[0] if row else None

    # -- alarm state --------------------------------------------------------------

    def load_alarm_states(self) -> dict[str, AlarmStateRow]:
        return {
            r[0]: AlarmStateRow(r[0], bool(r[1]), bool(r[2]), r[3], r[4])
            for r in self.conn.execute(
                "SELECT name, active, latched, since, value FROM alarm_state"
            )
        }

    def save_alarm_state(self, row: AlarmStateRow) -> None:
        with self._transaction():
            self.conn.execute(
                "INSERT INTO alarm_state(name, active, latched, since, value) "
                "VALUES (?,?,?,?,?) ON CONFLICT(name) DO UPDATE SET active=excluded.active,"
                " latched=excluded.latched, since=excluded.since, value=excluded.value",
                (row.name, int(row.active), int(row.latched), row.since, row.value),
            )

    def request_ack(self, alarm: str, who: str = "local") -> None:
        """Ask the running gateway to acknowledge (unlatch) an alarm."""
        with self._transaction():
            self.conn.execute(
                "INSERT INTO ack_requests(alarm, requested_at, who) VALUES (?,?,?)",
                (alarm, utc_now_iso(), who),
            )

    def take_ack_requests(self) -> list[tuple[str, str]]:
        with self._transaction():
            rows = self.conn.execute("SELECT id, alarm, who FROM ack_requests").fetchall()
            self.conn.execute("DELETE FROM ack_requests")
        return [(r[1], r[2]) for r in rows]


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


class _Tx:
    """BEGIN IMMEDIATE ... COMMIT, rolled back on error."""

    def __init__(self, store: EdgeStore):
        self.conn = store.conn

    def __enter__(self) -> None:
        self.conn.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: Any, *_: Any) -> None:
        self.conn.execute("ROLLBACK" if exc_type else "COMMIT")


def _chunks(items: list[int], n: int) -> Iterable[list[int]]:
    for i in range(0, len(items), n):
        yield items[i : i + n]


def _event_record(r: tuple) -> dict[str, Any]:
    rec = {"seq": r[0], "kind": "event", "ts": r[1], "source": r[2], "event": r[3],
           "state": r[4]}
    for key, val in zip(("severity", "point", "value", "message"), r[5:], strict=True):
        if val not in (None, ""):
            rec[key] = val
    return rec
