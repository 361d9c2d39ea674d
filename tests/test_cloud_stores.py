"""Both cloud stores, SQLite and PostgreSQL, held to the same rules; PostgreSQL at
127.0.0.1:5432, a database of each test's own."""

from __future__ import annotations

import queue
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import psycopg
import pytest
from fastapi.testclient import TestClient
from paho.mqtt.enums import CallbackAPIVersion

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # hil_tests/ helpers

from cloud.api import create_app  # noqa: E402
from cloud.ingest import Ingestor  # noqa: E402
from cloud.service import open_store  # noqa: E402
from cloud.store import CloudStore  # noqa: E402
from cloud.store_pg import SCHEMA_VERSION, PgStore, SchemaError  # noqa: E402
from groundwatch import contract  # noqa: E402
from hil_tests.pgdb import temp_database  # noqa: E402

SITE, GW = "site-a", "gw-1"
Store = CloudStore | PgStore


def reading(seq: int, ts: str, value: float | None, point: str = "level",
            device: str = "tank1", quality: str = "good") -> dict[str, Any]:
    return {"seq": seq, "kind": "reading", "ts": ts, "device": device, "point": point,
            "value": value, "quality": quality, "unit": "mm"}


def alarm(seq: int, ts: str, name: str, state: str) -> dict[str, Any]:
    return {"seq": seq, "kind": "event", "ts": ts, "source": name, "event": "alarm",
            "state": state, "severity": "high", "point": "tank1.level",
            "value": 950.0, "message": f"{name} {state}"}


def health(ts: str, depth: int) -> dict[str, Any]:
    return {"v": 1, "site": SITE, "gateway": GW, "ts": ts, "uptime_s": 10.5,
            "outbox_depth": depth, "oldest_unsent_age_s": None, "error_window_s": 600.0,
            "drops": {"evicted_unsent": 0, "dead_lettered": 0, "store_failures": 0},
            "devices": {}, "relays": {}, "clock_synchronised": True,
            "schema_version": 3,
            "disk": {"db_bytes": 1, "wal_bytes": 0, "free_bytes": None}}


@pytest.fixture
def pg_url() -> Iterator[str]:
    with temp_database() as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    if request.param == "sqlite":
        db: Store = open_store(str(tmp_path / "cloud.sqlite"))
        assert isinstance(db, CloudStore)
        yield db
        db.close()
        return
    with temp_database() as url:
        db = open_store(url)
        assert isinstance(db, PgStore)
        yield db
        db.close()


def test_seq_stored_once_whatever_its_kind(store: Store) -> None:
    first = [reading(1, "2026-12-03T21:00:00Z", 10.0),
             alarm(2, "2026-12-03T21:00:01Z", "tank_high", "raised")]
    assert store.store_batch(SITE, GW, first) == ([1, 2], 2, 0)
    # seq 1 comes back as an event, seq 2 as a reading, seq 3 twice: duplicates.
    second = [alarm(1, "2026-12-03T21:00:02Z", "other", "raised"),
              reading(2, "2026-12-03T21:00:03Z", 99.0),
              reading(3, "2026-12-03T21:00:04Z", 11.5),
              reading(3, "2026-12-03T21:00:05Z", 12.5)]
    stored, new, duplicates = store.store_batch(SITE, GW, second)
    assert (stored, new, duplicates) == ([1, 2, 3, 3], 1, 3)
    assert [(r["seq"], r["value"]) for r in store.readings(SITE, "tank1.level")] == [
        (1, 10.0), (3, 11.5)]
    assert [(e["seq"], e["source"]) for e in store.events(SITE, "alarm")] == [
        (2, "tank_high")]
    # The same seq from another gateway is a different record.
    assert store.store_batch(SITE, "gw-2", [reading(1, "2026-12-03T21:00:06Z", 12.0)]
                             ) == ([1], 1, 0)
    assert [g["gateway"] for g in store.gateways(SITE)] == [GW, "gw-2"]


