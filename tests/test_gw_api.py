"""Groundwater routes of the cloud API over a real SQLite store: the example site."""

import json
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from cloud.api import create_app
from cloud.store import CloudStore

EXAMPLE = Path(__file__).parents[1] / "groundwatch" / "examples" / "gw_site"


@pytest.fixture
def client(tmp_path):
    store = CloudStore(tmp_path / "cloud.sqlite")
    yield TestClient(create_app(store))
    store.close()


def _load_example(client, site="plant-7"):
    config = json.loads((EXAMPLE / "site.json").read_text())
    wells = config.pop("wells")
    r = client.put(f"/api/sites/{site}/groundwater/config", json=config)
    assert r.status_code == 200, r.text
    # Coordinates from the GWSDAT-layout file, roles from the configuration.
    r = client.post(f"/api/sites/{site}/wells",
                    content=(EXAMPLE / "WellCoords.csv").read_bytes(),
                    headers={"content-type": "text/csv"})
    assert r.json()["wells"] == 8
    cfg = client.get(f"/api/sites/{site}/groundwater/config").json()
    for name, well in wells.items():
        cfg["wells"][name]["role"] = well["role"]
    assert client.put(f"/api/sites/{site}/groundwater/config", json=cfg).status_code \
        == 200
    r = client.post(f"/api/sites/{site}/lab-results",
                    content=(EXAMPLE / "WellData.csv").read_bytes(),
                    headers={"content-type": "text/csv"})
    assert r.status_code == 200, r.text
    return r.json()


def test_example_site_through_the_api(client):
    loaded = _load_example(client)
    assert loaded["stored"] == 12 * 8 * 3 - 2 and loaded["new"] == loaded["stored"]
    assert loaded["non_detects"] > 0

    trends = client.get("/api/sites/plant-7/groundwater/trends").json()["series"]
    by = {(s["well"], s["constituent"]): s for s in trends}
    assert by[("MW-3", "BENZENE")]["trend"] == "Increasing"
    assert by[("MW-3", "BENZENE")]["exceeds_target"] is True
    assert by[("MW-2", "BENZENE")]["trend"] == "Decreasing"
    assert by[("MW-4", "TCE")]["trend"] == "Decreasing"
    assert by[("MW-4", "TCE")]["sen_slope"] < 0

    flow = client.get("/api/sites/plant-7/groundwater/flow").json()
    assert flow["flow"]["direction_deg"] == pytest.approx(53.13, abs=5)
    assert len(flow["flow_by_event"]) == 12
    assert [s["facility"] for s in flow["candidate_sources"]["MW-3"]] == ["T1"]

    verdicts = client.get("/api/sites/plant-7/groundwater/verdicts").json()
    assert verdicts["verdicts"]["site"]["near_term_contained"] is False
    assert verdicts["verdicts"]["wells"]["MW-4"]["mid_term_falling"] is True
    assert verdicts["risk"]["status"] == "orange"


def test_reimport_replaces_and_json_results(client):
    _load_example(client)
    again = client.post("/api/sites/plant-7/lab-results",
                        content=(EXAMPLE / "WellData.csv").read_bytes(),
                        headers={"content-type": "text/csv"}).json()
    assert again["new"] == 0 and again["replaced"] == again["stored"]
    r = client.post("/api/sites/plant-7/lab-results", json={"results": [
        {"well": "MW-9", "constituent": "arsenic", "date": "2024-01-10",
         "result": "<1", "unit": "µg/L"},
        {"well": "MW-9", "constituent": "arsenic", "date": "2024-04-10",
         "result": 3.5, "unit": "µg/L"},
        {"well": "MW-9", "constituent": "arsenic", "date": "2024-07-10",
         "result": "", "unit": "µg/L"},
    ]})
    assert r.json()["stored"] == 2 and r.json()["non_detects"] == 1
    rows = client.get("/api/sites/plant-7/lab-results?well=MW-9").json()["results"]
    assert [(x["value"], x["censored"]) for x in rows] == [(1.0, True), (3.5, False)]
    bad = client.post("/api/sites/plant-7/lab-results", json={"results": [
        {"well": "MW-9", "constituent": "arsenic", "date": "soon", "result": 1}]})
    assert bad.status_code == 422 and "results[0]" in bad.json()["detail"]


def test_quick_screens_and_incidents_raise_the_risk(client):
    _load_example(client)
    r = client.post("/api/sites/plant-7/quick-screens", json={
        "ts": "2023-11-02T09:30:00+08:00", "location": "T1 leak tube", "kind": "PID",
        "value": 640, "unit": "ppm", "threshold": 500})
    assert r.status_code == 200 and r.json()["abnormal"] is True
    r = client.post("/api/sites/plant-7/incidents", json={
        "ts": "2023-11-03T14:00:00+08:00", "kind": "spill",
        "title": "diesel spill at the loading bay", "severity": "major"})
    assert r.status_code == 200
    assert client.post("/api/sites/plant-7/incidents", json={
        "ts": "yesterday", "kind": "spill", "title": "x"}).status_code == 422
    risk = client.get("/api/sites/plant-7/groundwater/verdicts").json()["risk"]
    assert risk["status"] == "red"
    assert {r["situation"] for r in risk["reasons"]} >= {"quick_screen", "incident"}
    assert len(client.get("/api/sites/plant-7/incidents").json()["incidents"]) == 1


def test_unknown_site_and_bad_config(client):
    assert client.get("/api/sites/nowhere/groundwater").status_code == 404
    r = client.put("/api/sites/x/groundwater/config",
                   json={"wells": {"A": {"x": 0, "y": 0, "role": "upstream"}}})
    assert r.status_code == 422 and "wells.A.role" in r.json()["detail"]


def test_gateway_sensor_series_join_the_analysis(tmp_path):
    store = CloudStore(tmp_path / "cloud.sqlite")
    client = TestClient(create_app(store))
    # Twelve days of well-probe conductivity, four readings a day, rising 5 uS/cm/day,
    # and one bad reading that must not count.
    records, seq = [], 0
    for day in range(12):
        for hour in (0, 6, 12, 18):
            seq += 1
            records.append({"seq": seq, "kind": "reading",
                            "ts": f"2024-03-{day + 1:02d}T{hour:02d}:00:00+00:00",
                            "device": "mw1", "point": "specific_conductivity",
                            "value": 800.0 + 5 * day + hour / 6, "quality": "good",
                            "unit": "uS/cm"})
    records.append({"seq": seq + 1, "kind": "reading", "ts": "2024-03-05T03:00:00Z",
                    "device": "mw1", "point": "specific_conductivity",
                    "value": 99999.0, "quality": "out_of_range", "unit": "uS/cm"})
    store.store_batch("plant-7", "gw-1", records)
    r = client.put("/api/sites/plant-7/groundwater/config", json={
        "wells": {"MW-1": {"x": 0, "y": 0, "role": "downgradient"}},
        "sensors": {"mw1.specific_conductivity": {"well": "MW-1",
                                                  "constituent": "conductivity"}}})
    assert r.status_code == 200
    series = client.get("/api/sites/plant-7/groundwater/trends").json()["series"]
    (cond,) = [s for s in series if s["constituent"] == "conductivity"]
    assert cond["n"] == 12 and cond["s"] == 66  # 12 daily means, all pairs rising
    assert cond["trend"] == "Increasing"
    assert cond["latest"]["value"] == pytest.approx(800 + 5 * 11 + 1.5)
    # The Sen slope is per year: 5 uS/cm a day.
    assert cond["sen_slope"] == pytest.approx(5 * 366, rel=1e-9)  # 2024 is a leap year
    store.close()
