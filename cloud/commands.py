"""Cloud -> gateway commands: queued in SQLite, published by the receiver, re-sent until
the gateway's answer (a `command` event record) arrives.

Anything may queue a command (the web app's acknowledgement endpoint, `groundwatch
command`): `send_ack` and `send_maintenance` only insert a row. The receiver process
publishes what is queued on groundwatch/{site}/{gateway}/command, at once and again
whenever the gateway comes back online (a live `online` status: the gateway has
subscribed to its command topic by then) or `resend_after_s` has passed without an
answer. The gateway applies each command id once, so a repeat is harmless. A command
not answered within `expire_after_s` is marked expired and no longer sent.

Acknowledgements made in the web app (table `alarm_acks`, cloud/operations.py) become
ack commands here; the ack's `delivered_at` is set when the gateway's answer arrives.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cloud.sidecar import RoundWorker, connect_shared
from cloud.store import format_ts, normalise_ts, utc_now
from groundwatch import contract

log = logging.getLogger(__name__)

RESEND_AFTER_S = 30.0
EXPIRE_AFTER_S = 24 * 3600.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS gateway_commands (
    id TEXT PRIMARY KEY,
    site TEXT NOT NULL,
    gateway TEXT NOT NULL,
    kind TEXT NOT NULL,
    body TEXT NOT NULL,
    who TEXT NOT NULL,
    created_at TEXT NOT NULL,
    created_s REAL NOT NULL,
    sends INTEGER NOT NULL DEFAULT 0,
    last_sent_s REAL,
    done_at TEXT,
    result TEXT,
    message TEXT,
    ack_id INTEGER UNIQUE
);
CREATE INDEX IF NOT EXISTS gateway_commands_open ON gateway_commands (done_at, site);
-- Each alarm's newest event per gateway (by ts, then seq, as the store orders them):
-- where an acknowledgement naming only the site and the alarm goes, and whether the
-- alarm is active and acknowledged.
CREATE TABLE IF NOT EXISTS alarm_states (
    site TEXT NOT NULL,
    alarm TEXT NOT NULL,
    gateway TEXT NOT NULL,
    state TEXT NOT NULL,
    ts TEXT NOT NULL,
    seq INTEGER NOT NULL,
    message TEXT,
    PRIMARY KEY (site, alarm, gateway)
) WITHOUT ROWID;
"""

Publish = Callable[[str, bytes], bool]


class CommandError(ValueError):
    """A command that cannot be queued (no such gateway known for the alarm...)."""


