"""HJ 1209-2021 self-monitoring schedule and the yearly summary, through the API over a
real SQLite store on a fixed date; per-site visibility of the groundwater routes."""

from __future__ import annotations

import csv
import io
import sys
from datetime import date
from pathlib import Path

import pytest
from argon2 import PasswordHasher
from fastapi.testclient import TestClient

from cloud import selfmonitoring as sm
from cloud.api import create_app
from cloud.auth import AuthStore
from cloud.store import CloudStore

FAST = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)

# HJ 1209-2021, as the project's domain reference states it: surface soil yearly,
# deep soil every 3 years; groundwater half-yearly at units with concealed
# facilities, yearly elsewhere; quarterly / half-yearly with a groundwater-sensitive
# area within 1 km.
MONTHS = {"surface soil": 12, "deep soil": 36, "gw concealed": 6, "gw other": 12,
          "gw concealed sensitive": 3, "gw other sensitive": 6}

CONFIG = {
    "target_class": "III",
    "self_monitoring_start": "2024-01-01",
    "facilities": {
        "T1": {"x": 20, "y": 20, "kind": "buried tank"},
        "P1": {"x": 80, "y": -20, "kind": "wastewater pool"},
        "W1": {"x": 0, "y": 50, "kind": "warehouse", "concealed": True},
    },
    "wells": {
        "MW-1": {"x": -10, "y": -10, "role": "background"},
        "MW-2": {"x": 30, "y": 28, "role": "source", "unit": "T1"},
        "MW-6": {"x": 95, "y": 30, "role": "downgradient", "unit": "P1"},
        "MW-9": {"x": 60, "y": 115, "role": "edge"},
    },
    "soil_points": {
        "S1": {"depth": "surface", "unit": "T1"},
        "D1": {"depth": "deep", "unit": "T1"},
        "S2": {"depth": "surface", "unit": "P1"},
    },
}

RESULTS = """\
well,constituent,date,result,units
MW-1,BENZENE,2024-03-10,<0.5,ug/L
MW-1,Ammonia,2024-03-10,0.05,mg/L
MW-2,BENZENE,2023-09-01,30,ug/L
MW-2,BENZENE,2024-03-10,8,ug/L
MW-2,BENZENE,2024-09-15,15,ug/L
MW-2,Conductivity,2024-09-15,950,uS/cm
MW-6,Ammonia,2024-03-10,0.3,mg/L
MW-9,GW,2024-10-01,12.5,Level
S1,Benzene,2024-05-01,5,mg/kg
S1,TPH,2024-05-01,5000,mg/kg
D1,Benzene,2022-04-01,1,mg/kg
"""


@pytest.fixture
def env(tmp_path):
    store = CloudStore(tmp_path / "cloud.sqlite")
    auth = AuthStore(store.path, hasher=FAST)
    app = create_app(store, auth=auth)
    yield app, auth
    auth.close()
    store.close()


def load(c: TestClient, site: str, config: dict = CONFIG) -> None:
    r = c.put(f"/api/sites/{site}/groundwater/config", json=config)
    assert r.status_code == 200, r.text
    r = c.post(f"/api/sites/{site}/lab-results", content=RESULTS.encode(),
               headers={"content-type": "text/csv"})
    assert r.status_code == 200, r.text


def by_location(out: dict) -> dict[str, dict]:
    return {o["location"]: o for o in out["objects"]}


def test_frequencies_are_those_of_hj_1209():
    assert sm.SURFACE_SOIL_MONTHS == MONTHS["surface soil"]
    assert sm.DEEP_SOIL_MONTHS == MONTHS["deep soil"]
    assert sm.groundwater_months(True, False) == MONTHS["gw concealed"]
    assert sm.groundwater_months(False, False) == MONTHS["gw other"]
    assert sm.groundwater_months(True, True) == MONTHS["gw concealed sensitive"]
    assert sm.groundwater_months(False, True) == MONTHS["gw other sensitive"]
    assert sm.is_concealed({"kind": "buried tank"})
    assert sm.is_concealed({"kind": "pipe trench"})
    assert not sm.is_concealed({"kind": "wastewater pool"})
    assert sm.is_concealed({"kind": "wastewater pool", "concealed": True})
    # Calendar months, clamped to the month's last day.
    assert sm.add_months(date(2024, 8, 31), 6) == date(2025, 2, 28)
    assert sm.add_months(date(2023, 11, 30), 3) == date(2024, 2, 29)
    assert sm.add_months(date(2022, 4, 1), 36) == date(2025, 4, 1)


