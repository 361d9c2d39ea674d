"""The gateway's SQLite store: readings, events, the outbox and alarm state.

Every record gets a per-gateway sequence number when it is committed, and enters the
outbox in the same transaction; it leaves the outbox only when the cloud receiver
acknowledges that it stored it. Readings are committed in batches with
synchronous=NORMAL (WAL); alarm events with synchronous=FULL, so an alarm survives a
power cut the moment it is recorded.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from edge.schema import (  # noqa: F401 - re-exported for the store's users
    MIGRATIONS,
    QUALITY_CODES,
    QUALITY_NAMES,
    SCHEMA,
    SCHEMA_VERSION,
)

log = logging.getLogger(__name__)


WAL_LIMIT_BYTES = 4 << 20
BUSY_TIMEOUT_MS = 10000


class StoreError(Exception):
    """The store cannot be used as it is (a newer schema, a file that cannot be moved)."""


def utc_now_iso() -> str:
    """Now, as ISO 8601 UTC with an explicit offset and milliseconds."""
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def iso_to_ms(ts: str) -> int:
    """ISO 8601 with an offset -> integer milliseconds since 1970 (UTC)."""
    return round(datetime.fromisoformat(ts).timestamp() * 1000)


def ms_to_iso(ts_ms: int) -> str:
    """Integer milliseconds since 1970 -> ISO 8601 UTC, as utc_now_iso() writes it."""
    return datetime.fromtimestamp(ts_ms / 1000, UTC).isoformat(timespec="milliseconds")


@dataclass(frozen=True, slots=True)
class ClockMark:
    """When a record was taken, by a clock that survives a wrong wall clock."""

    mono_ms: int
    boot_id: str


@dataclass(frozen=True, slots=True)
class Request:
    """An operator's request for the running gateway: an acknowledgement of `target`
    (an alarm), or maintenance mode of `target` (a device or "device.point") on/off."""

    kind: str  # "ack" or "maintenance"
    id: int
    target: str
    who: str
    on: bool = True
    text: str = ""  # the ack's comment or the maintenance reason
    until: str | None = None
    command_id: str | None = None  # the cloud command it came from


@dataclass(frozen=True, slots=True)
class MaintenanceRow:
    target: str
    who: str
    reason: str
    since: str
    until: str | None


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
        self._point_ids: dict[tuple[str, str, str], int] = {}
        # Set by the gateway: returns a ClockMark while the wall clock is not
        # synchronised, so every record stamped then is held for correction.
        self.clock_mark: Callable[[], ClockMark | None] | None = None
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
        fresh = not self.conn.execute("SELECT count(*) FROM sqlite_schema").fetchone()[0]
        with self._transaction():
            if fresh:
                for statement in SCHEMA.split(";\n"):
                    if statement.strip():
                        self.conn.execute(statement)
                self.conn.executemany("INSERT INTO qualities(code, name) VALUES (?, ?)",
                                      [(c, n) for n, c in QUALITY_CODES.items()])
            else:
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

    def _point_id(self, device: str, point: str, unit: str) -> int:
        key = (device, point, unit)
        pid = self._point_ids.get(key)
        if pid is None:
            self.conn.execute("INSERT OR IGNORE INTO points(device, point, unit) "
                              "VALUES (?, ?, ?)", key)
            pid = self.conn.execute(
                "SELECT id FROM points WHERE device=? AND point=? AND unit=?", key
            ).fetchone()[0]
            self._point_ids[key] = pid
        return pid

    def add_readings(
        self, ts: str, device: str, samples: Iterable[tuple[str, float | None, str, str]],
        unsynced: ClockMark | None = None,
    ) -> list[int]:
        """Commit (point, value, quality, unit) samples of one poll; return their seqs.

        With `unsynced` (the wall clock is not synchronised), each reading is stored
        as clock_unsynced with the monotonic time it was taken at, and held back from
        the uplink until correct_clock() fixes its time.
        """
        rows = list(samples)
        if not rows:
            return []
        if unsynced is None and self.clock_mark is not None:
            unsynced = self.clock_mark()
        ts_ms = iso_to_ms(ts)
        start = self.next_seq
        with self._transaction():
            seqs = self._take_seqs(len(rows))
            self.conn.executemany(
                "INSERT INTO samples(seq, ts_ms, point_id, value, quality) "
                "VALUES (?,?,?,?,?)",
                [(s, ts_ms, self._point_id(device, point, unit), value,
                  QUALITY_CODES["clock_unsynced"] if unsynced else QUALITY_CODES[q])
                 for s, (point, value, q, unit) in zip(seqs, rows, strict=True)],
            )
            self.conn.executemany("INSERT INTO pending_readings(seq) VALUES (?)",
                                  [(s,) for s in seqs])
            if unsynced:
                self.conn.executemany(
                    "INSERT INTO unsynced(seq, mono_ms, boot_id, quality) "
                    "VALUES (?,?,?,?)",
                    [(s, unsynced.mono_ms, unsynced.boot_id, QUALITY_CODES[r[2]])
                     for s, r in zip(seqs, rows, strict=True)],
                )
        self.next_seq = start + len(rows)
        return list(seqs)

    def add_event(
        self, source: str, event: str, state: str, *, severity: str | None = None,
        point: str | None = None, value: float | None = None, message: str = "",
        ts: str | None = None, durable: bool = True, unsynced: ClockMark | None = None,
    ) -> int:
        """Commit one event; alarm events are fsynced before this returns."""
        ts = ts or utc_now_iso()
        if unsynced is None and self.clock_mark is not None:
            unsynced = self.clock_mark()
        if durable:
            self.conn.execute("PRAGMA synchronous=FULL")
        try:
            with self._transaction():
                seq = self._insert_event(ts, source, event, state, severity, point,
                                         value, message, unsynced)
        finally:
            if durable:
                self.conn.execute("PRAGMA synchronous=NORMAL")
        return seq

    def _insert_event(self, ts: str, source: str, event: str, state: str,
                      severity: str | None, point: str | None, value: float | None,
                      message: str, unsynced: ClockMark | None) -> int:
        """Insert one event into events and the outbox, inside a transaction."""
        (seq,) = self._take_seqs(1)
        self.conn.execute(
            "INSERT INTO events(seq, ts, source, event, state, severity, point, "
            "value, message) VALUES (?,?,?,?,?,?,?,?,?)",
            (seq, ts, source, event, state, severity, point, value, message),
        )
        self.conn.execute("INSERT INTO pending_events(seq) VALUES (?)", (seq,))
        if unsynced:
            self.conn.execute(
                "INSERT INTO unsynced(seq, mono_ms, boot_id) VALUES (?,?,?)",
                (seq, unsynced.mono_ms, unsynced.boot_id),
            )
        self.next_seq = seq + 1
        return seq

    # -- clock -----------------------------------------------------------------------

    def correct_clock(self, boot_id: str, offset_ms: int) -> dict[str, int]:
        """The clock is synchronised: fix the times of records held since this boot.

        offset_ms is wall-clock minus monotonic milliseconds, now that the wall clock
        is right; a held record's time becomes its monotonic time plus the offset,
        and a reading gets back the quality it was decoded with. Records held from an
        earlier boot cannot be corrected (their monotonic clock is gone): they are
        released as they are, still marked clock_unsynced (events: in the message).
        """
        with self._transaction():
            corrected = self.conn.execute(
                "UPDATE samples SET ts_ms = u.mono_ms + ?, quality = u.quality "
                "FROM unsynced u WHERE u.seq = samples.seq AND u.boot_id = ?",
                (offset_ms, boot_id)).rowcount
            events = self.conn.execute(
                "SELECT u.seq, u.mono_ms FROM unsynced u JOIN events e USING (seq) "
                "WHERE u.boot_id = ?", (boot_id,)).fetchall()
            self.conn.executemany("UPDATE events SET ts = ? WHERE seq = ?", [
                (ms_to_iso(mono_ms + offset_ms), seq) for seq, mono_ms in events])
            self.conn.execute("DELETE FROM unsynced WHERE boot_id = ?", (boot_id,))
        return {"corrected": corrected + len(events), **self.release_unsynced(boot_id)}

    def release_unsynced(self, keep_boot_id: str | None = None) -> dict[str, int]:
        """Send what is held as it is (marked), except records of `keep_boot_id`."""
        with self._transaction():
            self.conn.execute(
                "UPDATE events SET message = coalesce(nullif(message, '') || ' ', '') "
                "|| '[time from an unsynchronised clock]' WHERE seq IN "
                "(SELECT seq FROM unsynced WHERE boot_id IS NOT ?)", (keep_boot_id,))
            released = self.conn.execute(
                "DELETE FROM unsynced WHERE boot_id IS NOT ?", (keep_boot_id,)).rowcount
        return {"released_unsynced": released}

    def held_unsynced(self, boot_id: str) -> tuple[int, int | None]:
        """Records held for a clock correction in this boot, and the oldest's mono_ms."""
        n, oldest = self.conn.execute(
            "SELECT count(*), min(mono_ms) FROM unsynced WHERE boot_id = ?", (boot_id,)
        ).fetchone()
        return n, oldest

    def _transaction(self) -> "_Tx":
        return _Tx(self)

    # -- outbox -------------------------------------------------------------------

    def outbox_batch(self, limit: int, exclude: set[int],
                     readings: bool = True) -> list[dict[str, Any]]:
        """The next records to send: events first, then readings, oldest first.

        Records held for a clock correction (table `unsynced`) wait.
        """
        out: list[dict[str, Any]] = []
        for sql, fetch in (
            ("SELECT p.seq FROM pending_events p WHERE NOT EXISTS "
             "(SELECT 1 FROM unsynced u WHERE u.seq = p.seq) ORDER BY p.seq LIMIT ?",
             self._event_records),
            ("SELECT p.seq FROM pending_readings p WHERE NOT EXISTS "
             "(SELECT 1 FROM unsynced u WHERE u.seq = p.seq) ORDER BY p.seq LIMIT ?",
             self._reading_records),
        )[:2 if readings else 1]:
            want = limit - len(out)
            if want <= 0:
                break
            seqs = [r[0] for r in self.conn.execute(sql, (want + len(exclude),))
                    if r[0] not in exclude][:want]
            for chunk in _chunks(seqs, 500):
                out += fetch(chunk)
        return out

    def outbox_events(self, limit: int, exclude: set[int]) -> list[dict[str, Any]]:
        """Pending events not in `exclude`, oldest first."""
        return self.outbox_batch(limit, exclude, readings=False)

    def outbox_readings(
        self, limit: int, exclude: set[int], *, newest: bool = False,
        since_ms: int | None = None, before_ms: int | None = None,
    ) -> list[dict[str, Any]]:
        """Pending readings not in `exclude`, in seq order within the batch.

        newest=False takes the oldest pending readings (those taken before `before_ms`
        if given); newest=True takes them from the newest end (those taken at or after
        `since_ms`), looking at no more than the newest `limit` candidates, so the
        query costs the same however deep the backlog behind them is.
        """
        hold = "NOT EXISTS (SELECT 1 FROM unsynced u WHERE u.seq = p.seq)"
        n = limit + len(exclude)
        if newest:
            rows = self.conn.execute(
                "SELECT p.seq, s.ts_ms FROM pending_readings p JOIN samples s "
                f"ON s.seq = p.seq WHERE {hold} ORDER BY p.seq DESC LIMIT ?", (n,))
            seqs = [seq for seq, ts_ms in rows if seq not in exclude
                    and (since_ms is None or ts_ms >= since_ms)][:limit]
            seqs.reverse()
        else:
            rows = self.conn.execute(
                "SELECT p.seq FROM pending_readings p JOIN samples s ON s.seq = p.seq "
                f"WHERE {hold} AND s.ts_ms < ? ORDER BY p.seq LIMIT ?",
                (before_ms if before_ms is not None else 1 << 62, n))
            seqs = [r[0] for r in rows if r[0] not in exclude][:limit]
        return [rec for chunk in _chunks(seqs, 500) for rec in self._reading_records(chunk)]

    def outbox_records(self, seqs: list[int]) -> list[dict[str, Any]]:
        """The records of `seqs` still in the outbox: events first, then readings."""
        out: list[dict[str, Any]] = []
        for table, fetch in (("pending_events", self._event_records),
                             ("pending_readings", self._reading_records)):
            for chunk in _chunks(sorted(seqs), 500):
                pending = [r[0] for r in self.conn.execute(
                    f"SELECT seq FROM {table} WHERE seq IN "
                    f"({','.join('?' * len(chunk))})", chunk)]
                if pending:
                    out += fetch(pending)
        return out

    def park(self, seqs: Iterable[int], reason: str) -> int:
        """Move records out of the outbox into `parked`, with the reason; return count."""
        parked = 0
        now = utc_now_iso()
        with self._transaction():
            for seq in seqs:
                for table, kind in (("pending_events", "event"),
                                    ("pending_readings", "reading")):
                    if self.conn.execute(f"DELETE FROM {table} WHERE seq = ?",
                                         (seq,)).rowcount:
                        self.conn.execute(
                            "INSERT OR REPLACE INTO parked(seq, kind, parked_at, reason) "
                            "VALUES (?,?,?,?)", (seq, kind, now, reason))
                        parked += 1
        return parked

    def parked_count(self) -> int:
        return self.conn.execute("SELECT count(*) FROM parked").fetchone()[0]

    def _event_records(self, seqs: list[int]) -> list[dict[str, Any]]:
        return [_event_record(r) for r in self.conn.execute(
            "SELECT seq, ts, source, event, state, severity, point, value, message "
            f"FROM events WHERE seq IN ({','.join('?' * len(seqs))}) ORDER BY seq", seqs)]

    def _reading_records(self, seqs: list[int]) -> list[dict[str, Any]]:
        return [
            {"seq": seq, "kind": "reading", "ts": ms_to_iso(ts_ms), "device": device,
             "point": point, "value": value, "quality": QUALITY_NAMES[quality],
             "unit": unit}
            for seq, ts_ms, device, point, value, quality, unit in self.conn.execute(
                "SELECT s.seq, s.ts_ms, p.device, p.point, s.value, s.quality, p.unit "
                "FROM samples s JOIN points p ON p.id = s.point_id "
                f"WHERE s.seq IN ({','.join('?' * len(seqs))}) ORDER BY s.seq", seqs)
        ]

    def mark_delivered(self, ranges: list[list[int]]) -> int:
        """Remove acknowledged sequence ranges from the outbox; return rows removed."""
        removed = 0
        with self._transaction():
            for first, last in ranges:
                for table in ("pending_events", "pending_readings"):
                    removed += self.conn.execute(
                        f"DELETE FROM {table} WHERE seq BETWEEN ? AND ?", (first, last)
                    ).rowcount
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
            ("evicted_delivered", "SELECT seq FROM samples WHERE seq NOT IN "
                                  "(SELECT seq FROM pending_readings) ORDER BY seq "
                                  "LIMIT ?"),
            ("evicted_unsent", "SELECT seq FROM pending_readings ORDER BY seq LIMIT ?"),
        ):
            while used > target:
                # Estimate how many rows free the excess; deleting in bounded steps
                # keeps each transaction short on an SD card.
                rows = self.conn.execute(
                    "SELECT count(*) FROM (SELECT seq FROM samples LIMIT 100000)"
                ).fetchone()[0]
                per_row = max(used / max(rows, 1), 16.0) if rows < 100000 else 32.0
                n = min(max(int((used - target) / per_row) + 1, 100), 20000)
                with self._transaction():
                    seqs = [r[0] for r in self.conn.execute(select, (n,))]
                    for chunk in _chunks(seqs, 500):
                        marks = ",".join("?" * len(chunk))
                        for table in ("samples", "pending_readings", "unsynced"):
                            self.conn.execute(
                                f"DELETE FROM {table} WHERE seq IN ({marks})", chunk)
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
        return self.conn.execute(
            "SELECT (SELECT count(*) FROM pending_events) + "
            "(SELECT count(*) FROM pending_readings)").fetchone()[0]

    def oldest_unsent_ts(self) -> str | None:
        row = self.conn.execute(
            "SELECT min(s.ts_ms) FROM samples s WHERE s.seq = "
            "(SELECT min(seq) FROM pending_readings)").fetchone()
        reading = ms_to_iso(row[0]) if row and row[0] is not None else None
        event = self.conn.execute(
            "SELECT min(e.ts) FROM events e JOIN pending_events USING (seq)").fetchone()[0]
        return min((t for t in (reading, event) if t), default=None)

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
            self._save_alarm_state(row)

    def _save_alarm_state(self, row: AlarmStateRow) -> None:
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

    # -- operator requests, maintenance and cloud commands ----------------------------

    def request_maintenance(self, target: str, on: bool, who: str = "local",
                            reason: str = "", until: str | None = None) -> None:
        """Ask the running gateway to put a device or point in or out of maintenance."""
        with self._transaction():
            self.conn.execute(
                "INSERT INTO maintenance_requests(target, on_off, who, reason, until, "
                "requested_at) VALUES (?,?,?,?,?,?)",
                (target, int(on), who, reason, until, utc_now_iso()))

    def enqueue_command(self, command: dict[str, Any]) -> bool:
        """Turn a checked cloud command into a request, once; False if seen before."""
        cid, kind = command["id"], command["command"]
        with self._transaction():
            if not self.conn.execute(
                    "INSERT OR IGNORE INTO commands(id, kind, received_at, body) "
                    "VALUES (?,?,?,?)", (cid, kind, utc_now_iso(),
                                         json.dumps(command, ensure_ascii=False))
                    ).rowcount:
                return False
            if kind == "ack":
                cur = self.conn.execute(
                    "INSERT INTO ack_requests(alarm, requested_at, who) VALUES (?,?,?)",
                    (command["alarm"], utc_now_iso(), command["who"]))
            else:
                cur = self.conn.execute(
                    "INSERT INTO maintenance_requests(target, on_off, who, reason, "
                    "until, requested_at) VALUES (?,?,?,?,?,?)",
                    (command["target"], int(command["on"]), command["who"],
                     command.get("reason") or "", command.get("until"), utc_now_iso()))
            self.conn.execute("UPDATE commands SET request = ? WHERE id = ?",
                              (cur.lastrowid, cid))
        return True

    def pending_requests(self) -> list[Request]:
        """Requests not yet applied, acknowledgements first, oldest first."""
        commands = {(kind, request): (cid, json.loads(body)) for cid, kind, request, body
                    in self.conn.execute("SELECT id, kind, request, body FROM commands "
                                         "WHERE result IS NULL")}
        out = []
        for rid, alarm, who in self.conn.execute(
                "SELECT id, alarm, who FROM ack_requests ORDER BY id"):
            cid, body = commands.get(("ack", rid), (None, {}))
            out.append(Request("ack", rid, alarm, who, text=body.get("comment") or "",
                               command_id=cid))
        for rid, target, on, who, reason, until in self.conn.execute(
                "SELECT id, target, on_off, who, reason, until FROM maintenance_requests "
                "ORDER BY id"):
            cid, _ = commands.get(("maintenance", rid), (None, {}))
            out.append(Request("maintenance", rid, target, who, bool(on), reason, until,
                               cid))
        return out

    def finish_request(
        self, req: Request, events: list[dict[str, Any]], *,
        alarm_states: Iterable[AlarmStateRow] = (), maintenance: MaintenanceRow | None = None,
        result: str = "applied",
    ) -> list[int]:
        """Commit what a request did in one durable transaction and drop the request.

        `events` are add_event keyword arguments; `maintenance` is the new row of
        req.target when it enters maintenance (its row is deleted when it leaves).
        A command's result is recorded with it. Returns the events' seqs.
        """
        mark = self.clock_mark() if self.clock_mark is not None else None
        self.conn.execute("PRAGMA synchronous=FULL")
        try:
            with self._transaction():
                seqs = [self._insert_event(
                    e.get("ts") or utc_now_iso(), e["source"], e["event"], e["state"],
                    e.get("severity"), e.get("point"), e.get("value"),
                    e.get("message", ""), mark) for e in events]
                for row in alarm_states:
                    self._save_alarm_state(row)
                if req.kind == "maintenance":
                    if maintenance is not None:
                        self.conn.execute(
                            "INSERT OR REPLACE INTO maintenance(target, who, reason, "
                            "since, until) VALUES (?,?,?,?,?)",
                            (maintenance.target, maintenance.who, maintenance.reason,
                             maintenance.since, maintenance.until))
                    elif not req.on:
                        self.conn.execute("DELETE FROM maintenance WHERE target = ?",
                                          (req.target,))
                table = "ack_requests" if req.kind == "ack" else "maintenance_requests"
                if req.id >= 0:
                    self.conn.execute(f"DELETE FROM {table} WHERE id = ?", (req.id,))
                if req.command_id is not None:
                    self.conn.execute("UPDATE commands SET result = ? WHERE id = ?",
                                      (result, req.command_id))
        finally:
            self.conn.execute("PRAGMA synchronous=NORMAL")
        return seqs

    def load_maintenance(self) -> dict[str, MaintenanceRow]:
        return {r[0]: MaintenanceRow(*r) for r in self.conn.execute(
            "SELECT target, who, reason, since, until FROM maintenance")}


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
