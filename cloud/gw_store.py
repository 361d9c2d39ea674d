"""Groundwater records in the cloud: lab results, site configuration, quick screens
and incidents, in the receiver's SQLite file beside the readings."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable
from datetime import date
from pathlib import Path
from typing import Any

from cloud.labdata import LabResult
from cloud.sidecar import connect_shared
from cloud.store import utc_now

# A result is one (site, well, constituent, sampled day): importing a corrected lab
# report replaces the earlier value instead of doubling it.
_SCHEMA = """
CREATE TABLE IF NOT EXISTS gw_config (
    site TEXT PRIMARY KEY,
    body TEXT NOT NULL,
    updated_at TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS lab_results (
    site TEXT NOT NULL,
    well TEXT NOT NULL,
    constituent TEXT NOT NULL,
    sampled TEXT NOT NULL,
    value REAL NOT NULL,
    censored INTEGER NOT NULL,
    detection_limit REAL,
    unit TEXT NOT NULL,
    flags TEXT NOT NULL,
    source TEXT NOT NULL,
    received_at TEXT NOT NULL,
    PRIMARY KEY (site, well, constituent, sampled)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS quick_screens (
    id INTEGER PRIMARY KEY,
    site TEXT NOT NULL,
    ts TEXT NOT NULL,
    location TEXT NOT NULL,
    kind TEXT NOT NULL,
    value REAL,
    unit TEXT NOT NULL,
    threshold REAL,
    abnormal INTEGER NOT NULL,
    note TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS incidents (
    id INTEGER PRIMARY KEY,
    site TEXT NOT NULL,
    ts TEXT NOT NULL,
    kind TEXT NOT NULL,
    title TEXT NOT NULL,
    severity TEXT NOT NULL,
    note TEXT NOT NULL
);
"""


class GroundwaterStore:
    """Lab results and groundwater records of every site (one connection, locked)."""

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = connect_shared(self.path, _SCHEMA)

    def close(self) -> None:
        """Close the connection."""
        with self._lock:
            self._db.close()

    def _query(self, sql: str, args: Iterable[Any] = ()) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(row) for row in self._db.execute(sql, tuple(args))]

    def known(self, site: str) -> bool:
        """Whether the site has a groundwater configuration or any lab result."""
        rows = self._query(
            "SELECT 1 FROM gw_config WHERE site = ? UNION ALL "
            "SELECT 1 FROM lab_results WHERE site = ? LIMIT 1", (site, site))
        return bool(rows)

    def set_config(self, site: str, body: dict[str, Any]) -> None:
        """Replace the site's groundwater configuration (wells, facilities, rules)."""
        with self._lock:
            self._db.execute(
                "INSERT INTO gw_config (site, body, updated_at) VALUES (?, ?, ?) "
                "ON CONFLICT (site) DO UPDATE SET body = excluded.body, "
                "updated_at = excluded.updated_at",
                (site, json.dumps(body, ensure_ascii=False), utc_now()))

    def config(self, site: str) -> dict[str, Any] | None:
        """The site's configuration as last stored, or None."""
        rows = self._query("SELECT body FROM gw_config WHERE site = ?", (site,))
        return json.loads(rows[0]["body"]) if rows else None

    def add_results(self, site: str, results: Iterable[LabResult],
                    source: str = "api") -> tuple[int, int]:
        """Store results in one transaction; return (new, replaced)."""
        now = utc_now()
        new = replaced = 0
        with self._lock:
            db = self._db
            db.execute("BEGIN IMMEDIATE")
            try:
                for r in results:
                    key = (site, r.well, r.constituent, r.sampled.isoformat())
                    seen = db.execute(
                        "SELECT 1 FROM lab_results WHERE site = ? AND well = ? AND "
                        "constituent = ? AND sampled = ?", key).fetchone()
                    db.execute(
                        "INSERT OR REPLACE INTO lab_results (site, well, constituent, "
                        "sampled, value, censored, detection_limit, unit, flags, "
                        "source, received_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        (*key, r.value, int(r.censored), r.detection_limit, r.unit,
                         r.flags, source, now))
                    replaced += seen is not None
                    new += seen is None
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        return new, replaced

    def results(self, site: str) -> list[LabResult]:
        """Every stored result of the site, by well, constituent and date."""
        rows = self._query(
            "SELECT well, constituent, sampled, value, censored, detection_limit, "
            "unit, flags FROM lab_results WHERE site = ? "
            "ORDER BY well, constituent, sampled", (site,))
        return [LabResult(r["well"], r["constituent"], date.fromisoformat(r["sampled"]),
                          r["value"], bool(r["censored"]), r["detection_limit"],
                          r["unit"], r["flags"]) for r in rows]

    def add_quick_screen(self, site: str, rec: dict[str, Any]) -> int:
        """Log a quick-screen result (PID, XRF, test kit); return its id."""
        with self._lock:
            cur = self._db.execute(
                "INSERT INTO quick_screens (site, ts, location, kind, value, unit, "
                "threshold, abnormal, note) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (site, rec["ts"], rec["location"], rec["kind"], rec.get("value"),
                 rec.get("unit", ""), rec.get("threshold"), int(rec["abnormal"]),
                 rec.get("note", "")))
            return int(cur.lastrowid or 0)

    def quick_screens(self, site: str) -> list[dict[str, Any]]:
        """The site's quick-screen results, newest first."""
        rows = self._query(
            "SELECT id, ts, location, kind, value, unit, threshold, abnormal, note "
            "FROM quick_screens WHERE site = ? ORDER BY ts DESC, id DESC", (site,))
        return [dict(r, abnormal=bool(r["abnormal"])) for r in rows]

    def add_incident(self, site: str, rec: dict[str, Any]) -> int:
        """Log an incident (spill, leak found, complaint); return its id."""
        with self._lock:
            cur = self._db.execute(
                "INSERT INTO incidents (site, ts, kind, title, severity, note) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (site, rec["ts"], rec["kind"], rec["title"], rec["severity"],
                 rec.get("note", "")))
            return int(cur.lastrowid or 0)

    def incidents(self, site: str) -> list[dict[str, Any]]:
        """The site's incidents, newest first."""
        return self._query(
            "SELECT id, ts, kind, title, severity, note FROM incidents "
            "WHERE site = ? ORDER BY ts DESC, id DESC", (site,))