def test_latest_only_moves_to_a_newer_reading(store: Store) -> None:
    store.store_batch(SITE, GW, [reading(10, "2026-12-03T21:00:00+00:00", 500.0)])
    store.store_batch(SITE, GW, [reading(11, "2026-12-03T20:00:00+00:00", 400.0)],
                      historical=True)
    [latest] = store.latest_points(SITE)
    assert (latest["point"], latest["value"], latest["seq"]) == (
        "tank1.level", 500.0, 10)
    # The same time (written at +01:00) with a higher seq wins.
    store.store_batch(SITE, GW, [reading(12, "2026-12-03T22:00:00+01:00", 510.0)])
    assert store.latest_points(SITE)[0]["value"] == 510.0
    # Within one batch the newest of a point wins whatever the order of the records;
    # an equal time with a lower seq loses.
    store.store_batch(SITE, GW, [
        reading(20, "2026-12-03T21:00:03Z", 3.0), reading(14, "2026-12-03T21:00:05Z", 5.0),
        reading(13, "2026-12-03T21:00:05Z", 4.0), reading(15, "2026-12-03T21:00:01Z", 1.0),
    ])
    [latest] = store.latest_points(SITE)
    assert (latest["value"], latest["seq"], latest["ts"]) == (
        5.0, 14, "2026-12-03T21:00:05.000+00:00")
    store.store_batch(SITE, GW, [reading(30, "2026-12-03T21:00:06Z", None,
                                         quality="comm_lost")])
    [latest] = store.latest_points(SITE)
    assert (latest["value"], latest["quality"]) == (None, "comm_lost")
    assert [r["seq"] for r in store.readings(SITE, "tank1.level")] == [
        11, 10, 12, 15, 20, 13, 14, 30]


def test_bad_record_stores_nothing(store: Store) -> None:
    batch = [reading(1, "2026-12-03T21:00:00Z", 1.0), reading(2, "not a time", 2.0)]
    with pytest.raises(ValueError, match=r"records\[1\]"):
        store.store_batch(SITE, GW, batch)
    assert not store.site_exists(SITE)
    assert store.store_batch(SITE, GW, batch[:1]) == ([1], 1, 0)


def test_queries_by_time_and_alarm_state(store: Store) -> None:
    store.store_batch(SITE, GW, [
        reading(1, "2026-12-03T21:00:00Z", 500.0),
        reading(2, "2026-12-03T21:15:00Z", 505.5),
        reading(3, "2026-12-03T21:30:00Z", 511.0),
        alarm(4, "2026-12-03T21:00:00Z", "tank_high", "raised"),
        alarm(5, "2026-12-03T21:00:01Z", "cable_leak", "raised"),
        alarm(6, "2026-12-03T21:00:02Z", "tank_high", "cleared"),
        {"seq": 7, "kind": "event", "ts": "2026-12-03T21:00:03Z", "source": "well2",
         "event": "device", "state": "offline", "value": "no answer"},
    ])
    # A late backfilled "cleared" older than the raise does not clear it.
    store.store_batch(SITE, GW, [alarm(8, "2026-12-03T20:00:00Z", "cable_leak",
                                       "cleared")], historical=True)
    assert store.active_alarms(SITE) == ["cable_leak"]
    assert store.site_summary(SITE) == {
        "last_data": "2026-12-03T21:30:00.000+00:00", "points": 1, "active_alarms": 1}
    since = store.readings(SITE, "tank1.level", since="2026-12-04T05:10:00+08:00")
    assert [r["seq"] for r in since] == [2, 3]
    until = store.readings(SITE, "tank1.level", until="2026-12-03T21:15:00Z")
    assert [r["seq"] for r in until] == [1]
    assert [r["seq"] for r in store.readings(SITE, "tank1.level", limit=2)] == [1, 2]
    [device] = store.events(SITE, "device")
    assert (device["source"], device["state"], device["value"]) == (
        "well2", "offline", "no answer")
    assert [e["seq"] for e in store.events(SITE, "alarm")] == [6, 5, 4, 8]
    assert store.point_exists(SITE, "tank1.level")
    assert not store.point_exists(SITE, "tank1.nope")
    assert store.sites() == [SITE] and not store.site_exists("elsewhere")


