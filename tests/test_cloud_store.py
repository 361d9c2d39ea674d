"""CloudStore and the HTTP API over it, without a broker."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from cloud.api import create_app
from cloud.store import CloudStore, normalise_ts

SITE, GW = "site-a", "gw-1"


def reading(seq: int, ts: str, value: float | None, point: str = "level",
            device: str = "tank1", quality: str = "good") -> dict[str, Any]:
    return {"seq": seq, "kind": "reading", "ts": ts, "device": device, "point": point,
            "value": value, "quality": quality, "unit": "mm"}


def alarm(seq: int, ts: str, name: str, state: str) -> dict[str, Any]:
    return {"seq": seq, "kind": "event", "ts": ts, "source": name, "event": "alarm",
            "state": state, "severity": "high", "point": "tank1.level",
            "value": 950.0, "message": f"{name} {state}"}


@pytest.fixture
def store(tmp_path: Path) -> Iterator[CloudStore]:
    db = CloudStore(tmp_path / "cloud.sqlite")
    yield db
    db.close()


def rows(store: CloudStore, sql: str) -> list[tuple]:
    with sqlite3.connect(store.path) as db:
        return db.execute(sql).fetchall()


def test_times_normalised_to_utc_milliseconds() -> None:
    assert normalise_ts("2026-12-04T05:00:00.123456+08:00") == (
        "2026-12-03T21:00:00.123+00:00")
    assert normalise_ts("2026-12-03T21:00:00Z") == "2026-12-03T21:00:00.000+00:00"
    assert normalise_ts("2026-12-03T21:00:00") == "2026-12-03T21:00:00.000+00:00"
    with pytest.raises(ValueError):
        normalise_ts("yesterday")


def test_seq_stored_once_whatever_its_kind(store: CloudStore) -> None:
    first = [reading(1, "2026-12-03T21:00:00Z", 10.0),
             alarm(2, "2026-12-03T21:00:01Z", "tank_high", "raised")]
    assert store.store_batch(SITE, GW, first) == ([1, 2], 2, 0)
    # seq 1 comes back as an event, seq 2 as a reading: both are duplicates.
    second = [alarm(1, "2026-12-03T21:00:02Z", "other", "raised"),
              reading(2, "2026-12-03T21:00:03Z", 99.0),
              reading(3, "2026-12-03T21:00:04Z", 11.5)]
    assert store.store_batch(SITE, GW, second) == ([1, 2, 3], 1, 2)
    assert rows(store, "SELECT seq, value FROM readings ORDER BY seq") == [
        (1, 10.0), (3, 11.5)]
    assert rows(store, "SELECT seq, source FROM events") == [(2, "tank_high")]
    assert rows(store, "SELECT seq, kind FROM records ORDER BY seq") == [
        (1, "reading"), (2, "event"), (3, "reading")]
    # The same seq from another gateway is a different record.
    other = [reading(1, "2026-12-03T21:00:05Z", 12.0)]
    assert store.store_batch(SITE, "gw-2", other) == ([1], 1, 0)


def test_backfill_never_overwrites_newer_latest(store: CloudStore) -> None:
    store.store_batch(SITE, GW, [reading(10, "2026-12-03T21:00:00+00:00", 500.0)])
    store.store_batch(SITE, GW, [reading(11, "2026-12-03T20:00:00+00:00", 400.0)],
                      historical=True)
    [latest] = store.latest_points(SITE)
    assert (latest["point"], latest["value"], latest["seq"]) == (
        "tank1.level", 500.0, 10)
    assert [r["value"] for r in store.readings(SITE, "tank1.level")] == [400.0, 500.0]
    assert rows(store, "SELECT seq, historical FROM readings ORDER BY seq") == [
        (10, 0), (11, 1)]
    # Same time, higher seq wins; a newer time wins.
    store.store_batch(SITE, GW, [reading(12, "2026-12-03T22:00:00+01:00", 510.0)])
    assert store.latest_points(SITE)[0]["value"] == 510.0
    store.store_batch(SITE, GW, [reading(13, "2026-12-03T21:00:01Z", None,
                                         quality="comm_lost")])
    [latest] = store.latest_points(SITE)
    assert (latest["value"], latest["quality"], latest["ts"]) == (
        None, "comm_lost", "2026-12-03T21:00:01.000+00:00")


def test_bad_record_stores_nothing(store: CloudStore) -> None:
    batch = [reading(1, "2026-12-03T21:00:00Z", 1.0), reading(2, "not a time", 2.0)]
    with pytest.raises(ValueError, match=r"records\[1\]"):
        store.store_batch(SITE, GW, batch)
    assert rows(store, "SELECT COUNT(*) FROM records") == [(0,)]
    assert not store.site_exists(SITE)


def test_active_alarms_follow_newest_event(store: CloudStore) -> None:
    store.store_batch(SITE, GW, [
        alarm(1, "2026-12-03T21:00:00Z", "tank_high", "raised"),
        alarm(2, "2026-12-03T21:00:01Z", "cable_leak", "raised"),
        alarm(3, "2026-12-03T21:00:02Z", "tank_high", "cleared"),
        alarm(4, "2026-12-03T21:00:03Z", "well_low", "raised"),
        alarm(5, "2026-12-03T21:00:04Z", "well_low", "acknowledged"),
    ])
    # A late backfilled "cleared" older than the raise does not clear it.
    late = [alarm(6, "2026-12-03T20:00:00Z", "cable_leak", "cleared")]
    store.store_batch(SITE, GW, late, historical=True)
    assert store.active_alarms(SITE) == ["cable_leak", "well_low"]
    assert store.site_summary(SITE)["active_alarms"] == 2


def test_api_serves_stored_values(store: CloudStore) -> None:
    store.store_batch(SITE, GW, [
        reading(1, "2026-12-03T21:00:00Z", 500.0),
        reading(2, "2026-12-03T21:15:00Z", 505.5),
        reading(3, "2026-12-03T21:30:00Z", 511.0),
        reading(4, "2026-12-03T21:30:00Z", 0.0, device="cable1", point="leak"),
        alarm(5, "2026-12-03T21:31:00Z", "tank_high", "raised"),
        {"seq": 6, "kind": "event", "ts": "2026-12-03T21:32:00Z", "source": "well2",
         "event": "device", "state": "offline"},
    ])
    store.set_gateway_status(SITE, "gw-2", "offline")
    client = TestClient(create_app(store))

    health = client.get("/api/health").json()
    assert (health["status"], health["broker_connected"]) == ("ok", None)

    [site] = client.get("/api/sites").json()
    assert site["site"] == SITE
    assert (site["last_data"], site["points"], site["active_alarms"]) == (
        "2026-12-03T21:30:00.000+00:00", 2, 1)
    gateways = {g["gateway"]: g for g in site["gateways"]}
    assert gateways[GW]["online"] is True and gateways[GW]["last_seen"]
    assert gateways["gw-2"]["online"] is False
    assert gateways["gw-2"]["status"] == "offline"

    points = client.get(f"/api/sites/{SITE}/points").json()
    assert [(p["point"], p["value"], p["seq"]) for p in points] == [
        ("cable1.leak", 0.0, 4), ("tank1.level", 511.0, 3)]

    url = f"/api/sites/{SITE}/readings"
    body = client.get(url, params={"point": "tank1.level"}).json()
    assert [(r["ts"], r["value"]) for r in body["readings"]] == [
        ("2026-12-03T21:00:00.000+00:00", 500.0),
        ("2026-12-03T21:15:00.000+00:00", 505.5),
        ("2026-12-03T21:30:00.000+00:00", 511.0)]
    body = client.get(url, params={"point": "tank1.level", "limit": 1,
                                   "since": "2026-12-04T05:10:00+08:00"}).json()
    assert [r["seq"] for r in body["readings"]] == [2] and body["truncated"] is True
    body = client.get(url, params={"point": "tank1.level",
                                   "until": "2026-12-03T21:15:00Z"}).json()
    assert [r["seq"] for r in body["readings"]] == [1]
    for bad in ({"since": "soon"}, {"until": "2026-13-01"}, {"limit": 0},
                {"since": "2026-12-04T00:00:00Z", "until": "2026-12-03T00:00:00Z"}):
        response = client.get(url, params={"point": "tank1.level", **bad})
        assert response.status_code == 422, bad
    assert client.get(url, params={"point": "nope.x"}).status_code == 404

    alarms = client.get(f"/api/sites/{SITE}/alarms").json()
    assert alarms["active"] == ["tank_high"]
    assert [(e["source"], e["state"], e["value"]) for e in alarms["events"]] == [
        ("tank_high", "raised", 950.0)]
    assert [(e["source"], e["state"]) for e in alarms["device_events"]] == [
        ("well2", "offline")]

    missing = client.get("/api/sites/nowhere/points")
    assert missing.status_code == 404 and "nowhere" in missing.json()["detail"]


def test_gateway_goes_offline_after_silence(store: CloudStore) -> None:
    store.store_batch(SITE, GW, [reading(1, "2026-12-03T21:00:00Z", 1.0)])
    client = TestClient(create_app(store, offline_after_s=0.05))
    time.sleep(0.1)
    [site] = client.get("/api/sites").json()
    assert site["gateways"][0]["online"] is False
