"""GET /api/sites/{site}/leak-tests: verdicts, rates and bounds from leak_test events."""

from __future__ import annotations

from fastapi.testclient import TestClient

from cloud.api import create_app
from cloud.store import CloudStore
from leak_detection.static_test import StaticResult, leak_test_message


def test_leak_tests_come_back_per_tank_newest_first_with_their_bounds(tmp_path):
    store = CloudStore(tmp_path / "cloud.sqlite")
    fail = StaticResult("fail", "leak rate above the threshold", rate_gph=0.5123,
                        lower_gph=0.4801, upper_gph=0.5445, threshold_gph=0.1,
                        target_gph=0.2, start_s=0.0, end_s=10800.0)
    message = leak_test_message(fail, "2026-05-01T02:00:00+00:00",
                                "2026-05-01T05:00:00+00:00")
    records = [
        {"seq": 1, "kind": "event", "ts": "2026-05-01T05:00:01Z", "source": "T1",
         "event": "leak_test", "state": "fail", "severity": "critical",
         "point": "tank1.level_mm", "value": 0.5123, "message": message},
        {"seq": 2, "kind": "event", "ts": "2026-05-02T05:00:01Z", "source": "T2",
         "event": "leak_test", "state": "inconclusive", "severity": "info",
         "point": "tank2.level_mm", "value": None,
         "message": "inconclusive: product not settled 24.0 h after the delivery"},
        {"seq": 3, "kind": "event", "ts": "2026-05-02T06:00:00Z", "source": "horn",
         "event": "alarm", "state": "raised", "value": 1.0, "message": ""},
    ]
    store.store_batch("s1", "gw1", records)
    client = TestClient(create_app(store))
    body = client.get("/api/sites/s1/leak-tests").json()
    assert [(r["tank"], r["verdict"]) for r in body["leak_tests"]] == [
        ("T2", "inconclusive"), ("T1", "fail")]
    t1 = body["leak_tests"][1]
    assert (t1["rate_gph"], t1["lower_gph"], t1["upper_gph"]) == (0.5123, 0.4801, 0.5445)
    assert (t1["threshold_gph"], t1["target_gph"], t1["window_h"]) == (0.1, 0.2, 3.0)
    assert t1["window_start"] == "2026-05-01T02:00:00+00:00"
    assert t1["gateway"] == "gw1" and t1["point"] == "tank1.level_mm"
    t2 = body["leak_tests"][0]
    assert t2["rate_gph"] is None and "not settled" in t2["reason"]
    only = client.get("/api/sites/s1/leak-tests?tank=T1").json()["leak_tests"]
    assert [r["seq"] for r in only] == [1]
    assert client.get("/api/sites/nowhere/leak-tests").status_code == 404
