"""The gateway store: sequence numbers, outbox order, delivery on acknowledgement."""

import sqlite3
import time

import pytest

from edge.recovery import open_gateway_store
from edge.store import SCHEMA_VERSION, WAL_LIMIT_BYTES, EdgeStore, StoreError


def test_seqs_are_unique_and_survive_reopen(tmp_path):
    db = tmp_path / "g.sqlite"
    s = EdgeStore(db)
    a = s.add_readings("2026-01-01T00:00:00.000+00:00", "d", [("p", 1.0, "good", "m")] * 3)
    e = s.add_event("alarm1", "alarm", "raised", severity="critical")
    s.close()
    s = EdgeStore(db)
    b = s.add_readings("2026-01-01T00:00:01.000+00:00", "d", [("p", 2.0, "good", "m")])
    assert a == [1, 2, 3] and e == 4 and b == [5]


def test_events_go_first_and_ack_removes_exactly_the_ranges(tmp_path):
    s = EdgeStore(tmp_path / "g.sqlite")
    s.add_readings("2026-01-01T00:00:00.000+00:00", "d", [("p", float(i), "good", "m")
                                                          for i in range(5)])
    s.add_event("leak", "alarm", "raised", value=1.0)
    batch = s.outbox_batch(3, exclude=set())
    assert [r["seq"] for r in batch] == [6, 1, 2]
    assert batch[0]["kind"] == "event" and batch[0]["value"] == 1.0
    assert [r["seq"] for r in s.outbox_batch(3, exclude={6, 1})] == [2, 3, 4]
    assert s.mark_delivered([[1, 2], [6, 6]]) == 3
    assert s.outbox_depth() == 3
    # Delivered records stay stored: the outbox is only what is not yet confirmed.
    assert s.conn.execute("SELECT count(*) FROM readings").fetchone()[0] == 5


def test_ack_requests_round_trip(tmp_path):
    s = EdgeStore(tmp_path / "g.sqlite")
    s.request_ack("leak", who="operator")
    assert s.take_ack_requests() == [("leak", "operator")]
    assert s.take_ack_requests() == []


# The first layout, as gateways of the first release wrote it (no user_version).
V1_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE readings (
    seq INTEGER PRIMARY KEY, ts TEXT NOT NULL, device TEXT NOT NULL,
    point TEXT NOT NULL, value REAL, quality TEXT NOT NULL, unit TEXT NOT NULL);
CREATE INDEX readings_point_ts ON readings (device, point, ts);
CREATE TABLE events (
    seq INTEGER PRIMARY KEY, ts TEXT NOT NULL, source TEXT NOT NULL,
    event TEXT NOT NULL, state TEXT NOT NULL, severity TEXT, point TEXT,
    value REAL, message TEXT);
CREATE TABLE outbox (seq INTEGER PRIMARY KEY, kind TEXT NOT NULL,
    priority INTEGER NOT NULL);
CREATE INDEX outbox_order ON outbox (priority, seq);
CREATE TABLE alarm_state (name TEXT PRIMARY KEY, active INTEGER NOT NULL,
    latched INTEGER NOT NULL, since TEXT, value REAL);
CREATE TABLE ack_requests (id INTEGER PRIMARY KEY, alarm TEXT NOT NULL,
    requested_at TEXT NOT NULL, who TEXT NOT NULL DEFAULT 'local');
INSERT INTO meta VALUES ('next_seq', '4');
INSERT INTO readings VALUES
    (1, '2026-12-01T08:00:00.125+00:00', 'tank1', 'level_mm', 1234.5, 'good', 'mm'),
    (2, '2026-12-01T08:00:00.125+00:00', 'mw1', 'conductivity_us_cm', 0.0,
     'out_of_range', 'uS/cm');
INSERT INTO events VALUES (3, '2026-12-01T08:00:01.000+00:00', 'trench-leak',
    'alarm', 'raised', 'critical', 'cable1.leak', 1.0, 'Leak');
INSERT INTO outbox VALUES (2, 'reading', 1), (3, 'event', 0);
INSERT INTO alarm_state VALUES ('trench-leak', 1, 0, '2026-12-01T08:00:01.000+00:00',
    1.0);
