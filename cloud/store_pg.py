"""Cloud storage in PostgreSQL: the CloudStore interface for several receivers at once.

Same tables and rules as cloud/store.py (SQLite): `records (site, gateway, seq)` is the
duplicate gate, the latest value only moves to a newer reading. Several receiver
processes may write one database: the primary key turns a batch stored twice (a
redelivery to another instance) into duplicates, whichever commits first.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any

import psycopg
from psycopg import errors as pg_errors
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool

from cloud.store import HEALTH_HISTORY, _row, format_ts, normalise_ts, utc_now

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
CONNECT_TIMEOUT_S = 10
POOL_MAX_SIZE = 8
# A deadlock or serialisation failure between instances is retried this many times.
MAX_TRIES = 3
# Serialises schema creation when several instances start at once.
_SCHEMA_LOCK_KEY = 0x67770001

_SCHEMA = """
CREATE TABLE IF NOT EXISTS schema_version (
    version integer PRIMARY KEY,
    applied_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS records (
    site text NOT NULL,
    gateway text NOT NULL,
    seq bigint NOT NULL,
    kind text NOT NULL,
    PRIMARY KEY (site, gateway, seq)
);
CREATE TABLE IF NOT EXISTS readings (
    site text NOT NULL,
    gateway text NOT NULL,
    seq bigint NOT NULL,
    ts timestamptz NOT NULL,
    device text NOT NULL,
    point text NOT NULL,
    tag text NOT NULL,
    value double precision,
    quality text NOT NULL,
    unit text NOT NULL,
    historical boolean NOT NULL,
    received_at timestamptz NOT NULL
);
CREATE INDEX IF NOT EXISTS readings_by_point ON readings (site, tag, ts, seq);
CREATE TABLE IF NOT EXISTS events (
    site text NOT NULL,
    gateway text NOT NULL,
    seq bigint NOT NULL,
    ts timestamptz NOT NULL,
    source text NOT NULL,
    event text NOT NULL,
    state text NOT NULL,
    severity text,
    point text,
    value double precision,
    value_text text,
    message text,
    historical boolean NOT NULL,
    received_at timestamptz NOT NULL
);
CREATE INDEX IF NOT EXISTS events_by_kind ON events (site, event, ts, seq);
CREATE TABLE IF NOT EXISTS latest (
    site text NOT NULL,
    tag text NOT NULL,
    device text NOT NULL,
    point text NOT NULL,
    gateway text NOT NULL,
    seq bigint NOT NULL,
    ts timestamptz NOT NULL,
    value double precision,
    quality text NOT NULL,
    unit text NOT NULL,
    received_at timestamptz NOT NULL,
    PRIMARY KEY (site, tag)
);
CREATE TABLE IF NOT EXISTS dead_letters (
    id bigserial PRIMARY KEY,
    received_at timestamptz NOT NULL,
    topic text NOT NULL,
    site text,
    gateway text,
    seq bigint,
    reason text NOT NULL,
    payload text NOT NULL
);
CREATE TABLE IF NOT EXISTS gateways (
    site text NOT NULL,
    gateway text NOT NULL,
    last_seen timestamptz,
    status text,
    status_ts timestamptz,
    PRIMARY KEY (site, gateway)
);
CREATE TABLE IF NOT EXISTS gateway_health (
    id bigserial PRIMARY KEY,
    site text NOT NULL,
    gateway text NOT NULL,
    ts timestamptz NOT NULL,
    received_at timestamptz NOT NULL,
    body json NOT NULL,
    UNIQUE (site, gateway, ts)
);
CREATE INDEX IF NOT EXISTS gateway_health_by_id ON gateway_health (site, gateway, id);
"""

# One statement a batch: the new seqs pass the gate, their rows go in, and of each
# point's new readings the newest is offered to `latest`, which takes it only if it is
# newer (by ts, ties by higher seq). Rows are taken in seq and tag order, so two
# instances writing batches of one gateway lock in the same order and cannot deadlock.
# The arrays go in binary (%b): dumping them as text costs a quarter more client CPU.
_STORE_READINGS = """
WITH input AS (
    SELECT * FROM unnest(%(seq)b::bigint[], %(ts)b::timestamptz[], %(device)b::text[],
                         %(point)b::text[], %(tag)b::text[], %(value)b::float8[],
                         %(quality)b::text[], %(unit)b::text[])
        AS t(seq, ts, device, point, tag, value, quality, unit)
), new AS (
    INSERT INTO records (site, gateway, seq, kind)
    SELECT %(site)s, %(gateway)s, seq, 'reading' FROM input ORDER BY seq
    ON CONFLICT DO NOTHING
    RETURNING seq
), fresh AS (
    SELECT input.* FROM input JOIN new USING (seq)
), stored AS (
    INSERT INTO readings (site, gateway, seq, ts, device, point, tag, value, quality,
                          unit, historical, received_at)
    SELECT %(site)s, %(gateway)s, seq, ts, device, point, tag, value, quality, unit,
           %(historical)s, %(received_at)s FROM fresh
), newest AS (
    INSERT INTO latest AS l (site, tag, device, point, gateway, seq, ts, value, quality,
                             unit, received_at)
    SELECT DISTINCT ON (tag) %(site)s, tag, device, point, %(gateway)s, seq, ts, value,
           quality, unit, %(received_at)s
    FROM fresh ORDER BY tag, ts DESC, seq DESC
    ON CONFLICT (site, tag) DO UPDATE SET
        device = excluded.device, point = excluded.point, gateway = excluded.gateway,
        seq = excluded.seq, ts = excluded.ts, value = excluded.value,
        quality = excluded.quality, unit = excluded.unit,
        received_at = excluded.received_at
    WHERE excluded.ts > l.ts OR (excluded.ts = l.ts AND excluded.seq > l.seq)
)
SELECT count(*) FROM new
"""

_STORE_EVENTS = """
WITH input AS (
    SELECT * FROM unnest(%(seq)b::bigint[], %(ts)b::timestamptz[], %(source)b::text[],
                         %(event)b::text[], %(state)b::text[], %(severity)b::text[],
                         %(point)b::text[], %(value)b::float8[], %(value_text)b::text[],
                         %(message)b::text[])
        AS t(seq, ts, source, event, state, severity, point, value, value_text, message)
), new AS (
    INSERT INTO records (site, gateway, seq, kind)
    SELECT %(site)s, %(gateway)s, seq, 'event' FROM input ORDER BY seq
    ON CONFLICT DO NOTHING
    RETURNING seq
), stored AS (
    INSERT INTO events (site, gateway, seq, ts, source, event, state, severity, point,
                        value, value_text, message, historical, received_at)
    SELECT %(site)s, %(gateway)s, seq, ts, source, event, state, severity, point,
           value, value_text, message, %(historical)s, %(received_at)s
    FROM input JOIN new USING (seq)
)
SELECT count(*) FROM new
"""

_TOUCH = """
INSERT INTO gateways (site, gateway, last_seen) VALUES (%s, %s, %s)
ON CONFLICT (site, gateway) DO UPDATE SET last_seen = excluded.last_seen
WHERE gateways.last_seen IS NULL OR gateways.last_seen < excluded.last_seen
"""

_LAST_ALARM_STATES = """
SELECT DISTINCT ON (gateway, source) gateway, source, state
FROM events WHERE site = %s AND event = 'alarm'
ORDER BY gateway, source, ts DESC, seq DESC
"""

_READING_COLUMNS = ("seq", "ts", "device", "point", "tag", "value", "quality", "unit")
_EVENT_COLUMNS = ("seq", "ts", "source", "event", "state", "severity", "point",
                  "value", "value_text", "message")


def is_postgres_url(db: str) -> bool:
    """Whether a --db value names a PostgreSQL database rather than a SQLite file."""
    return db.startswith(("postgresql://", "postgres://"))


def _ts(moment: datetime | None) -> str | None:
    return None if moment is None else format_ts(moment)


def _columns(rows: list[dict[str, Any]], names: Sequence[str]) -> dict[str, list[Any]]:
    return {name: [row[name] for row in rows] for name in names}


class SchemaError(RuntimeError):
    """The database holds a schema newer than this program knows."""


class PgStore:
    """The receiver's PostgreSQL database behind a connection pool."""

    def __init__(self, url: str, max_size: int = POOL_MAX_SIZE) -> None:
        self.url = url
        with psycopg.connect(url, connect_timeout=CONNECT_TIMEOUT_S,
                             autocommit=True) as conn:
            self._create_schema(conn)
        self._pool = ConnectionPool(
            url, min_size=1, max_size=max_size, open=False, name="groundwatch-cloud",
            kwargs={"connect_timeout": CONNECT_TIMEOUT_S, "options": "-c TimeZone=UTC"},
        )
        self._pool.open(wait=True, timeout=CONNECT_TIMEOUT_S)
        log.debug("cloud store open at %s", self.safe_url)

    @property
    def safe_url(self) -> str:
        """The URL without its password, for logs."""
        info = psycopg.conninfo.conninfo_to_dict(self.url)
        return f"postgresql://{info.get('host', '')}/{info.get('dbname', '')}"

    @staticmethod
    def _create_schema(conn: psycopg.Connection[Any]) -> None:
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK_KEY,))
            conn.execute(_SCHEMA)
            row = conn.execute("SELECT max(version) FROM schema_version").fetchone()
            found = row[0] if row else None
            if found is None:
                conn.execute("INSERT INTO schema_version (version) VALUES (%s)",
                             (SCHEMA_VERSION,))
            elif found > SCHEMA_VERSION:
                raise SchemaError(f"database schema {found} is newer than this "
                                  f"receiver's {SCHEMA_VERSION}")

    def close(self) -> None:
        """Close every pooled connection."""
        self._pool.close()

    @contextmanager
    def _read(self) -> Iterator[psycopg.Cursor[dict[str, Any]]]:
        """Yield a cursor of dict rows inside one read transaction (a snapshot)."""
        with self._pool.connection() as conn, conn.transaction():
            yield conn.cursor(row_factory=dict_row)

    @contextmanager
    def _write(self) -> Iterator[psycopg.Connection[Any]]:
        with self._pool.connection() as conn, conn.transaction():
            yield conn

    def _retrying(self, work: Any) -> Any:
        """Run work(conn) in a transaction, again after a deadlock or lost race."""
        for attempt in range(1, MAX_TRIES + 1):
            try:
                with self._write() as conn:
                    return work(conn)
            except (pg_errors.DeadlockDetected, pg_errors.SerializationFailure):
                if attempt == MAX_TRIES:
                    raise
                log.warning("write conflict with another receiver; retry %d", attempt)
        raise AssertionError("unreachable")

    # -- writing -------------------------------------------------------------------

    def store_batch(
        self, site: str, gateway: str, records: Sequence[dict[str, Any]],
        historical: bool = False,
    ) -> tuple[list[int], int, int]:
        """Store a batch in one transaction; return (stored seqs, new, duplicates).

        Same contract as CloudStore.store_batch: a bad record raises ValueError and
        nothing is stored; a seq already stored, of either kind, is a duplicate.
        """
        received_at = utc_now()
        stored: list[int] = []
        seen: set[int] = set()
        readings: list[dict[str, Any]] = []
        events: list[dict[str, Any]] = []
        repeated = 0
        for i, rec in enumerate(records):
            kind, row = _row(rec, i, {})
            stored.append(row["seq"])
            if row["seq"] in seen:  # the same seq twice in one batch: the first counts
                repeated += 1
                continue
            seen.add(row["seq"])
            if kind == "reading":
                readings.append(row)
            else:
                value = row["value"]
                row["value_text"] = value if isinstance(value, str) else None
                row["value"] = None if isinstance(value, str) else value
                events.append(row)
        base = {"site": site, "gateway": gateway, "historical": bool(historical),
                "received_at": received_at}

        def work(conn: psycopg.Connection[Any]) -> int:
            new = 0
            for sql, rows, columns in ((_STORE_EVENTS, events, _EVENT_COLUMNS),
                                       (_STORE_READINGS, readings, _READING_COLUMNS)):
                if rows:
                    args = dict(base, **_columns(rows, columns))
                    new += conn.execute(sql, args).fetchall()[0][0]
            conn.execute(_TOUCH, (site, gateway, received_at))
            return new

        new = int(self._retrying(work))
        return stored, new, len(stored) - new

    def dead_letter(self, topic: str, reason: str, payload: str, site: str | None = None,
                    gateway: str | None = None, seq: int | None = None) -> None:
        """Keep what could not be ingested, with the reason, for someone to look at."""
        with self._write() as conn:
            conn.execute(
                "INSERT INTO dead_letters (received_at, topic, site, gateway, seq, reason,"
                " payload) VALUES (%s, %s, %s, %s, %s, %s, %s)",
                (utc_now(), topic, site, gateway, seq, reason,
                 payload[:65536].replace("\x00", "\ufffd")),
            )

    def dead_letters(self, limit: int = 100) -> list[dict[str, Any]]:
        """The newest dead letters."""
        with self._read() as conn:
            rows = conn.execute(
                "SELECT id, received_at, topic, site, gateway, seq, reason "
                "FROM dead_letters ORDER BY id DESC LIMIT %s", (limit,)).fetchall()
        return [dict(row, received_at=_ts(row["received_at"])) for row in rows]

    def set_gateway_status(
        self, site: str, gateway: str, status: str, seen: bool = False,
    ) -> None:
        """Record a gateway's status message; `seen` also marks it heard from now."""
        now = utc_now()

        def work(conn: psycopg.Connection[Any]) -> None:
            conn.execute(
                "INSERT INTO gateways (site, gateway, status, status_ts) "
                "VALUES (%s, %s, %s, %s) ON CONFLICT (site, gateway) DO UPDATE SET "
                "status = excluded.status, status_ts = excluded.status_ts",
                (site, gateway, status, now))
            if seen:
                conn.execute(_TOUCH, (site, gateway, now))

        self._retrying(work)

    def store_health(
        self, site: str, gateway: str, health: dict[str, Any], seen: bool = False,
    ) -> bool:
        """Keep a gateway's health message; `seen` also marks it heard from now.

        Returns False for a message already stored (a retained one delivered again, or
        one another receiver instance stored). Only the newest HEALTH_HISTORY are kept.
        """
        now = utc_now()
        ts = normalise_ts(health["ts"])
        body = json.dumps(health, separators=(",", ":"))

        def work(conn: psycopg.Connection[Any]) -> bool:
            new = conn.execute(
                "INSERT INTO gateway_health (site, gateway, ts, received_at, body) "
                "VALUES (%s, %s, %s, %s, %s) ON CONFLICT (site, gateway, ts) DO NOTHING",
                (site, gateway, ts, now, body)).rowcount == 1
            conn.execute("INSERT INTO gateways (site, gateway) VALUES (%s, %s) "
                         "ON CONFLICT DO NOTHING", (site, gateway))
            if seen:
                conn.execute(_TOUCH, (site, gateway, now))
            if new:
                conn.execute(
                    "DELETE FROM gateway_health WHERE site = %s AND gateway = %s AND "
                    "id <= (SELECT id FROM gateway_health WHERE site = %s AND "
                    "gateway = %s ORDER BY id DESC LIMIT 1 OFFSET %s)",
                    (site, gateway, site, gateway, HEALTH_HISTORY))
            return new

        return bool(self._retrying(work))

    # -- reading -------------------------------------------------------------------

    def sites(self) -> list[str]:
        """Return every site heard from, sorted."""
        with self._read() as conn:
            rows = conn.execute(
                "SELECT DISTINCT site FROM gateways ORDER BY site").fetchall()
        return [row["site"] for row in rows]

    def site_exists(self, site: str) -> bool:
        """Return whether any gateway of this site has been heard from."""
        with self._read() as conn:
            return conn.execute("SELECT 1 FROM gateways WHERE site = %s LIMIT 1",
                                (site,)).fetchone() is not None

    def gateways(self, site: str) -> list[dict[str, Any]]:
        """Return the site's gateways: gateway, last_seen, status, status_ts."""
        with self._read() as conn:
            rows = conn.execute(
                "SELECT gateway, last_seen, status, status_ts FROM gateways "
                "WHERE site = %s ORDER BY gateway", (site,)).fetchall()
        return [dict(row, last_seen=_ts(row["last_seen"]),
                     status_ts=_ts(row["status_ts"])) for row in rows]

    def latest_health(self, site: str) -> dict[str, dict[str, Any]]:
        """The newest health message of each of the site's gateways, by gateway."""
        with self._read() as conn:
            rows = conn.execute(
                "SELECT DISTINCT ON (gateway) gateway, received_at, body "
                "FROM gateway_health WHERE site = %s ORDER BY gateway, id DESC",
                (site,)).fetchall()
        return {row["gateway"]: dict(row["body"], received_at=_ts(row["received_at"]))
                for row in rows}

    def health_history(
        self, site: str, gateway: str, limit: int = 100,
    ) -> list[dict[str, Any]]:
        """A gateway's newest health messages, newest first."""
        with self._read() as conn:
            rows = conn.execute(
                "SELECT received_at, body FROM gateway_health WHERE site = %s AND "
                "gateway = %s ORDER BY id DESC LIMIT %s", (site, gateway, limit),
            ).fetchall()
        return [dict(row["body"], received_at=_ts(row["received_at"])) for row in rows]

    def site_summary(self, site: str) -> dict[str, Any]:
        """Return the site's newest reading time, point count and active alarm count."""
        with self._read() as conn:
            row = conn.execute(
                "SELECT max(ts) AS last_data, count(*) AS points FROM latest "
                "WHERE site = %s", (site,)).fetchone()
            states = conn.execute(_LAST_ALARM_STATES, (site,)).fetchall()
        assert row is not None
        active = sum(1 for state in states if state["state"] != "cleared")
        return {"last_data": _ts(row["last_data"]), "points": row["points"],
                "active_alarms": active}

    def latest_points(self, site: str) -> list[dict[str, Any]]:
        """Return the newest reading of every point of the site, by point name."""
        with self._read() as conn:
            rows = conn.execute(
                "SELECT tag AS point, device, value, unit, quality, ts, seq, gateway "
                "FROM latest WHERE site = %s ORDER BY tag", (site,)).fetchall()
        return [dict(row, ts=_ts(row["ts"])) for row in rows]

    def point_exists(self, site: str, point: str) -> bool:
        """Return whether the site has any reading of the point ("device.point")."""
        with self._read() as conn:
            return conn.execute("SELECT 1 FROM latest WHERE site = %s AND tag = %s",
                                (site, point)).fetchone() is not None

    def readings(
        self, site: str, point: str, since: str | None = None, until: str | None = None,
        limit: int = 10_000,
    ) -> list[dict[str, Any]]:
        """Return readings of a point with since <= ts < until, by ts then seq."""
        sql = ("SELECT ts, value, quality, unit, seq, gateway FROM readings "
               "WHERE site = %s AND tag = %s")
        args: list[Any] = [site, point]
        if since is not None:
            sql += " AND ts >= %s"
            args.append(normalise_ts(since))
        if until is not None:
            sql += " AND ts < %s"
            args.append(normalise_ts(until))
        sql += " ORDER BY ts, seq LIMIT %s"
        args.append(limit)
        with self._read() as conn:
            rows = conn.execute(sql, args).fetchall()
        return [dict(row, ts=_ts(row["ts"])) for row in rows]

    def events(self, site: str, event: str, limit: int = 1000) -> list[dict[str, Any]]:
        """Return the site's events of one kind ("alarm", "device"), newest first."""
        with self._read() as conn:
            rows = conn.execute(
                "SELECT ts, source, state, severity, point, value, value_text, message,"
                " seq, gateway FROM events WHERE site = %s AND event = %s "
                "ORDER BY ts DESC, seq DESC LIMIT %s", (site, event, limit)).fetchall()
        out = []
        for row in rows:
            text = row.pop("value_text")
            out.append(dict(row, ts=_ts(row["ts"]),
                            value=text if text is not None else row["value"]))
        return out

    def active_alarms(self, site: str) -> list[str]:
        """Return the names of the site's alarms whose newest event is not "cleared"."""
        with self._read() as conn:
            rows = conn.execute(_LAST_ALARM_STATES, (site,)).fetchall()
        return sorted({row["source"] for row in rows if row["state"] != "cleared"})