def test_dead_letters_newest_first(store: Store) -> None:
    store.dead_letter("groundwatch/s/g/data", "not JSON", "{oops", "s", "g")
    store.dead_letter("groundwatch/s/g/data", "bad ts", '{"seq": 4}', "s", "g", 4)
    letters = store.dead_letters()
    assert [(d["reason"], d["seq"], d["site"]) for d in letters] == [
        ("bad ts", 4, "s"), ("not JSON", None, "s")]
    assert letters[0]["received_at"].endswith("+00:00")
    assert len(store.dead_letters(limit=1)) == 1


def test_status_and_health(store: Store) -> None:
    store.set_gateway_status(SITE, GW, "offline")
    [gw] = store.gateways(SITE)
    assert (gw["status"], gw["last_seen"]) == ("offline", None)
    assert gw["status_ts"].endswith("+00:00")
    store.set_gateway_status(SITE, GW, "online", seen=True)
    [gw] = store.gateways(SITE)
    assert gw["status"] == "online" and gw["last_seen"] is not None
    assert store.store_health(SITE, GW, health("2026-12-03T21:00:00Z", 5)) is True
    # The same message again (retained, or from another receiver) is stored once.
    assert store.store_health(SITE, GW, health("2026-12-03T21:00:00Z", 5)) is False
    assert store.store_health(SITE, GW, health("2026-12-03T21:00:30Z", 7)) is True
    latest = store.latest_health(SITE)[GW]
    assert (latest["outbox_depth"], latest["ts"]) == (7, "2026-12-03T21:00:30Z")
    history = store.health_history(SITE, GW)
    assert [h["outbox_depth"] for h in history] == [7, 5]
    assert [h["outbox_depth"] for h in store.health_history(SITE, GW, limit=1)] == [7]


def test_both_stores_answer_the_api_alike(tmp_path: Path, pg_url: str) -> None:
    batch = [reading(1, "2026-12-03T21:00:00Z", 500.0),
             reading(2, "2026-12-03T21:30:00Z", 0.0, device="cable1", point="leak"),
             alarm(3, "2026-12-03T21:31:00Z", "tank_high", "raised"),
             {"seq": 4, "kind": "event", "ts": "2026-12-03T21:32:00Z",
              "source": "well2", "event": "device", "state": "offline"}]
    answers = []
    for db in (str(tmp_path / "cloud.sqlite"), pg_url):
        store = open_store(db)
        try:
            store.store_batch(SITE, GW, batch)
            store.set_gateway_status(SITE, "gw-2", "offline")
            client = TestClient(create_app(store))
            site = client.get("/api/sites").json()
            for gw in site[0]["gateways"]:
                gw.pop("last_seen"), gw.pop("status_ts")
            answers.append([
                site,
                client.get(f"/api/sites/{SITE}/points").json(),
                client.get(f"/api/sites/{SITE}/readings",
                           params={"point": "tank1.level"}).json(),
                client.get(f"/api/sites/{SITE}/alarms").json(),
            ])
        finally:
            store.close()
    assert answers[0] == answers[1]
    assert answers[1][3]["active"] == ["tank_high"]
    assert answers[1][0][0]["gateways_online"] == 1


def test_pg_schema_is_versioned_and_idempotent(pg_url: str) -> None:
    PgStore(pg_url).close()
    store = PgStore(pg_url)  # a second start, or a second instance: nothing changes
    store.store_batch(SITE, GW, [reading(1, "2026-12-03T21:00:00Z", 1.0)])
    store.close()
    with psycopg.connect(pg_url, autocommit=True) as conn:
        assert conn.execute("SELECT version FROM schema_version").fetchall() == [
            (SCHEMA_VERSION,)]
        conn.execute("INSERT INTO schema_version (version) VALUES (%s)",
                     (SCHEMA_VERSION + 1,))
        ts_type = conn.execute(
            "SELECT data_type FROM information_schema.columns "
            "WHERE table_name = 'readings' AND column_name = 'ts'").fetchone()
    assert ts_type == ("timestamp with time zone",)
    with pytest.raises(SchemaError, match="newer"):
        PgStore(pg_url)


