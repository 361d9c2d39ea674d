"""Cloud storage: readings, events and gateway state in one SQLite file (WAL)."""

from __future__ import annotations

import json
import logging
import math
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

BUSY_TIMEOUT_MS = 10_000
# Health messages kept per gateway: a day of them at the default 30 s interval.
HEALTH_HISTORY = 2880

# One per-gateway sequence numbers readings and events alike, so `records` holds each
# (site, gateway, seq) once whatever its kind: it is the duplicate gate of store_batch.
# `tag` is the point as the API names it, "device.point".
_SCHEMA = """
CREATE TABLE IF NOT EXISTS records (
    site TEXT NOT NULL,
    gateway TEXT NOT NULL,
    seq INTEGER NOT NULL,
    kind TEXT NOT NULL,
    PRIMARY KEY (site, gateway, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS readings (
    site TEXT NOT NULL,
    gateway TEXT NOT NULL,
    seq INTEGER NOT NULL,
    ts TEXT NOT NULL,
    device TEXT NOT NULL,
    point TEXT NOT NULL,
    tag TEXT NOT NULL,
    value REAL,
    quality TEXT NOT NULL,
    unit TEXT NOT NULL,
    historical INTEGER NOT NULL,
    received_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS readings_by_point ON readings (site, tag, ts, seq);
CREATE TABLE IF NOT EXISTS events (
    site TEXT NOT NULL,
    gateway TEXT NOT NULL,
    seq INTEGER NOT NULL,
    ts TEXT NOT NULL,
    source TEXT NOT NULL,
    event TEXT NOT NULL,
    state TEXT NOT NULL,
    severity TEXT,
    point TEXT,
    value REAL,
    message TEXT,
    historical INTEGER NOT NULL,
    received_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_by_kind ON events (site, event, ts, seq);
CREATE TABLE IF NOT EXISTS latest (
    site TEXT NOT NULL,
    tag TEXT NOT NULL,
    device TEXT NOT NULL,
    point TEXT NOT NULL,
    gateway TEXT NOT NULL,
    seq INTEGER NOT NULL,
    ts TEXT NOT NULL,
    value REAL,
    quality TEXT NOT NULL,
    unit TEXT NOT NULL,
    received_at TEXT NOT NULL,
    PRIMARY KEY (site, tag)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS dead_letters (
    id INTEGER PRIMARY KEY,
    received_at TEXT NOT NULL,
    topic TEXT NOT NULL,
    site TEXT,
    gateway TEXT,
    seq INTEGER,
    reason TEXT NOT NULL,
    payload TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS gateways (
    site TEXT NOT NULL,
    gateway TEXT NOT NULL,
    last_seen TEXT,
    status TEXT,
    status_ts TEXT,
    PRIMARY KEY (site, gateway)
) WITHOUT ROWID;
-- Each gateway's recent health messages (the body as received); the newest is its
-- current health. A retained message seen again on reconnect is stored once.
CREATE TABLE IF NOT EXISTS gateway_health (
    id INTEGER PRIMARY KEY,
    site TEXT NOT NULL,
    gateway TEXT NOT NULL,
    ts TEXT NOT NULL,
    received_at TEXT NOT NULL,
    body TEXT NOT NULL,
    UNIQUE (site, gateway, ts)
);
CREATE INDEX IF NOT EXISTS gateway_health_by_id ON gateway_health (site, gateway, id);
"""

# Only a newer reading (by ts, ties by higher seq) replaces the latest value, so a
# historical backfill never overwrites what is already known to be more recent.
_UPSERT_LATEST = """
INSERT INTO latest (site, tag, device, point, gateway, seq, ts, value, quality, unit,
                    received_at)
VALUES (:site, :tag, :device, :point, :gateway, :seq, :ts, :value, :quality, :unit,
        :received_at)
ON CONFLICT (site, tag) DO UPDATE SET
    device = excluded.device, point = excluded.point, gateway = excluded.gateway,
    seq = excluded.seq, ts = excluded.ts, value = excluded.value,
    quality = excluded.quality, unit = excluded.unit, received_at = excluded.received_at
WHERE excluded.ts > latest.ts OR (excluded.ts = latest.ts AND excluded.seq > latest.seq)
"""