class Commands(RoundWorker):
    """The command queue in the cloud's SQLite file, and its sender."""

    thread_name = "commands"

    def __init__(self, path: str | Path, publish: Publish | None = None, *,
                 resend_after_s: float = RESEND_AFTER_S,
                 expire_after_s: float = EXPIRE_AFTER_S,
                 clock: Callable[[], float] = time.time) -> None:
        self.path = str(path)
        self.publish = publish
        self.resend_after_s, self.expire_after_s = resend_after_s, expire_after_s
        self.clock = clock
        self._lock = threading.Lock()
        self._db = connect_shared(self.path, _SCHEMA)
        super().__init__()
        self._online: set[tuple[str, str]] = set()
        self._unresolved: set[int] = set()  # web acks whose gateway is unknown (logged)

    def close(self) -> None:
        self.stop()
        with self._lock:
            self._db.close()

    # -- queueing ----------------------------------------------------------------

    def _queue(self, site: str, gateway: str, body: dict[str, Any],
               ack_id: int | None = None) -> str:
        cid = f"c-{uuid.uuid4().hex}"
        body = {"id": cid, "ts": utc_now(), **body}
        contract.encode_command(site, gateway, body)  # checks it: ContractError
        with self._lock:
            self._db.execute(
                "INSERT INTO gateway_commands (id, site, gateway, kind, body, who, "
                "created_at, created_s, ack_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (cid, site, gateway, body["command"],
                 json.dumps(body, ensure_ascii=False), body["who"], body["ts"],
                 self.clock(), ack_id))
        log.info("command %s queued for %s/%s: %s by %s", cid, site, gateway,
                 body["command"], body["who"])
        self._wake.set()
        return cid

    def gateway_of(self, site: str, alarm: str) -> str | None:
        """The gateway that last reported the alarm, if any did."""
        with self._lock:
            row = self._db.execute(
                "SELECT gateway FROM alarm_states WHERE site = ? AND alarm = ? "
                "ORDER BY ts DESC LIMIT 1", (site, alarm)).fetchone()
        return None if row is None else str(row["gateway"])

    def send_ack(self, site: str, alarm: str, who: str, comment: str = "",
                 gateway: str | None = None, ack_id: int | None = None) -> str:
        """Queue an acknowledgement of `alarm` for its gateway; return the command id.

        Without `gateway`, the one that last reported the alarm; CommandError if none
        has.
        """
        gateway = gateway or self.gateway_of(site, alarm)
        if gateway is None:
            raise CommandError(f"no gateway of site {site!r} has reported alarm "
                               f"{alarm!r}")
        body: dict[str, Any] = {"command": "ack", "alarm": alarm, "who": who}
        if comment:
            body["comment"] = comment[:500]
        return self._queue(site, gateway, body, ack_id)

    def send_maintenance(self, site: str, gateway: str, target: str, on: bool,
                         who: str, reason: str = "", until: str | None = None) -> str:
        """Queue maintenance on/off of a device or "device.point"; return the id."""
        body: dict[str, Any] = {"command": "maintenance", "target": target, "on": on,
                                "who": who}
        if reason:
            body["reason"] = reason[:500]
        if until:
            body["until"] = until
        return self._queue(site, gateway, body)

    def commands(self, site: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        """Commands, newest first, with their state (pending, done, expired)."""
        sql = ("SELECT id, site, gateway, kind, body, who, created_at, sends, done_at, "
               "result, message FROM gateway_commands")
        args: list[Any] = []
        if site is not None:
            sql += " WHERE site = ?"
            args.append(site)
        sql += " ORDER BY created_s DESC LIMIT ?"
        args.append(limit)
        with self._lock:
            rows = [dict(r) for r in self._db.execute(sql, args)]
        for row in rows:
            row["body"] = json.loads(row["body"])
            row["state"] = ("pending" if row["done_at"] is None else
                            "expired" if row["result"] == "expired" else "done")
        return rows

    def alarm_states(self, site: str) -> list[dict[str, Any]]:
        """Each alarm's newest state per gateway: active unless cleared; acknowledged
        when its newest event is an acknowledgement (the condition still holds, the
        latch is released), with who did it in `message`."""
        with self._lock:
            rows = [dict(r) for r in self._db.execute(
                "SELECT alarm, gateway, state, ts, seq, message FROM alarm_states "
                "WHERE site = ? ORDER BY alarm, gateway", (site,))]
        for row in rows:
            row["active"] = row["state"] != "cleared"
            row["acknowledged"] = row["state"] == "acknowledged"
        return rows

    def acknowledged_since(self, site: str, gateway: str, alarm: str,
                           since_s: float) -> str | None:
        """Who acknowledged the alarm in the cloud since `since_s`, or None."""
        with self._lock:
            row = self._db.execute(
                "SELECT who FROM gateway_commands WHERE site = ? AND gateway = ? AND "
                "kind = 'ack' AND json_extract(body, '$.alarm') = ? AND created_s >= ? "
                "ORDER BY created_s LIMIT 1", (site, gateway, alarm, since_s)).fetchone()
        return None if row is None else str(row["who"])

    # -- what arrives from gateways (the ingest's network thread) ------------------

    def on_records(self, site: str, gateway: str, records: Iterable[dict[str, Any]]
                   ) -> None:
        """Note alarms' gateways; mark commands done when their answers arrive."""
        alarms, answers = [], []
        for rec in records:
            if rec.get("kind") != "event":
                continue
            if rec.get("event") == "alarm":
                alarms.append(rec)
            elif rec.get("event") == "command":
                answers.append(rec)
        if not alarms and not answers:
            return
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.executemany(
                    "INSERT INTO alarm_states (site, alarm, gateway, state, ts, seq, "
                    "message) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (site, alarm, "
                    "gateway) DO UPDATE SET state = excluded.state, ts = excluded.ts, "
                    "seq = excluded.seq, message = excluded.message WHERE excluded.ts > "
                    "alarm_states.ts OR (excluded.ts = alarm_states.ts AND "
                    "excluded.seq > alarm_states.seq)",
                    [(site, r["source"], gateway, r["state"], normalise_ts(r["ts"]),
                      r["seq"], r.get("message")) for r in alarms])
                done = []
                for rec in answers:
                    cur = self._db.execute(
                        "UPDATE gateway_commands SET done_at = ?, result = ?, message = ? "
                        "WHERE id = ? AND site = ? AND gateway = ? AND (done_at IS NULL "
                        "OR result = 'expired') RETURNING ack_id",
                        (rec["ts"], rec["state"], rec.get("message"), rec["source"],
                         site, gateway))
                    row = cur.fetchone()
                    if row is not None:
                        done.append((rec["source"], rec["state"], row["ack_id"], rec["ts"]))
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        for cid, result, ack_id, ts in done:
            log.info("command %s answered by %s/%s: %s", cid, site, gateway, result)
            if ack_id is not None:
                self._mark_delivered(ack_id, ts)

    def on_gateway_online(self, site: str, gateway: str) -> None:
        """A live `online`: send the gateway what is pending for it now."""
        with self._lock:
            self._online.add((site, gateway))
        self._wake.set()

    def _mark_delivered(self, ack_id: int, ts: str) -> None:
        try:
            with self._lock:
                self._db.execute("UPDATE alarm_acks SET delivered_at = ? WHERE id = ?",
                                 (ts, ack_id))
        except sqlite3.OperationalError as exc:  # no web app's table here
            log.debug("cannot mark ack %s delivered: %s", ack_id, exc)

    # -- sending -------------------------------------------------------------------

    def adopt_web_acks(self) -> int:
        """Turn the web app's new acknowledgements into ack commands; return count."""
        oldest = utc_now_from(self.clock() - self.expire_after_s)
        try:
            with self._lock:
                rows = self._db.execute(
                    "SELECT id, site, alarm, actor, comment FROM alarm_acks WHERE "
                    "kind = 'ack' AND delivered_at IS NULL AND ts >= ? AND id NOT IN "
                    "(SELECT ack_id FROM gateway_commands WHERE ack_id IS NOT NULL)",
                    (oldest,)).fetchall()
        except sqlite3.OperationalError:  # the web app is not installed on this db
            return 0
        n = 0
        for row in rows:
            try:
                self.send_ack(row["site"], row["alarm"], row["actor"], row["comment"],
                              ack_id=row["id"])
                n += 1
            except (CommandError, contract.ContractError) as exc:
                if row["id"] not in self._unresolved:
                    self._unresolved.add(row["id"])
                    log.warning("acknowledgement %s of %s at site=%s cannot go to a "
                                "gateway: %s", row["id"], row["alarm"], row["site"], exc)
        return n

    def publish_due(self) -> int:
        """Publish pending commands that are new, due again, or for a gateway just back
        online; expire old ones. Returns how many were published."""
        now = self.clock()
        with self._lock:
            online, self._online = self._online, set()
            self._db.execute(
                "UPDATE gateway_commands SET done_at = ?, result = 'expired' WHERE "
                "done_at IS NULL AND created_s < ?", (utc_now(), now - self.expire_after_s))
            rows = self._db.execute(
                "SELECT id, site, gateway, body, last_sent_s FROM gateway_commands "
                "WHERE done_at IS NULL ORDER BY created_s").fetchall()
        sent = 0
        for row in rows:
            due = (row["last_sent_s"] is None
                   or now - row["last_sent_s"] >= self.resend_after_s
                   or (row["site"], row["gateway"]) in online)
            if not due or self.publish is None:
                continue
            body = json.loads(row["body"])
            payload = contract.encode_command(row["site"], row["gateway"], body)
            if not self.publish(contract.command_topic(row["site"], row["gateway"]),
                                payload):
                continue
            sent += 1
            with self._lock:
                self._db.execute(
                    "UPDATE gateway_commands SET sends = sends + 1, last_sent_s = ? "
                    "WHERE id = ?", (now, row["id"]))
        return sent

    def run_once(self) -> int:
        self.adopt_web_acks()
        return self.publish_due()


def utc_now_from(epoch_s: float) -> str:
    """An epoch time in the stored ISO form."""
    return format_ts(datetime.fromtimestamp(epoch_s, UTC))


def send_ack(db: str | Path, site: str, alarm: str, who: str, comment: str = "",
             gateway: str | None = None) -> str:
    """Queue an acknowledgement in the cloud database `db`; the receiver sends it."""
    commands = Commands(db)
    try:
        return commands.send_ack(site, alarm, who, comment, gateway)
    finally:
        commands.close()


def send_maintenance(db: str | Path, site: str, gateway: str, target: str, on: bool,
                     who: str, reason: str = "", until: str | None = None) -> str:
    """Queue maintenance on/off in the cloud database `db`; the receiver sends it."""
    commands = Commands(db)
    try:
        return commands.send_maintenance(site, gateway, target, on, who, reason, until)
    finally:
        commands.close()