def test_schedule_due_dates_and_overdue_on_a_fixed_date(env):
    app, _ = env
    c = TestClient(app)
    load(c, "acme-site")
    r = c.get("/api/sites/acme-site/self-monitoring", params={"as_of": "2025-03-01"})
    assert r.status_code == 200, r.text
    out = r.json()
    objs = by_location(out)
    expected = {
        # location: (object, interval months, last sampled, due, days overdue)
        "MW-1": ("groundwater", 12, "2024-03-10", "2025-03-10", None),  # background
        "MW-2": ("groundwater", 6, "2024-09-15", "2025-03-15", None),   # T1 concealed
        "MW-6": ("groundwater", 12, "2024-03-10", "2025-03-10", None),  # P1 open pool
        # MW-9 has only a water level: never sampled, due since the start date.
        "MW-9": ("groundwater", 12, None, "2024-01-01", 425),
        "S1": ("surface_soil", 12, "2024-05-01", "2025-05-01", None),
        "D1": ("deep_soil", 36, "2022-04-01", "2025-04-01", None),
        "S2": ("surface_soil", 12, None, "2024-01-01", 425),
    }
    got = {k: (o["object"], o["interval_months"], o["last_sampled"], o["due"],
               o["days_overdue"]) for k, o in objs.items()}
    assert got == expected
    assert out["overdue"] == ["MW-9", "S2"]
    assert out["issues"] == []
    assert objs["MW-2"]["concealed"] and not objs["MW-6"]["concealed"]
    # A day after D1's three years: overdue by one day.
    later = c.get("/api/sites/acme-site/self-monitoring",
                  params={"as_of": "2025-04-02"}).json()
    assert by_location(later)["D1"]["days_overdue"] == 1
    assert set(later["overdue"]) == {"MW-1", "MW-2", "MW-6", "MW-9", "D1", "S2"}


def test_a_sensitive_area_within_1_km_shortens_the_groundwater_intervals(env):
    app, _ = env
    c = TestClient(app)
    load(c, "acme-site", {**CONFIG, "sensitive_area_within_1km": True})
    out = c.get("/api/sites/acme-site/self-monitoring",
                params={"as_of": "2025-03-01"}).json()
    objs = by_location(out)
    assert (objs["MW-2"]["interval_months"], objs["MW-2"]["due"],
            objs["MW-2"]["days_overdue"]) == (3, "2024-12-15", 76)
    assert (objs["MW-6"]["interval_months"], objs["MW-6"]["due"],
            objs["MW-6"]["days_overdue"]) == (6, "2024-09-10", 172)
    assert objs["MW-1"]["interval_months"] == 6
    assert objs["S1"]["interval_months"] == 12 and objs["D1"]["interval_months"] == 36


def test_missing_background_well_and_bad_configuration(env):
    app, _ = env
    c = TestClient(app)
    wells = {k: {**v, "role": "other"} for k, v in CONFIG["wells"].items()}
    load(c, "acme-site", {**CONFIG, "wells": wells, "soil_points": {}})
    out = c.get("/api/sites/acme-site/self-monitoring",
                params={"as_of": "2025-03-01"}).json()
    assert any("background well" in i for i in out["issues"])
    assert "no surface soil monitoring point configured" in out["issues"]
    bad = {**CONFIG, "wells": {"MW-2": {"x": 0, "y": 0, "unit": "T9"}}}
    r = c.put("/api/sites/acme-site/groundwater/config", json=bad)
    assert r.status_code == 422 and "wells.MW-2.unit" in r.json()["detail"]
    bad = {**CONFIG, "soil_points": {"S1": {"depth": "middle"}}}
    r = c.put("/api/sites/acme-site/groundwater/config", json=bad)
    assert r.status_code == 422 and "soil_points.S1.depth" in r.json()["detail"]
    r = c.get("/api/sites/acme-site/self-monitoring", params={"as_of": "March"})
    assert r.status_code == 422