_INSERT_READING = """
INSERT INTO readings (site, gateway, seq, ts, device, point, tag, value, quality, unit,
                      historical, received_at)
VALUES (:site, :gateway, :seq, :ts, :device, :point, :tag, :value, :quality, :unit,
        :historical, :received_at)
"""

_INSERT_EVENT = """
INSERT INTO events (site, gateway, seq, ts, source, event, state, severity, point,
                    value, message, historical, received_at)
VALUES (:site, :gateway, :seq, :ts, :source, :event, :state, :severity, :point, :value,
        :message, :historical, :received_at)
"""

# The newest alarm event of each (gateway, alarm): the alarm is active unless cleared.
_LAST_ALARM_STATES = """
SELECT gateway, source, state FROM (
    SELECT gateway, source, state, ROW_NUMBER() OVER (
        PARTITION BY gateway, source ORDER BY ts DESC, seq DESC) AS newest
    FROM events WHERE site = ? AND event = 'alarm'
) WHERE newest = 1
"""


def format_ts(moment: datetime) -> str:
    """Format a time as ISO 8601 UTC with milliseconds; naive times are taken as UTC."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc).isoformat(timespec="milliseconds")


def normalise_ts(text: Any) -> str:
    """Parse an ISO 8601 time (offset or Z; naive is UTC) into the stored UTC form."""
    if not isinstance(text, str):
        raise ValueError(f"time {text!r} is not a string")
    try:
        return format_ts(datetime.fromisoformat(text))
    except (ValueError, OverflowError):
        raise ValueError(f"time {text!r} is not ISO 8601") from None


def parse_ts(text: str) -> datetime:
    """Parse a stored time back into an aware datetime."""
    return datetime.fromisoformat(text)


def utc_now() -> str:
    """Return the current time in the stored form."""
    return format_ts(datetime.now(timezone.utc))


def _text(
    rec: dict[str, Any], key: str, where: str, required: bool = True,
) -> str | None:
    value = rec.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str) or (required and not value):
        raise ValueError(f"{where}.{key}: {value!r} is not a non-empty string")
    return value


def _number(value: Any) -> float | None:
    """Return a finite float, or None for null, NaN and infinities."""
    if value is None:
        return None
    if not isinstance(value, (int, float)):
        raise ValueError(f"{value!r} is not a number")
    number = float(value)
    return number if math.isfinite(number) else None


def check_row(rec: Any, i: int) -> None:
    """Raise ValueError if store_batch would refuse this record."""
    _row(rec, i, {})


def _row(rec: Any, i: int, base: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """Check one record and return its kind and the row to insert."""
    where = f"records[{i}]"
    if not isinstance(rec, dict):
        raise ValueError(f"{where}: not an object")
    seq = rec.get("seq")
    if not isinstance(seq, int) or isinstance(seq, bool) or seq < 1:
        raise ValueError(f"{where}.seq: {seq!r} is not a positive integer")
    kind = rec.get("kind")
    try:
        ts = normalise_ts(rec.get("ts"))
    except ValueError as exc:
        raise ValueError(f"{where}.ts: {exc}") from None
    row = dict(base, seq=seq, ts=ts)
    if kind == "reading":
        device = _text(rec, "device", where)
        point = _text(rec, "point", where)
        try:
            value = _number(rec.get("value"))
        except ValueError as exc:
            raise ValueError(f"{where}.value: {exc}") from None
        row.update(
            device=device, point=point, tag=f"{device}.{point}", value=value,
            quality=_text(rec, "quality", where),
            unit=_text(rec, "unit", where, False) or "",
        )
    elif kind == "event":
        event_value: Any = rec.get("value")
        if event_value is not None and not isinstance(event_value, str):
            try:
                event_value = _number(event_value)
            except ValueError:
                event_value = str(event_value)
        row.update(
            source=_text(rec, "source", where), event=_text(rec, "event", where),
            state=_text(rec, "state", where),
            severity=_text(rec, "severity", where, False),
            point=_text(rec, "point", where, False), value=event_value,
            message=_text(rec, "message", where, False),
        )
    else:
        raise ValueError(f"{where}.kind: {kind!r} is not reading or event")
    return kind, row


def _dicts(cursor: sqlite3.Cursor) -> list[dict[str, Any]]:
    return [dict(row) for row in cursor.fetchall()]


class CloudStore:
    """The receiver's SQLite database: one writer connection, one reader per thread."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._write_lock = threading.Lock()
        self._writer = self._connect()
        self._writer.execute("PRAGMA journal_mode=WAL")
        self._writer.execute("PRAGMA synchronous=NORMAL")
        self._writer.executescript(_SCHEMA)
        self._local = threading.local()
        self._readers: list[sqlite3.Connection] = []
        self._readers_lock = threading.Lock()
        log.debug("cloud store open at %s", self.path)

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(
            self.path, isolation_level=None, check_same_thread=False,
            timeout=BUSY_TIMEOUT_MS / 1000,
        )
        db.row_factory = sqlite3.Row
        db.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        return db

    def close(self) -> None:
        """Close the writer and every reader connection."""
        with self._readers_lock:
            readers, self._readers = self._readers, []
        for db in readers:
            db.close()
        with self._write_lock:
            self._writer.close()

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        """Yield this thread's reader inside one read transaction (a snapshot)."""
        db = getattr(self._local, "db", None)
        if db is None:
            db = self._connect()
            db.execute("PRAGMA query_only=1")
            self._local.db = db
            with self._readers_lock:
                self._readers.append(db)
        db.execute("BEGIN")
        try:
            yield db
        finally:
            db.execute("COMMIT")

    # -- writing -------------------------------------------------------------------

    def store_batch(
        self, site: str, gateway: str, records: Sequence[dict[str, Any]],
        historical: bool = False,
    ) -> tuple[list[int], int, int]:
        """Store a batch in one transaction; return (stored seqs, new, duplicates).

        Every record is checked before anything is written: a bad one raises ValueError
        and nothing is stored. A seq already stored for this gateway, of either kind,
        counts as a duplicate and is reported stored again.
        """
        received_at = utc_now()
        base = {"site": site, "gateway": gateway, "historical": int(bool(historical)),
                "received_at": received_at}
        rows = [_row(rec, i, base) for i, rec in enumerate(records)]
        stored: list[int] = []
        new = duplicates = 0
        with self._write_lock:
            db = self._writer
            db.execute("BEGIN IMMEDIATE")
            try:
                # The seqs already stored, in one query; then each table gets its rows
                # in one executemany (a third of the cost of a statement per row).
                seqs = [row["seq"] for _, row in rows]
                known = {seq for seq, in db.execute(
                    "SELECT seq FROM records WHERE site = ? AND gateway = ? AND "
                    "seq BETWEEN ? AND ?", (site, gateway, min(seqs, default=0),
                                            max(seqs, default=0)))}
                fresh: dict[int, tuple[str, dict[str, Any]]] = {}
                for kind, row in rows:
                    stored.append(row["seq"])
                    if row["seq"] in known or row["seq"] in fresh:
                        duplicates += 1
                    else:
                        fresh[row["seq"]] = (kind, row)
                new = len(fresh)
                db.executemany(
                    "INSERT INTO records (site, gateway, seq, kind) VALUES (?, ?, ?, ?)",
                    [(site, gateway, seq, kind) for seq, (kind, _) in fresh.items()])
                readings = [row for kind, row in fresh.values() if kind == "reading"]
                db.executemany(_INSERT_READING, readings)
                # Only each point's newest reading of the batch can become its latest
                # value: offer just those (the upsert keeps the newer of it and the
                # stored one), a fifth of the upserts on a typical batch.
                newest: dict[str, dict[str, Any]] = {}
                for row in readings:
                    held = newest.get(row["tag"])
                    if held is None or (row["ts"], row["seq"]) > (held["ts"], held["seq"]):
                        newest[row["tag"]] = row
                db.executemany(_UPSERT_LATEST, list(newest.values()))
                db.executemany(_INSERT_EVENT,
                               [row for kind, row in fresh.values() if kind == "event"])
                self._touch(db, site, gateway, received_at)
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        return stored, new, duplicates

    def dead_letter(self, topic: str, reason: str, payload: str, site: str | None = None,
                    gateway: str | None = None, seq: int | None = None) -> None:
        """Keep what could not be ingested, with the reason, for someone to look at."""
        with self._write_lock:
            self._writer.execute(
                "INSERT INTO dead_letters (received_at, topic, site, gateway, seq, reason,"
                " payload) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (utc_now(), topic, site, gateway, seq, reason, payload[:65536]),
            )

    def dead_letters(self, limit: int = 100) -> list[dict[str, Any]]:
        """The newest dead letters."""
        with self._read() as db:
            rows = db.execute(
                "SELECT id, received_at, topic, site, gateway, seq, reason "
                "FROM dead_letters ORDER BY id DESC LIMIT ?", (limit,))
            return [dict(row) for row in rows]

    @staticmethod
    def _touch(db: sqlite3.Connection, site: str, gateway: str, seen_at: str) -> None:
        db.execute(
            "INSERT INTO gateways (site, gateway, last_seen) VALUES (?, ?, ?) "
            "ON CONFLICT (site, gateway) DO UPDATE SET last_seen = excluded.last_seen",
            (site, gateway, seen_at),
        )

    def set_gateway_status(
        self, site: str, gateway: str, status: str, seen: bool = False,
    ) -> None:
        """Record a gateway's status message; `seen` also marks it heard from now."""
        now = utc_now()
        with self._write_lock:
            db = self._writer
            db.execute("BEGIN IMMEDIATE")
            try:
                db.execute(
                    "INSERT INTO gateways (site, gateway, status, status_ts) "
                    "VALUES (?, ?, ?, ?) ON CONFLICT (site, gateway) DO UPDATE SET "
                    "status = excluded.status, status_ts = excluded.status_ts",
                    (site, gateway, status, now),
                )
                if seen:
                    self._touch(db, site, gateway, now)
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise

    def store_health(
        self, site: str, gateway: str, health: dict[str, Any], seen: bool = False,
    ) -> bool:
        """Keep a gateway's health message; `seen` also marks it heard from now.

        Returns False for a message already stored (a retained one delivered again).
        Only the newest HEALTH_HISTORY messages of a gateway are kept.
        """
        now = utc_now()
        ts = normalise_ts(health["ts"])
        with self._write_lock:
            db = self._writer
            db.execute("BEGIN IMMEDIATE")
            try:
                new = db.execute(
                    "INSERT OR IGNORE INTO gateway_health (site, gateway, ts, received_at,"
                    " body) VALUES (?, ?, ?, ?, ?)",
                    (site, gateway, ts, now, json.dumps(health, separators=(",", ":"))),
                ).rowcount == 1
                db.execute(
                    "INSERT OR IGNORE INTO gateways (site, gateway) VALUES (?, ?)",
                    (site, gateway))
                if seen:
                    self._touch(db, site, gateway, now)
                if new:
                    db.execute(
                        "DELETE FROM gateway_health WHERE site = ? AND gateway = ? AND "
                        "id <= (SELECT id FROM gateway_health WHERE site = ? AND "
                        "gateway = ? ORDER BY id DESC LIMIT 1 OFFSET ?)",
                        (site, gateway, site, gateway, HEALTH_HISTORY))
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        return new

    # -- reading -------------------------------------------------------------------

    def sites(self) -> list[str]:
        """Return every site heard from, sorted."""
        with self._read() as db:
            rows = db.execute("SELECT DISTINCT site FROM gateways ORDER BY site")
            return [row[0] for row in rows]

    def site_exists(self, site: str) -> bool:
        """Return whether any gateway of this site has been heard from."""
        with self._read() as db:
            row = db.execute("SELECT 1 FROM gateways WHERE site = ? LIMIT 1", (site,))
            return row.fetchone() is not None

    def gateways(self, site: str) -> list[dict[str, Any]]:
        """Return the site's gateways: gateway, last_seen, status, status_ts."""
        with self._read() as db:
            return _dicts(db.execute(
                "SELECT gateway, last_seen, status, status_ts FROM gateways "
                "WHERE site = ? ORDER BY gateway", (site,),
            ))

    def latest_health(self, site: str) -> dict[str, dict[str, Any]]:
        """The newest health message of each of the site's gateways, by gateway."""
        with self._read() as db:
            rows = db.execute(
                "SELECT gateway, received_at, body FROM gateway_health WHERE id IN "
                "(SELECT max(id) FROM gateway_health WHERE site = ? GROUP BY gateway)",
                (site,))
            return {row["gateway"]: dict(json.loads(row["body"]),
                                         received_at=row["received_at"])
                    for row in rows}

    def health_history(
        self, site: str, gateway: str, limit: int = 100,
    ) -> list[dict[str, Any]]:
        """A gateway's newest health messages, newest first."""
        with self._read() as db:
            rows = db.execute(
                "SELECT received_at, body FROM gateway_health WHERE site = ? AND "
                "gateway = ? ORDER BY id DESC LIMIT ?", (site, gateway, limit))
            return [dict(json.loads(row["body"]), received_at=row["received_at"])
                    for row in rows]

    def site_summary(self, site: str) -> dict[str, Any]:
        """Return the site's newest reading time, point count and active alarm count."""
        with self._read() as db:
            last_data, points = db.execute(
                "SELECT MAX(ts), COUNT(*) FROM latest WHERE site = ?", (site,),
            ).fetchone()
            active = sum(
                1 for row in db.execute(_LAST_ALARM_STATES, (site,))
                if row["state"] != "cleared"
            )
        return {"last_data": last_data, "points": points, "active_alarms": active}

    def latest_points(self, site: str) -> list[dict[str, Any]]:
        """Return the newest reading of every point of the site, by point name."""
        with self._read() as db:
            return _dicts(db.execute(
                "SELECT tag AS point, device, value, unit, quality, ts, seq, gateway "
                "FROM latest WHERE site = ? ORDER BY tag", (site,),
            ))

    def point_exists(self, site: str, point: str) -> bool:
        """Return whether the site has any reading of the point ("device.point")."""
        with self._read() as db:
            row = db.execute(
                "SELECT 1 FROM latest WHERE site = ? AND tag = ?", (site, point),
            ).fetchone()
            return row is not None

    def readings(
        self, site: str, point: str, since: str | None = None, until: str | None = None,
        limit: int = 10_000,
    ) -> list[dict[str, Any]]:
        """Return readings of a point with since <= ts < until, by ts then seq."""
        sql = ("SELECT ts, value, quality, unit, seq, gateway FROM readings "
               "WHERE site = ? AND tag = ?")
        args: list[Any] = [site, point]
        if since is not None:
            sql += " AND ts >= ?"
            args.append(normalise_ts(since))
        if until is not None:
            sql += " AND ts < ?"
            args.append(normalise_ts(until))
        sql += " ORDER BY ts, seq LIMIT ?"
        args.append(limit)
        with self._read() as db:
            return _dicts(db.execute(sql, args))

    def events(self, site: str, event: str, limit: int = 1000) -> list[dict[str, Any]]:
        """Return the site's events of one kind ("alarm", "device"), newest first."""
        with self._read() as db:
            return _dicts(db.execute(
                "SELECT ts, source, state, severity, point, value, message, seq, "
                "gateway "
                "FROM events WHERE site = ? AND event = ? "
                "ORDER BY ts DESC, seq DESC LIMIT ?", (site, event, limit),
            ))

    def active_alarms(self, site: str) -> list[str]:
        """Return the names of the site's alarms whose newest event is not "cleared"."""
        with self._read() as db:
            rows = db.execute(_LAST_ALARM_STATES, (site,)).fetchall()
        return sorted({row["source"] for row in rows if row["state"] != "cleared"})