def test_pg_concurrent_writers_store_each_seq_once(pg_url: str) -> None:
    """Four stores (as four receivers) write overlapping batches of one gateway."""
    stores = [PgStore(pg_url, max_size=2) for _ in range(4)]
    n, size = 2000, 100
    batches = [[reading(seq, f"2026-12-03T21:{seq // 60 % 60:02d}:{seq % 60:02d}Z",
                        float(seq), point=f"p{seq % 7}")
                for seq in range(start, min(start + size, n) + 1)]
               for start in range(1, n + 1, size // 2)]  # each seq in two batches
    news: list[int] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def writer(k: int) -> None:
        try:
            for batch in batches[k::2] if k < 2 else batches[k - 2::2][::-1]:
                _, new, _ = stores[k].store_batch(SITE, GW, batch)
                with lock:
                    news.append(new)
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    for s in stores:
        s.close()
    assert not errors
    assert sum(news) == n
    with psycopg.connect(pg_url) as conn:
        assert conn.execute("SELECT count(*), count(DISTINCT seq), min(seq), max(seq) "
                            "FROM readings").fetchone() == (n, n, 1, n)
        # Each of the 7 points ends at its newest reading, the last 7 seqs.
        latest = dict(conn.execute("SELECT tag, seq FROM latest").fetchall())
    assert latest == {f"tank1.p{seq % 7}": seq for seq in range(n - 6, n + 1)}


@pytest.mark.parametrize("writers", [1, 4])
def test_shared_subscription_splits_batches_between_receivers(
    pg_url: str, writers: int,
) -> None:
    """Two Ingestors in one share group on the real Mosquitto (MQTT 3.1.1 clients);
    with writers > 1 each stores batches on several threads, PUBACK after commit."""
    site = f"test-{uuid.uuid4().hex[:10]}"
    store = PgStore(pg_url)
    ingestors = [Ingestor(store, "127.0.0.1", 1883, client_id=f"{site}-rx{k}",
                          site=site, share_group=site, writers=writers)
                 for k in range(2)]
    acks: queue.Queue[dict[str, Any]] = queue.Queue()
    pub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"{site}-gw",
                      protocol=mqtt.MQTTv311)
    subscribed = threading.Event()
    pub.on_subscribe = lambda *args: subscribed.set()
    pub.on_message = lambda c, u, m: acks.put(contract.decode_ack(m.payload))
    try:
        for ing in ingestors:
            ing.start()
            assert ing.wait_ready(5)
        assert ingestors[0].subscriptions[0] == (
            f"$share/{site}/groundwatch/{site}/+/data")
        pub.connect("127.0.0.1", 1883)
        pub.loop_start()
        pub.subscribe(contract.ack_topic(site, GW), qos=1)
        assert subscribed.wait(5)
        for batch in range(20):
            records = [reading(batch * 10 + i, "2026-12-03T21:00:00Z", float(i))
                       for i in range(1, 11)]
            pub.publish(contract.data_topic(site, GW),
                        contract.encode_batch(site, GW, batch, records), qos=1)
        got = [acks.get(timeout=10) for _ in range(20)]
    finally:
        pub.disconnect()
        pub.loop_stop()
        for ing in ingestors:
            ing.stop()
    assert sorted(a["batch"] for a in got) == list(range(20))
    counts = [ing.counters()["records"] for ing in ingestors]
    # Each batch went to one receiver only, and both had a share.
    assert sum(counts) == 200 and min(counts) > 0
    assert sum(ing.counters()["duplicates"] for ing in ingestors) == 0
    assert len(store.readings(site, "tank1.level", limit=1000)) == 200
    store.close()
