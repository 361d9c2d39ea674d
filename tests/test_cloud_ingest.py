"""Ingest end to end through the real Mosquitto on 127.0.0.1:1883."""

from __future__ import annotations

import json
import queue
import sqlite3
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from fastapi.testclient import TestClient
from paho.mqtt.enums import CallbackAPIVersion

from cloud.api import create_app
from cloud.ingest import Ingestor
from cloud.store import CloudStore
from groundwatch import contract

HOST, PORT = "127.0.0.1", 1883
GW = "gw-1"
TIMEOUT_S = 5.0


def reading(seq: int, ts: str, value: float) -> dict[str, Any]:
    return {"seq": seq, "kind": "reading", "ts": ts, "device": "well1",
            "point": "depth", "value": value, "quality": "good", "unit": "m"}


def forget_session(client_id: str) -> None:
    """Drop a persistent session from the shared broker."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id,
                         protocol=mqtt.MQTTv311, clean_session=True)
    client.connect(HOST, PORT)
    client.loop_start()
    client.disconnect()
    client.loop_stop()


class Gateway:
    """A stand-in gateway: publishes to the data topic, collects acks."""

    def __init__(self, site: str) -> None:
        self.site = site
        self.acks: queue.Queue[dict[str, Any]] = queue.Queue()
        subscribed = queue.Queue()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2,
                                  client_id=f"test-gw-{uuid.uuid4().hex[:8]}",
                                  protocol=mqtt.MQTTv311)
        self.client.on_message = lambda c, u, m: self.acks.put(
            contract.decode_ack(m.payload))
        self.client.on_subscribe = lambda *args: subscribed.put(True)
        self.client.connect(HOST, PORT)
        self.client.loop_start()
        self.client.subscribe(contract.ack_topic(site, GW), qos=1)
        subscribed.get(timeout=TIMEOUT_S)

    def publish(self, payload: bytes, topic: str | None = None) -> None:
        info = self.client.publish(topic or contract.data_topic(self.site, GW),
                                   payload, qos=1)
        info.wait_for_publish(TIMEOUT_S)

    def ack(self) -> dict[str, Any]:
        return self.acks.get(timeout=TIMEOUT_S)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def wait_until(check: Callable[[], bool]) -> None:
    deadline = time.monotonic() + TIMEOUT_S
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


@pytest.fixture
def site() -> str:
    return f"test-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def store(tmp_path: Path) -> Iterator[CloudStore]:
    db = CloudStore(tmp_path / "cloud.sqlite")
    yield db
    db.close()


@pytest.fixture
def gateway(site: str) -> Iterator[Gateway]:
    gw = Gateway(site)
    yield gw
    gw.close()


@pytest.fixture
def make_ingestor(site: str, store: CloudStore) -> Iterator[Callable[..., Ingestor]]:
    started: list[Ingestor] = []
    client_id = f"test-cloud-{site}"

    def make(**kwargs: Any) -> Ingestor:
        ingestor = Ingestor(store, HOST, PORT, client_id=client_id, site=site, **kwargs)
        ingestor.start()
        assert ingestor.wait_ready(TIMEOUT_S)
        started.append(ingestor)
        return ingestor

    yield make
    for ingestor in started:
        ingestor.stop()
    forget_session(client_id)


def count(store: CloudStore, table: str) -> int:
    with sqlite3.connect(store.path) as db:
        return db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]


def test_batch_stored_acked_and_replay_deduplicated(
    site: str, store: CloudStore, gateway: Gateway,
    make_ingestor: Callable[..., Ingestor],
) -> None:
    ingestor = make_ingestor()
    records = [
        reading(1, "2026-12-03T21:00:00Z", 3.25),
        reading(2, "2026-12-03T21:15:00Z", 3.5),
        {"seq": 3, "kind": "event", "ts": "2026-12-03T21:16:00Z", "source": "well_low",
         "event": "alarm", "state": "raised", "severity": "high"},
        reading(5, "2026-12-03T21:30:00Z", 3.75),
    ]
    batch = contract.encode_batch(site, GW, 41, records)
    gateway.publish(batch)
    assert gateway.ack() == {"v": 1, "batch": 41, "stored": [[1, 3], [5, 5]],
                             "dead_lettered": []}
    gateway.publish(batch)
    assert gateway.ack() == {"v": 1, "batch": 41, "stored": [[1, 3], [5, 5]],
                             "dead_lettered": []}
    assert (count(store, "readings"), count(store, "events")) == (3, 1)
    expected = {"messages": 2, "records": 4, "duplicates": 4, "malformed": 0,
                "acks_sent": 2, "store_errors": 0, "dead_lettered": 0, "health": 0}
    wait_until(lambda: ingestor.counters() == expected)  # acks_sent lags the ack

    client = TestClient(create_app(store, ingestor))
    health = client.get("/api/health").json()
    assert health["broker_connected"] is True and health["ingest"]["acks_sent"] == 2
    [point] = client.get(f"/api/sites/{site}/points").json()
    assert (point["point"], point["value"], point["seq"]) == ("well1.depth", 3.75, 5)
    url = f"/api/sites/{site}/readings"
    body = client.get(url, params={"point": "well1.depth"}).json()
    assert [r["value"] for r in body["readings"]] == [3.25, 3.5, 3.75]
    assert client.get(f"/api/sites/{site}/alarms").json()["active"] == ["well_low"]


def test_malformed_messages_dropped_and_ingest_continues(
    site: str, store: CloudStore, gateway: Gateway,
    make_ingestor: Callable[..., Ingestor],
) -> None:
    ingestor = make_ingestor(max_payload_bytes=4096)
    good = [reading(1, "2026-12-03T21:00:00Z", 1.0)]
    bad_version = json.loads(contract.encode_batch(site, GW, 1, good))
    bad_version["v"] = 99
    gateway.publish(b"{not json")
    gateway.publish(json.dumps(bad_version).encode())
    gateway.publish(contract.encode_batch("elsewhere", GW, 2, good))  # body != topic
    gateway.publish(contract.encode_batch(site, GW, 3, [reading(1, "noon", 1.0)]))
    gateway.publish(contract.encode_batch(site, GW, 4, good * 100))  # over 4 KiB
    gateway.publish(contract.encode_batch(site, GW, 5, good))
    # The record with a bad time is kept aside and named, so the gateway stops
    # sending it; the batch after it is stored as usual.
    assert gateway.ack() == {"v": 1, "batch": 3, "stored": [], "dead_lettered": [[1, 1]]}
    assert gateway.ack() == {"v": 1, "batch": 5, "stored": [[1, 1]], "dead_lettered": []}
    wait_until(lambda: ingestor.counters()["acks_sent"] == 2)
    counters = ingestor.counters()
    assert (counters["messages"], counters["malformed"]) == (6, 4)
    assert counters["dead_lettered"] == 1
    assert counters["records"] == 1
    assert count(store, "readings") == 1
    reasons = [d["reason"] for d in store.dead_letters()]
    assert len(reasons) == 5
    assert any("records[0].ts" in r for r in reasons)
    assert any("unsupported contract version 99" in r for r in reasons)


def test_queued_batch_survives_receiver_restart(
    site: str, store: CloudStore, gateway: Gateway,
    make_ingestor: Callable[..., Ingestor],
) -> None:
    make_ingestor().stop()  # leaves a persistent session subscribed at the broker
    batch = [reading(9, "2026-12-03T21:00:00Z", 2.0)]
    gateway.publish(contract.encode_batch(site, GW, 7, batch))
    make_ingestor()
    assert gateway.ack() == {"v": 1, "batch": 7, "stored": [[9, 9]],
                             "dead_lettered": []}
    assert store.latest_points(site)[0]["value"] == 2.0


def test_status_messages_set_gateway_status(
    site: str, store: CloudStore, gateway: Gateway,
    make_ingestor: Callable[..., Ingestor],
) -> None:
    make_ingestor()
    client = TestClient(create_app(store))
    topic = contract.status_topic(site, GW)

    def gateways() -> list[dict[str, Any]]:
        sites = {s["site"]: s for s in client.get("/api/sites").json()}
        return sites[site]["gateways"] if site in sites else []

    gateway.publish(b"online", topic)
    wait_until(lambda: [g["status"] for g in gateways()] == ["online"])
    assert gateways()[0]["online"] is True
    gateway.publish(b"offline", topic)
    wait_until(lambda: gateways()[0]["status"] == "offline")
    assert gateways()[0]["online"] is False


def health(site: str, ts: str, depth: int, **changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "ts": ts, "uptime_s": 61.5, "outbox_depth": depth, "oldest_unsent_age_s": 2.0,
        "drops": {"evicted_unsent": 0, "dead_lettered": 0, "store_failures": 0},
        "error_window_s": 600.0,
        "devices": {"well1": {"polls": 8, "failures": 2, "error_rate": 0.25,
                              "online": True, "last_good_poll": ts}},
        "relays": {"horn": False},
        "disk": {"db_bytes": 8192, "wal_bytes": 0, "free_bytes": 1 << 30},
        "clock_synchronised": True, "schema_version": 2,
    }
    body.update(changes)
    return body


def test_health_stored_served_and_malformed_dead_lettered(
    site: str, store: CloudStore, gateway: Gateway,
    make_ingestor: Callable[..., Ingestor],
) -> None:
    ingestor = make_ingestor()
    client = TestClient(create_app(store, ingestor))
    topic = contract.health_topic(site, GW)
    try:
        gateway.client.publish(topic, contract.encode_health(
            site, GW, health(site, "2026-12-03T21:00:00.000+00:00", 7)), qos=1,
            retain=True).wait_for_publish(TIMEOUT_S)
        wait_until(lambda: store.latest_health(site).get(GW) is not None)
        [gw] = client.get(f"/api/sites/{site}/gateways").json()
        assert gw["online"] is True  # heard live
        assert gw["health"]["outbox_depth"] == 7
        assert gw["health"]["devices"]["well1"]["error_rate"] == 0.25
        assert ingestor.counters()["health"] == 1

        bad = health(site, "2026-12-03T21:00:30.000+00:00", 8)
        bad["devices"]["well1"]["failures"] = "two"
        gateway.publish(json.dumps({"v": 1, "site": site, "gateway": GW, **bad}).encode(),
                        topic)
        gateway.publish(contract.encode_health("elsewhere", GW, health(
            site, "2026-12-03T21:00:40.000+00:00", 9)), topic)
        wait_until(lambda: count(store, "dead_letters") == 2)
        reasons = [d["reason"] for d in store.dead_letters()]
        assert any("devices.well1.failures: 'two'" in r for r in reasons)
        assert any("body names elsewhere/gw-1" in r for r in reasons)
        assert ingestor.counters()["malformed"] == 2
        assert client.get(f"/api/sites/{site}/gateways").json()[0]["health"][
            "outbox_depth"] == 7

        # A receiver that starts later gets the retained health, once.
        ingestor.stop()
        forget_session(f"test-cloud-{site}")
        with sqlite3.connect(store.path) as db:
            db.execute("DELETE FROM gateway_health")
        make_ingestor()
        wait_until(lambda: store.latest_health(site).get(GW) is not None)
        assert [h["outbox_depth"] for h in store.health_history(site, GW)] == [7]
    finally:  # leave no retained message on the shared broker
        gateway.client.publish(topic, b"", qos=1, retain=True).wait_for_publish(
            TIMEOUT_S)
