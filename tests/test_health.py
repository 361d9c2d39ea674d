"""The health message: contract round trip and rejection, the gateway's counters in it,
the cloud's latest health and the offline rule."""

from __future__ import annotations

import asyncio
import copy
import json
import shutil
import time
import tomllib
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from cloud.api import create_app
from cloud.store import CloudStore
from drivers.codec import encode
from edge.bus import NoAnswer
from edge.config import parse_config
from edge.gateway import ERROR_WINDOW_S, Gateway
from edge.store import SCHEMA_VERSION
from groundwatch import contract
from groundwatch.contract import ContractError

EXAMPLE = Path(__file__).parents[1] / "groundwatch" / "examples" / "site.toml"


def health_body(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "ts": "2026-12-03T21:44:37.583+00:00", "uptime_s": 3600.5, "outbox_depth": 12,
        "oldest_unsent_age_s": 4.25,
        "drops": {"evicted_unsent": 0, "dead_lettered": 1, "store_failures": 0},
        "error_window_s": 600.0,
        "devices": {
            "tank1": {"polls": 10, "failures": 2, "error_rate": 0.2, "online": True,
                      "last_good_poll": "2026-12-03T21:44:36.001+00:00"},
            "mw1": {"polls": 0, "failures": 0, "error_rate": None, "online": None,
                    "last_good_poll": None},
        },
        "relays": {"horn": False, "gateway_ok": True, "beacon": None},
        "disk": {"db_bytes": 4096, "wal_bytes": 0, "free_bytes": 10**9},
        "clock_synchronised": True, "schema_version": 2,
    }
    body.update(changes)
    return body


def test_health_round_trip() -> None:
    payload = contract.encode_health("sz-demo-01", "gw-01", health_body())
    assert contract.decode_health(payload) == {
        "v": contract.HEALTH_VERSION, "site": "sz-demo-01", "gateway": "gw-01",
        **health_body()}
    assert contract.health_topic("s", "g") == "groundwatch/s/g/health"
    assert contract.split_topic(contract.health_topic("s", "g")) == ("s", "g", "health")


@pytest.mark.parametrize("path, value, named", [
    (("ts",), "yesterday", "ts: 'yesterday' is not an ISO 8601 time"),
    (("ts",), "2026-12-03T21:44:37", "ts: '2026-12-03T21:44:37' is not an ISO"),
    (("uptime_s",), -1, "uptime_s: -1 is not a non-negative number"),
    (("outbox_depth",), 1.5, "outbox_depth: 1.5 is not a non-negative integer"),
    (("outbox_depth",), True, "outbox_depth: True is not a non-negative integer"),
    (("oldest_unsent_age_s",), "4", "oldest_unsent_age_s: '4' is not"),
    (("drops", "dead_lettered"), -2, "drops.dead_lettered: -2 is not"),
    (("drops", "parked"), "x", "drops.parked: 'x' is not"),
    (("devices", "tank1", "error_rate"), 1.5, "devices.tank1.error_rate: 1.5 is not 0"),
    (("devices", "tank1", "online"), "yes", "devices.tank1.online: 'yes' is not true"),
    (("devices", "tank1", "last_good_poll"), 5, "devices.tank1.last_good_poll: 5"),
    (("devices", "tank1", "failures"), 11, "devices.tank1.failures: more than"),
    (("disk", "free_bytes"), -1, "disk.free_bytes: -1 is not"),
    (("clock_synchronised",), 1, "clock_synchronised: 1 is not true or false"),
    (("schema_version",), None, "schema_version: None is not"),
    (("devices",), [], "devices: missing or not an object"),
    (("relays",), {"horn": "on"}, "relays: not an object"),
])
def test_bad_field_rejected_and_named(path: tuple[str, ...], value: Any,
                                      named: str) -> None:
    body = {"v": 1, "site": "s", "gateway": "g", **copy.deepcopy(health_body())}
    target = body
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    with pytest.raises(ContractError, match=named.replace("(", r"\(").replace(
            ".", r"\.").replace("?", r"\?")):
        contract.decode_health(json.dumps(body).encode())


