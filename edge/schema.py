"""The gateway store's schema, its version and the in-place migrations between versions.

A version's upgrade runs in one transaction with its new `PRAGMA user_version` stamp,
so a power cut during an upgrade leaves the file at the old version, whole.
"""

from __future__ import annotations

# Quality codes on disk; the vocabulary itself is groundwatch.contract.Quality. Codes
# are never reused or renumbered: a new quality gets the next free number.
QUALITY_CODES: dict[str, int] = {
    "good": 0, "out_of_range": 1, "sentinel": 2, "device_error": 3, "comm_lost": 4,
    "stale": 5, "maintenance": 6, "clock_unsynced": 7,
}
QUALITY_NAMES = {code: name for name, code in QUALITY_CODES.items()}

# One reading costs about 30 bytes: integer milliseconds instead of an ISO string,
# and device, point and unit named once in `points`. The `readings` and `outbox`
# views show the rows as the uplink contract names them, for people and tools.
SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE qualities (code INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE);
CREATE TABLE points (
    id INTEGER PRIMARY KEY, device TEXT NOT NULL, point TEXT NOT NULL,
    unit TEXT NOT NULL, UNIQUE (device, point, unit)
);
CREATE TABLE samples (
    seq INTEGER PRIMARY KEY, ts_ms INTEGER NOT NULL, point_id INTEGER NOT NULL,
    value REAL, quality INTEGER NOT NULL
);
CREATE TABLE events (
    seq INTEGER PRIMARY KEY, ts TEXT NOT NULL, source TEXT NOT NULL,
    event TEXT NOT NULL, state TEXT NOT NULL, severity TEXT, point TEXT,
    value REAL, message TEXT
);
-- Records not yet acknowledged by the cloud; events go first.
CREATE TABLE pending_events (seq INTEGER PRIMARY KEY);
CREATE TABLE pending_readings (seq INTEGER PRIMARY KEY);
-- Records stamped while the wall clock was not synchronised: the monotonic time and
-- boot they were taken in, so their time can be corrected once it is. Until then
-- they are held back from the uplink.
CREATE TABLE unsynced (
    seq INTEGER PRIMARY KEY, mono_ms INTEGER NOT NULL, boot_id TEXT NOT NULL,
    quality INTEGER
);
-- Records taken out of the outbox because they cannot be delivered however they are
-- sent (a broker or receiver refuses even the record alone): kept, with the reason.
CREATE TABLE parked (
    seq INTEGER PRIMARY KEY, kind TEXT NOT NULL, parked_at TEXT NOT NULL,
    reason TEXT NOT NULL
);
CREATE TABLE alarm_state (
    name TEXT PRIMARY KEY, active INTEGER NOT NULL, latched INTEGER NOT NULL,
    since TEXT, value REAL
);
CREATE TABLE ack_requests (
    id INTEGER PRIMARY KEY, alarm TEXT NOT NULL, requested_at TEXT NOT NULL,
    who TEXT NOT NULL DEFAULT 'local'
);
-- Maintenance mode of a device or a point ("device" or "device.point"): while its row
-- is here its readings are stored as `maintenance` and its alarms are not evaluated.
CREATE TABLE IF NOT EXISTS maintenance (
    target TEXT PRIMARY KEY, who TEXT NOT NULL, reason TEXT NOT NULL,
    since TEXT NOT NULL, until TEXT
);
CREATE TABLE IF NOT EXISTS maintenance_requests (
    id INTEGER PRIMARY KEY, target TEXT NOT NULL, on_off INTEGER NOT NULL,
    who TEXT NOT NULL, reason TEXT NOT NULL DEFAULT '', until TEXT,
    requested_at TEXT NOT NULL
);
-- Every command the cloud sent, by id, so each is applied once however often it
-- arrives; `request` is the row of ack_requests or maintenance_requests it became.
CREATE TABLE IF NOT EXISTS commands (
    id TEXT PRIMARY KEY, kind TEXT NOT NULL, received_at TEXT NOT NULL,
    body TEXT NOT NULL, request INTEGER, result TEXT
);
CREATE VIEW readings AS
    SELECT s.seq AS seq,
           strftime('%Y-%m-%dT%H:%M:%f+00:00', s.ts_ms / 1000.0, 'unixepoch') AS ts,
           p.device AS device, p.point AS point, s.value AS value,
           q.name AS quality, p.unit AS unit
    FROM samples s JOIN points p ON p.id = s.point_id
    JOIN qualities q ON q.code = s.quality;
CREATE VIEW outbox AS
    SELECT seq, 'event' AS kind, 0 AS priority FROM pending_events
    UNION ALL SELECT seq, 'reading' AS kind, 1 AS priority FROM pending_readings;
"""

# From the first layout (ISO times and names on every row) to the compact one.
_V1_TO_V2 = [
    "ALTER TABLE readings RENAME TO readings_v1",
    "ALTER TABLE outbox RENAME TO outbox_v1",
    *[stmt for stmt in SCHEMA.split(";\n") if any(
        f"CREATE TABLE {name} " in stmt for name in (
            "qualities", "points", "samples", "pending_events", "pending_readings",
            "unsynced"))],
    "INSERT INTO qualities(code, name) VALUES "
    + ", ".join(f"({c}, '{n}')" for n, c in QUALITY_CODES.items()),
    "INSERT INTO points(device, point, unit) "
    "SELECT DISTINCT device, point, unit FROM readings_v1",
    "INSERT INTO samples(seq, ts_ms, point_id, value, quality) "
    "SELECT r.seq, CAST(round((julianday(r.ts) - 2440587.5) * 86400000) AS INTEGER), "
    "p.id, r.value, coalesce(q.code, 3) FROM readings_v1 r "
    "JOIN points p ON (p.device, p.point, p.unit) = (r.device, r.point, r.unit) "
    "LEFT JOIN qualities q ON q.name = r.quality",
    "INSERT INTO pending_events SELECT seq FROM outbox_v1 WHERE kind = 'event'",
    "INSERT INTO pending_readings SELECT seq FROM outbox_v1 WHERE kind = 'reading'",
    "DROP TABLE readings_v1",
    "DROP TABLE outbox_v1",
    *[stmt for stmt in SCHEMA.split(";\n") if "CREATE VIEW" in stmt],
]

# PRAGMA user_version of SCHEMA. A file from before versioning (0, with tables) has the
# version-1 layout. MIGRATIONS holds each upgrade's statements, keyed by the version
# they upgrade *from*; they run in one transaction with the new stamp.
SCHEMA_VERSION = 4
_V2_TO_V3 = [stmt for stmt in SCHEMA.split(";\n") if "CREATE TABLE parked " in stmt]
# Maintenance mode and cloud commands.
_V3_TO_V4 = [stmt for stmt in SCHEMA.split(";\n") if "CREATE TABLE IF NOT EXISTS" in stmt]
MIGRATIONS: dict[int, list[str]] = {1: _V1_TO_V2, 2: _V2_TO_V3, 3: _V3_TO_V4}