"""


def test_first_release_file_is_migrated_in_place_losing_nothing(tmp_path):
    db = tmp_path / "g.sqlite"
    with sqlite3.connect(db) as conn:
        conn.executescript(V1_SCHEMA)
    s = EdgeStore(db)
    assert s.conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert s.conn.execute("SELECT * FROM readings ORDER BY seq").fetchall() == [
        (1, "2026-12-01T08:00:00.125+00:00", "tank1", "level_mm", 1234.5, "good", "mm"),
        (2, "2026-12-01T08:00:00.125+00:00", "mw1", "conductivity_us_cm", 0.0,
         "out_of_range", "uS/cm")]
    # What was unsent is still unsent, the event first; what was sent stays sent.
    assert [r["seq"] for r in s.outbox_batch(10, set())] == [3, 2]
    assert s.outbox_batch(10, set())[1]["ts"] == "2026-12-01T08:00:00.125+00:00"
    assert s.load_alarm_states()["trench-leak"].active
    assert s.add_readings("2026-12-01T08:00:02.000+00:00", "tank1",
                          [("level_mm", 1234.0, "good", "mm")]) == [4]
    s.close()


def test_schema_2_file_gains_the_parked_table_keeping_its_outbox(tmp_path):
    db = tmp_path / "g.sqlite"
    s = EdgeStore(db)
    s.add_readings("2026-12-01T08:00:00.125+00:00", "tank1",
                   [("level_mm", 1234.5, "good", "mm")] * 3)
    s.mark_delivered([[1, 1]])
    # Schema 2 is schema 3 without `parked`.
    s.conn.execute("DROP TABLE parked")
    s.conn.execute("PRAGMA user_version=2")
    s.close()
    s = EdgeStore(db)
    assert s.conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert [r["seq"] for r in s.outbox_batch(10, set())] == [2, 3]
    assert s.park([3], "too large") == 1 and s.parked_count() == 1
    assert [r["seq"] for r in s.outbox_batch(10, set())] == [2]
    s.close()


def test_live_head_and_backlog_tail_are_taken_from_opposite_ends(tmp_path):
    s = EdgeStore(tmp_path / "g.sqlite")
    for minute in range(10):
        s.add_readings(f"2026-12-01T08:{minute:02d}:00.000+00:00", "d",
                       [("p", float(minute), "good", "m")])
    s.add_event("leak", "alarm", "raised")
    cutoff_ms = 1796112000000 + 7 * 60000  # 2026-12-01T08:07Z
    live = s.outbox_readings(2, set(), newest=True, since_ms=cutoff_ms)
    assert [r["seq"] for r in live] == [9, 10]
    live = s.outbox_readings(5, {9, 10}, newest=True, since_ms=cutoff_ms)
    assert [r["seq"] for r in live] == [8]
    backlog = s.outbox_readings(3, {1}, before_ms=cutoff_ms)
    assert [r["seq"] for r in backlog] == [2, 3, 4]
    assert [r["seq"] for r in s.outbox_events(5, set())] == [11]
    assert [r["seq"] for r in s.outbox_records([11, 4, 99])] == [11, 4]


def test_file_from_a_newer_release_is_refused_untouched(tmp_path):
    db = tmp_path / "g.sqlite"
    s = EdgeStore(db)
    s.conn.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    s.close()
    with pytest.raises(StoreError, match="newer release"):
        open_gateway_store(db)
    assert db.exists() and not list(tmp_path.glob("*.corrupt-*"))


def test_garbage_file_is_moved_aside_and_a_fresh_store_started(tmp_path):
    db = tmp_path / "g.sqlite"
    db.write_bytes(b"this is not a database, it is what a power cut left" * 100)
    before_us = time.time_ns() // 1000
    store, recovery = open_gateway_store(db)
    assert recovery is not None and "not a database" in recovery.reason
    assert recovery.moved_to.read_bytes().startswith(b"this is not a database")
    # New sequence numbers lie above anything the old file could have issued.
    assert store.next_seq > before_us
    [(source, state, message)] = store.conn.execute(
        "SELECT source, state, message FROM events").fetchall()
    assert (source, state) == ("store", "recovered")
    assert recovery.moved_to.name in message
    store.close()


def test_unclean_stop_with_a_damaged_page_is_caught_and_seqs_continue(
        tmp_path, monkeypatch):
    db = tmp_path / "g.sqlite"
    store, recovery = open_gateway_store(db)
    assert recovery is None
    for i in range(200):
        store.add_readings("2026-01-01T00:00:00.000+00:00", f"dev{i}",
                           [("level_mm", float(i), "good", "mm")] * 20)
    store.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    issued = store.next_seq
    store.close()  # no orderly-stop mark: as after SIGKILL
    page_size = 4096
    with db.open("r+b") as f:  # scribble over a page in the middle of the readings
        f.seek(page_size * (db.stat().st_size // page_size // 2))
        f.write(b"\xa5" * page_size)
    # A Raspberry Pi without its clock: the salvaged high-water mark must carry on.
    monkeypatch.setattr("edge.recovery.time.time_ns", lambda: 0)
    store, recovery = open_gateway_store(db)
    # Caught either by the quick check or while opening, whichever meets it first.
    assert recovery is not None
    assert "quick_check" in recovery.reason or "malformed" in recovery.reason
    assert store.next_seq == issued + 1  # the recovery event took `issued`
    store.close()


def test_orderly_reopen_needs_no_recovery(tmp_path):
    db = tmp_path / "g.sqlite"
    store, _ = open_gateway_store(db)
    store.add_readings("2026-01-01T00:00:00.000+00:00", "d", [("p", 1.0, "good", "m")])
    store.set_meta("running", "0")
    store.close()
    store, recovery = open_gateway_store(db)
    assert recovery is None and store.next_seq == 2
    store.close()


def fill_store(s, n_readings, n_events):
    for i in range(0, n_readings, 1000):
        s.add_readings("2026-01-01T00:00:00.000+00:00", "tank1",
                       [("level_mm", float(i + k), "good", "mm") for k in range(1000)])
    for i in range(n_events):
        s.add_event(f"alarm{i}", "alarm", "raised", severity="critical", durable=False)


def test_disk_budget_evicts_delivered_then_oldest_unsent_never_events(tmp_path):
    s = EdgeStore(tmp_path / "g.sqlite")
    fill_store(s, 20000, 5)
    s.mark_delivered([[1, 6000]])
    full = s.used_bytes()
    budget = full // 2
    evicted = s.enforce_budget(budget)
    assert s.used_bytes() <= budget
    # All 6000 delivered readings went before any unsent one.
    assert evicted["evicted_delivered"] == 6000 and evicted["evicted_unsent"] > 0
    left = s.conn.execute("SELECT count(*), min(seq) FROM readings").fetchone()
    assert left[0] == 20000 - 6000 - evicted["evicted_unsent"]
    assert left[1] == 6001 + evicted["evicted_unsent"]  # oldest first
    assert s.conn.execute("SELECT count(*) FROM events").fetchone()[0] == 5
    # The outbox names nothing that is gone, and still holds every event.
    assert s.outbox_depth() == left[0] + 5
    assert s.meta("evicted_unsent_total") == str(evicted["evicted_unsent"])
    assert s.enforce_budget(budget) == {"evicted_delivered": 0, "evicted_unsent": 0}


def test_budget_smaller_than_the_events_keeps_every_event(tmp_path):
    s = EdgeStore(tmp_path / "g.sqlite")
    fill_store(s, 2000, 300)
    evicted = s.enforce_budget(4096)
    assert evicted == {"evicted_delivered": 0, "evicted_unsent": 2000}
    assert s.conn.execute("SELECT count(*) FROM events").fetchone()[0] == 300


def test_wal_is_cut_back_once_a_reader_lets_go(tmp_path):
    db = tmp_path / "g.sqlite"
    s = EdgeStore(db)
    reader = sqlite3.connect(db)
    reader.execute("BEGIN")
    reader.execute("SELECT count(*) FROM readings").fetchone()  # holds a snapshot
    fill_store(s, 20000, 0)
    assert s.wal_bytes() > WAL_LIMIT_BYTES // 4
    assert s.checkpoint() is False  # the reader's snapshot pins the WAL
    reader.rollback()
    assert s.checkpoint() is True
    assert s.wal_bytes() == 0
    reader.close()