@pytest.mark.parametrize("drop, named", [
    ("uptime_s", "uptime_s: missing"), ("drops", "drops: not an object"),
    ("site", "site: missing"),
])
def test_missing_field_named(drop: str, named: str) -> None:
    body = {"v": 1, "site": "s", "gateway": "g", **health_body()}
    del body[drop]
    with pytest.raises(ContractError, match=named):
        contract.decode_health(json.dumps(body).encode())


def test_unknown_version_and_non_json_rejected() -> None:
    body = {"v": 2, "site": "s", "gateway": "g", **health_body()}
    with pytest.raises(ContractError, match="v: unsupported health version 2"):
        contract.decode_health(json.dumps(body).encode())
    with pytest.raises(ContractError, match="not JSON"):
        contract.decode_health(b"\xff{")
    with pytest.raises(ContractError, match="outbox_depth"):  # encode checks too
        contract.encode_health("s", "g", health_body(outbox_depth=-1))


def test_unknown_fields_allowed() -> None:
    body = {"v": 1, "site": "s", "gateway": "g", **health_body(cpu_temp_c=51.0)}
    assert contract.decode_health(json.dumps(body).encode())["cpu_temp_c"] == 51.0


# -- the gateway's health -------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


class ScriptedBus:
    def __init__(self, cfg: Any, registers: dict[int, int]) -> None:
        self.cfg, self.registers, self.silent = cfg, registers, False

    async def read(self, unit: int, block: Any, timeout_s: float | None = None
                   ) -> dict[int, int]:
        if self.silent:
            raise NoAnswer(f"unit {unit}: no reply")
        return {a: self.registers.get(a, 0)
                for a in range(block.start, block.start + block.count)}


@pytest.fixture
def gateway(tmp_path: Path) -> Any:
    doc = tomllib.loads(EXAMPLE.read_text())
    doc["gateway"]["data_dir"] = str(tmp_path / "gw")
    doc["gateway"]["clock_sync"] = "assume"
    cfg = parse_config(doc, "site.toml", tmp_path)
    clock = FakeClock()
    gw = Gateway(cfg, clock=clock)
    bus = ScriptedBus(cfg.buses[0], dict(enumerate(encode(123456, "int32"), start=2)))
    yield gw, bus, clock
    gw.store.close()


def test_gateway_health_from_its_counters(gateway: Any) -> None:
    gw, bus, clock = gateway
    tank = gw.devices["tank1"]
    for _ in range(3):  # three answered polls, then seven silent ones
        asyncio.run(gw._poll_device(bus, tank))
        clock.t += 10
    bus.silent = True
    for _ in range(7):
        asyncio.run(gw._poll_device(bus, tank))
        clock.t += 10
    clock.t += 30  # 130 s after start
    gw.store.add_event("test", "gateway", "started")
    health = contract.decode_health(gw.health_payload() or b"")
    assert health["uptime_s"] == 130.0
    depth = gw.store.conn.execute("SELECT count(*) FROM outbox").fetchone()[0]
    # 3 polls of every tank1 point, the comm_lost rows once, offline event, ours
    points = len([p for p in tank.map.points.values() if p.type != "string"])
    assert depth == health["outbox_depth"] == 3 * len(tank.map.points) + points + 2
    assert health["devices"]["tank1"] == {
        "polls": 10, "failures": 7, "error_rate": 0.7, "online": False,
        "last_good_poll": tank.last_good_poll}
    other = next(n for n in health["devices"] if n != "tank1")
    assert health["devices"][other] == {"polls": 0, "failures": 0, "error_rate": None,
                                        "online": None, "last_good_poll": None}
    assert health["relays"] == dict.fromkeys(gw.cfg.relays)  # none written yet
    assert health["drops"].pop("parked", 0) == 0  # present if the uplink parks
    assert health["drops"] == {"evicted_unsent": 0, "dead_lettered": 0,
                               "store_failures": 0}
    assert health["schema_version"] == SCHEMA_VERSION
    assert health["clock_synchronised"] is True
    assert health["disk"]["db_bytes"] == (gw.cfg.data_dir / "gateway.sqlite").stat(
        ).st_size
    free = shutil.disk_usage(gw.cfg.data_dir).free
    assert abs(health["disk"]["free_bytes"] - free) < 64 << 20
    oldest = gw.store.conn.execute("SELECT min(ts) FROM readings").fetchone()[0]
    age_s = (datetime.now(UTC) - datetime.fromisoformat(oldest)).total_seconds()
    assert 0 <= health["oldest_unsent_age_s"] <= age_s + 1

    # The error rate forgets polls older than its window: only the silent ones stay.
    clock.t += ERROR_WINDOW_S - 75  # the 3 answered polls are now older than 600 s
    assert gw.health()["devices"]["tank1"]["error_rate"] == 1.0
    clock.t += 100
    assert gw.health()["devices"]["tank1"]["error_rate"] is None