def test_yearly_summary_json_and_csv(env):
    app, _ = env
    c = TestClient(app)
    load(c, "acme-site")
    r = c.get("/api/sites/acme-site/self-monitoring/summary", params={"year": 2024})
    assert r.status_code == 200, r.text
    out = r.json()
    rows = {(x["location"], x["constituent"]): x for x in out["rows"]}
    assert set(rows) == {("MW-1", "BENZENE"), ("MW-1", "Ammonia"),
                         ("MW-2", "BENZENE"), ("MW-2", "Conductivity"),
                         ("MW-6", "Ammonia"), ("S1", "Benzene"), ("S1", "TPH")}
    # GB/T 14848-2017 benzene: class III 10 ug/L, class IV 120 ug/L. The 2023 result
    # (30) is another year's.
    bz = rows[("MW-2", "BENZENE")]
    assert (bz["n"], bz["max"], bz["class"], bz["limit"], bz["exceedances"]) == (
        2, 15.0, "IV", 10.0, 1)
    assert bz["object"] == "groundwater" and bz["limit_checked"] is True
    nd = rows[("MW-1", "BENZENE")]
    assert (nd["n"], nd["n_detected"], nd["class"], nd["exceedances"]) == (
        1, 0, "<=I", 0)
    # Ammonia-N: 0.3 mg/L is class III (above II's 0.10, at most III's 0.50); 0.05 is
    # class II, which rests on an unchecked class I/II limit.
    assert (rows[("MW-6", "Ammonia")]["class"],
            rows[("MW-6", "Ammonia")]["class_checked"]) == ("III", True)
    assert (rows[("MW-1", "Ammonia")]["class"],
            rows[("MW-1", "Ammonia")]["class_checked"]) == ("II", False)
    assert rows[("MW-2", "Conductivity")]["standard"] is None  # not in GB/T 14848
    # GB 36600-2018 class-2 land: benzene screening 4 mg/kg; petroleum hydrocarbons
    # 4500 (that row not cross-checked).
    soil = rows[("S1", "Benzene")]
    assert (soil["object"], soil["class"], soil["limit"], soil["exceedances"]) == (
        "surface_soil", "above screening", 4.0, 1)
    tph = rows[("S1", "TPH")]
    assert (tph["class"], tph["limit_checked"]) == ("above screening", False)
    assert out["exceedances"] == [
        {"location": "MW-2", "constituent": "BENZENE"},
        {"location": "S1", "constituent": "Benzene"},
        {"location": "S1", "constituent": "TPH"}]

    r = c.get("/api/sites/acme-site/self-monitoring/summary",
              params={"year": 2024, "format": "csv"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    table = list(csv.DictReader(io.StringIO(r.text)))
    assert len(table) == len(out["rows"])
    for line, row in zip(table, out["rows"]):
        assert (line["site"], line["year"]) == ("acme-site", "2024")
        assert line["location"] == row["location"]
        assert line["constituent"] == row["constituent"]
        assert float(line["max"]) == row["max"] and int(line["n"]) == row["n"]
        assert line["class"] == (row["class"] or "")
    empty = c.get("/api/sites/acme-site/self-monitoring/summary",
                  params={"year": 2019}).json()
    assert empty["rows"] == [] and empty["exceedances"] == []
    assert c.get("/api/sites/acme-site/self-monitoring/summary").status_code == 422


def test_enterprise_users_see_only_their_own_sites_groundwater(env):
    app, auth = env
    load(TestClient(app), "acme-site")  # open until the first account exists
    load(TestClient(app), "other-site")
    auth.add_user("acme", "acme-password", "enterprise", ["acme-site"])
    auth.add_user("reg", "regulator-pw", "regulator")
    acme = TestClient(app)
    r = acme.post("/api/auth/login", json={"username": "acme",
                                           "password": "acme-password"})
    assert r.status_code == 200, r.text
    routes = ["groundwater", "groundwater/trends", "groundwater/flow",
              "groundwater/verdicts", "groundwater/config", "lab-results",
              "quick-screens", "incidents", "self-monitoring",
              "self-monitoring/summary?year=2024"]
    for route in routes:
        assert acme.get(f"/api/sites/acme-site/{route}").status_code == 200, route
        r = acme.get(f"/api/sites/other-site/{route}")
        assert r.status_code == 403, (route, r.status_code)
    r = acme.post("/api/sites/other-site/lab-results", content=RESULTS.encode(),
                  headers={"content-type": "text/csv"})
    assert r.status_code == 403
    r = acme.put("/api/sites/other-site/groundwater/config", json=CONFIG)
    assert r.status_code == 403
    assert TestClient(app).get("/api/sites/acme-site/groundwater").status_code == 401
    reg = TestClient(app)
    reg.post("/api/auth/login", json={"username": "reg", "password": "regulator-pw"})
    assert reg.get("/api/sites/other-site/self-monitoring").status_code == 200


def test_verdicts_on_class_i_or_ii_say_they_rest_on_unchecked_limits(env):
    app, _ = env
    c = TestClient(app)
    for target, expected in (("III", 0), ("II", 1), ("I", 1)):
        load(c, "acme-site", {**CONFIG, "target_class": target})
        out = c.get("/api/sites/acme-site/groundwater/verdicts").json()
        assert len(out["verdicts"]["caveats"]) == expected, target
        assert out["risk"]["caveats"] == out["verdicts"]["caveats"]
        if expected:
            assert "not cross-checked" in out["verdicts"]["caveats"][0]


def test_beside_postgresql_groundwater_records_persist_in_the_accounts_file(tmp_path):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # hil_tests/ helpers
    from cloud.store_pg import PgStore
    from hil_tests.pgdb import temp_database

    with temp_database() as url:
        for attempt in range(2):
            store = PgStore(url)
            auth = AuthStore(tmp_path / "cloud-auth.sqlite", hasher=FAST)
            c = TestClient(create_app(store, auth=auth))
            if attempt == 0:
                load(c, "acme-site")
            else:  # a restarted receiver still has them
                out = c.get("/api/sites/acme-site/self-monitoring",
                            params={"as_of": "2025-03-01"}).json()
                assert out["overdue"] == ["MW-9", "S2"]
            auth.close()
            store.close()
