"""What operators do in the cloud: alarm acknowledgements and comments, site layouts."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

from cloud.sidecar import connect_shared
from cloud.store import utc_now

MAX_COMMENT_CHARS = 2000

# `delivered_at` stays NULL until the acknowledgement has reached the gateway (not
# sent yet: the ack's trip to the gateway is a later change).
_SCHEMA = """
CREATE TABLE IF NOT EXISTS alarm_acks (
    id INTEGER PRIMARY KEY,
    site TEXT NOT NULL,
    alarm TEXT NOT NULL,
    kind TEXT NOT NULL,
    ts TEXT NOT NULL,
    actor TEXT NOT NULL,
    comment TEXT NOT NULL,
    delivered_at TEXT
);
CREATE INDEX IF NOT EXISTS alarm_acks_by_site ON alarm_acks (site, id);
CREATE TABLE IF NOT EXISTS site_layouts (
    site TEXT PRIMARY KEY,
    body TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    updated_by TEXT NOT NULL
) WITHOUT ROWID;
"""

LAYOUT_KINDS = ("well", "tank", "cable", "gateway", "other")


def check_layout(layout: Any) -> dict[str, Any]:
    """Validate a site layout; ValueError names the key path at fault.

    {"items": [{"device": "mw1", "kind": "well", "x": 10, "y": 20,
                "path": [[x, y], ...] (cables), "label": "..."}],
     "flow_deg": 135 (direction groundwater flows to, clockwise from north),
     "width": 100, "height": 60 (plan extent, metres)}
    """
    if not isinstance(layout, dict):
        raise ValueError("layout: not an object")
    items = layout.get("items", [])
    if not isinstance(items, list):
        raise ValueError("layout.items: not a list")
    for i, item in enumerate(items):
        where = f"layout.items[{i}]"
        if not isinstance(item, dict):
            raise ValueError(f"{where}: not an object")
        if not isinstance(item.get("device"), str) or not item["device"]:
            raise ValueError(f"{where}.device: not a non-empty string")
        if item.get("kind") not in LAYOUT_KINDS:
            raise ValueError(f"{where}.kind: one of {', '.join(LAYOUT_KINDS)}")
        for key in ("x", "y"):
            if not isinstance(item.get(key), (int, float)):
                raise ValueError(f"{where}.{key}: not a number")
        path = item.get("path")
        if path is not None and not (
                isinstance(path, list) and all(
                    isinstance(p, list) and len(p) == 2
                    and all(isinstance(c, (int, float)) for c in p) for p in path)):
            raise ValueError(f"{where}.path: not a list of [x, y]")
    for key in ("flow_deg", "width", "height"):
        value = layout.get(key)
        if value is not None and not isinstance(value, (int, float)):
            raise ValueError(f"layout.{key}: not a number")
    return layout


class OperationsStore:
    """Acknowledgements, comments and layouts, in the cloud's SQLite file."""

    def __init__(self, path: str | Path) -> None:
        self._lock = threading.Lock()
        self._db = connect_shared(Path(path), _SCHEMA)

    def close(self) -> None:
        """Close the database connection."""
        with self._lock:
            self._db.close()

    def add(self, site: str, alarm: str, kind: str, actor: str,
            comment: str) -> dict[str, Any]:
        """Record an acknowledgement ("ack") or a comment; return it as stored."""
        if kind not in ("ack", "comment"):
            raise ValueError(f"kind {kind!r} is not ack or comment")
        entry = {"site": site, "alarm": alarm, "kind": kind, "ts": utc_now(),
                 "actor": actor, "comment": comment[:MAX_COMMENT_CHARS],
                 "delivered_at": None}
        with self._lock:
            cur = self._db.execute(
                "INSERT INTO alarm_acks (site, alarm, kind, ts, actor, comment) "
                "VALUES (:site, :alarm, :kind, :ts, :actor, :comment)", entry)
        return dict(entry, id=cur.lastrowid)

    def entries(self, site: str, alarm: str | None = None,
                limit: int = 500) -> list[dict[str, Any]]:
        """Acknowledgements and comments of a site (or one alarm), newest first."""
        sql = ("SELECT id, site, alarm, kind, ts, actor, comment, delivered_at "
               "FROM alarm_acks WHERE site = ?")
        args: list[Any] = [site]
        if alarm is not None:
            sql += " AND alarm = ?"
            args.append(alarm)
        sql += " ORDER BY id DESC LIMIT ?"
        args.append(limit)
        with self._lock:
            return [dict(row) for row in self._db.execute(sql, args)]

    def layout(self, site: str) -> dict[str, Any] | None:
        """The site's plan, or None when none is configured."""
        with self._lock:
            row = self._db.execute(
                "SELECT body, updated_at, updated_by FROM site_layouts WHERE site = ?",
                (site,)).fetchone()
        if row is None:
            return None
        return dict(json.loads(row["body"]), updated_at=row["updated_at"],
                    updated_by=row["updated_by"])

    def set_layout(self, site: str, layout: dict[str, Any], actor: str) -> None:
        """Store the site's plan (validated by check_layout first)."""
        body = {k: v for k, v in check_layout(layout).items()
                if k not in ("updated_at", "updated_by")}
        with self._lock:
            self._db.execute(
                "INSERT INTO site_layouts (site, body, updated_at, updated_by) "
                "VALUES (?, ?, ?, ?) ON CONFLICT (site) DO UPDATE SET body = "
                "excluded.body, updated_at = excluded.updated_at, updated_by = "
                "excluded.updated_by",
                (site, json.dumps(body, ensure_ascii=False), utc_now(), actor))