def test_gateway_health_counts_drops(gateway: Any) -> None:
    gw, bus, clock = gateway
    gw.store.set_meta("evicted_unsent_total", "17")
    gw.uplink.stats["dead_lettered"] = 3
    gw.counters["store_failures"] = 2
    gw.uplink.stats["parked"] = 4
    assert gw.health()["drops"] == {"evicted_unsent": 17, "dead_lettered": 3,
                                    "store_failures": 2, "parked": 4}


# -- the cloud's view -----------------------------------------------------------------

SITE, GW = "site-a", "gw-1"


@pytest.fixture
def store(tmp_path: Path) -> Any:
    db = CloudStore(tmp_path / "cloud.sqlite")
    yield db
    db.close()


def stored_health(ts: str, depth: int) -> dict[str, Any]:
    return {"v": 1, "site": SITE, "gateway": GW, **health_body(ts=ts, outbox_depth=depth)}


def test_latest_health_served_and_history_kept(store: CloudStore) -> None:
    t0 = datetime(2026, 12, 3, 21, tzinfo=UTC)
    for i in range(3):
        assert store.store_health(SITE, GW, stored_health(
            (t0 + timedelta(seconds=30 * i)).isoformat(), 10 + i), seen=True)
    # A retained message delivered again on reconnect is stored once.
    assert not store.store_health(SITE, GW, stored_health(t0.isoformat(), 10))
    client = TestClient(create_app(store))
    [gw] = client.get(f"/api/sites/{SITE}/gateways").json()
    assert gw["online"] is True and gw["health"]["outbox_depth"] == 12
    assert gw["health"]["devices"]["tank1"]["error_rate"] == 0.2
    [site] = client.get("/api/sites").json()
    assert site["gateways_online"] == 1 and site["gateways_offline"] == 0
    assert site["gateways"][0]["health"]["outbox_depth"] == 12
    assert site["gateways"][0]["health"]["devices_offline"] == []
    history = client.get(f"/api/sites/{SITE}/gateways/{GW}/health?limit=2").json()
    assert [h["outbox_depth"] for h in history["health"]] == [12, 11]
    assert client.get(f"/api/sites/{SITE}/gateways/nope/health").status_code == 404
    assert client.get("/api/sites/nowhere/gateways").status_code == 404


def test_history_pruned_to_its_limit(store: CloudStore,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("cloud.store.HEALTH_HISTORY", 5)
    t0 = datetime(2026, 12, 3, 21, tzinfo=UTC)
    for i in range(8):
        store.store_health(SITE, GW, stored_health(
            (t0 + timedelta(seconds=i)).isoformat(), i))
    assert [h["outbox_depth"] for h in store.health_history(SITE, GW)] == [
        7, 6, 5, 4, 3]


def test_offline_after_silence_and_after_offline_status(store: CloudStore) -> None:
    client = TestClient(create_app(store, offline_after_s=0.3))

    def online() -> bool:
        return bool(client.get(f"/api/sites/{SITE}/gateways").json()[0]["online"])

    now = datetime.now(UTC).isoformat()
    store.store_health(SITE, GW, stored_health(now, 1), seen=True)
    assert online()
    time.sleep(0.4)  # silence longer than offline_after_s
    assert not online()
    store.store_health(SITE, GW, stored_health(datetime.now(UTC).isoformat(), 1),
                       seen=True)
    assert online()
    store.set_gateway_status(SITE, GW, "offline")  # an orderly stop, or the will
    assert not online()
    time.sleep(0.01)
    # Heard from again after it said offline: online (its "online" may be lost).
    store.store_health(SITE, GW, stored_health(datetime.now(UTC).isoformat(), 1),
                       seen=True)
    assert online()
    # A retained health message is not a sign of life.
    time.sleep(0.4)
    store.store_health(SITE, GW, stored_health(datetime.now(UTC).isoformat(), 1))
    assert not online()
