"""Accounts of the cloud API: roles, sessions that expire, tokens, audit, the series."""

from __future__ import annotations

import csv
import io
import math
import sqlite3
from pathlib import Path

import pytest
from argon2 import PasswordHasher
from fastapi.testclient import TestClient

from cloud import auth as cloud_auth
from cloud.api import create_app
from cloud.auth import AuthError, AuthStore
from cloud.series import decimate
from cloud.store import CloudStore
from groundwatch import users_cli
from groundwatch.cli import main


# argon2id still, with cheap parameters: the default costs a third of a second a hash.
FAST = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)


class Clock:
    """A settable epoch clock for session expiry."""

    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


def reading(seq: int, minute: int, value: float | None, quality: str = "good",
            point: str = "level_m") -> dict:
    return {"seq": seq, "kind": "reading", "ts": f"2024-01-01T{minute // 60:02d}:"
            f"{minute % 60:02d}:00Z", "device": "mw1", "point": point,
            "value": value, "quality": quality, "unit": "m"}


@pytest.fixture
def env(tmp_path: Path):
    store = CloudStore(tmp_path / "cloud.sqlite")
    recs = [reading(i + 1, i, float(i)) for i in range(30)]
    recs.append({"seq": 100, "kind": "event", "ts": "2024-01-01T01:00:00Z",
                 "source": "mw1-high", "event": "alarm", "state": "raised",
                 "severity": "warning", "point": "mw1.level_m", "value": 29.0})
    store.store_batch("acme-site", "gw1", recs)
    store.store_batch("other-site", "gw9", [reading(1, 0, 5.0)])
    clock = Clock()
    auth = AuthStore(store.path, session_ttl_s=3600, clock=clock, hasher=FAST)
    app = create_app(store, auth=auth)
    yield store, auth, app, clock
    auth.close()
    store.close()


def client(app, username: str | None = None, password: str | None = None) -> TestClient:
    c = TestClient(app)
    if username:
        r = c.post("/api/auth/login", json={"username": username, "password": password})
        assert r.status_code == 200, r.text
    return c


def users(auth: AuthStore) -> None:
    auth.add_user("reg", "regulator-pw", "regulator")
    auth.add_user("acme", "acme-password", "enterprise", ["acme-site"])
    auth.add_user("other", "other-password", "enterprise", ["other-site"])
    auth.add_user("eng", "engineer-pw", "engineer", ["*"])


def test_open_until_a_user_exists_then_login_needed(env):
    _, auth, app, _ = env
    anon = TestClient(app)
    assert {s["site"] for s in anon.get("/api/sites").json()} == {"acme-site",
                                                                  "other-site"}
    users(auth)
    assert anon.get("/api/sites").status_code == 401
    assert anon.get("/api/sites/acme-site/points").status_code == 401
    assert anon.get("/api/health").status_code == 200
    assert anon.get("/", follow_redirects=False).status_code == 303


def test_enterprise_sees_only_its_own_site_on_every_site_route(env):
    _, auth, app, _ = env
    users(auth)
    c = client(app, "other", "other-password")
    assert [s["site"] for s in c.get("/api/sites").json()] == ["other-site"]
    site_routes = [r.path for r in app.routes
                   if "{site}" in getattr(r, "path", "") and r.path.startswith("/api/")]
    assert len(site_routes) >= 10
    for path in site_routes:
        url = (path.replace("{site}", "acme-site").replace("{gateway}", "gw1")
               .replace("{alarm}", "mw1-high"))
        for method in sorted(getattr(app.routes[[getattr(r, "path", "") for r in
                                                 app.routes].index(path)],
                                     "methods", {"GET"})):
            r = c.request(method, url + "?point=mw1.level_m", json={"comment": "x"})
            assert r.status_code == 403, (method, url, r.status_code)
    # Refused the same way whether or not the site exists: nothing leaks.
    assert c.get("/api/sites/no-such-site/points").status_code == 403
    assert c.get("/sites/acme-site").status_code == 403
    assert c.get("/api/sites/other-site/points").status_code == 200
    assert c.get("/api/audit?site=acme-site").status_code == 403


def test_regulator_sees_every_site_comments_but_does_not_acknowledge(env):
    _, auth, app, _ = env
    users(auth)
    c = client(app, "reg", "regulator-pw")
    assert len(c.get("/api/sites").json()) == 2
    assert c.get("/api/sites/acme-site/readings?point=mw1.level_m").status_code == 200
    r = c.post("/api/sites/acme-site/alarms/mw1-high/ack", json={"comment": "ok"})
    assert r.status_code == 403
    r = c.post("/api/sites/acme-site/alarms/mw1-high/comment",
               json={"comment": "asked for a resample"})
    assert r.status_code == 200 and r.json()["actor"] == "reg"


def test_acknowledge_is_stored_audited_and_listed(env):
    _, auth, app, _ = env
    users(auth)
    c = client(app, "acme", "acme-password")
    r = c.post("/api/sites/acme-site/alarms/mw1-high/ack",
               json={"comment": "pump stopped, well resampled"})
    assert r.status_code == 200, r.text
    acks = c.get("/api/sites/acme-site/acks").json()["acks"]
    assert [(a["kind"], a["actor"], a["comment"]) for a in acks] == [
        ("ack", "acme", "pump stopped, well resampled")]
    assert acks[0]["delivered_at"] is None
    entry = c.get("/api/audit?site=acme-site").json()["entries"][0]
    assert (entry["actor"], entry["action"], entry["site"]) == (
        "acme", "alarm.ack", "acme-site")
    assert entry["detail"]["comment"] == "pump stopped, well resampled"
    assert c.post("/api/sites/acme-site/alarms/nope/ack",
                  json={"comment": ""}).status_code == 404
    # A form post (what another site's page could send) is refused.
    assert c.post("/api/sites/acme-site/alarms/mw1-high/ack",
                  data={"comment": "x"}).status_code in (415, 422)


def test_sessions_expire_and_end_at_logout_or_disable(env):
    _, auth, app, clock = env
    users(auth)
    c = client(app, "acme", "acme-password")
    cookie = c.cookies.get(cloud_auth.SESSION_COOKIE)
    assert cookie
    clock.now += 3599
    assert c.get("/api/auth/me").json()["username"] == "acme"
    clock.now += 2
    assert c.get("/api/auth/me").status_code == 401
    c = client(app, "acme", "acme-password")
    c.post("/api/auth/logout")
    c.cookies.set(cloud_auth.SESSION_COOKIE, cookie)
    assert c.get("/api/auth/me").status_code == 401
    c = client(app, "acme", "acme-password")
    auth.set_disabled("acme")
    assert c.get("/api/auth/me").status_code == 401
    assert TestClient(app).post("/api/auth/login", json={
        "username": "acme", "password": "acme-password"}).status_code == 401
    assert TestClient(app).post("/api/auth/login", json={
        "username": "reg", "password": "wrong-one"}).status_code == 401


def test_tokens_for_machines_stored_hashed_and_revocable(env):
    store, auth, app, _ = env
    users(auth)
    token = auth.create_token("acme", "scada")
    c = TestClient(app)
    bearer = {"Authorization": f"Bearer {token}"}
    assert [s["site"] for s in c.get("/api/sites", headers=bearer).json()] == [
        "acme-site"]
    assert c.get("/api/sites/other-site/points", headers=bearer).status_code == 403
    raw = Path(store.path).read_bytes()
    for wal in Path(store.path).parent.glob("*-wal"):
        raw += wal.read_bytes()
    assert token.encode() not in raw and b"acme-password" not in raw
    conn = sqlite3.connect(store.path)
    hashes = [row[0] for row in conn.execute("SELECT password_hash FROM auth_users")]
    conn.close()
    assert all(h.startswith("$argon2id$") for h in hashes)
    token_id = auth.tokens("acme")[0]["id"]
    auth.revoke_token(token_id)
    assert c.get("/api/sites", headers=bearer).status_code == 401
    actions = [e["action"] for e in auth.audit_entries()]
    assert actions[:2] == ["token.revoke", "token.create"]
    assert actions.count("user.add") == 4


def test_layout_is_engineer_only_and_audited(env):
    _, auth, app, _ = env
    users(auth)
    layout = {"width": 100, "height": 60, "flow_deg": 135,
              "items": [{"device": "mw1", "kind": "well", "x": 20, "y": 30}]}
    acme = client(app, "acme", "acme-password")
    assert acme.put("/api/sites/acme-site/layout", json=layout).status_code == 403
    eng = client(app, "eng", "engineer-pw")
    r = eng.put("/api/sites/acme-site/layout", json=layout)
    assert r.status_code == 200 and r.json()["layout"]["flow_deg"] == 135
    bad = dict(layout, items=[{"device": "mw1", "kind": "well", "x": "a", "y": 1}])
    r = eng.put("/api/sites/acme-site/layout", json=bad)
    assert r.status_code == 422 and "layout.items[0].x" in r.json()["detail"]
    assert acme.get("/api/sites/acme-site/layout").json()["layout"]["updated_by"] == "eng"
    entries = auth.audit_entries(site="acme-site")
    assert [(e["actor"], e["action"]) for e in entries] == [("eng", "config.layout")]


def test_other_writes_through_the_api_are_audited(env):
    _, auth, app, _ = env
    users(auth)
    eng = client(app, "eng", "engineer-pw")
    r = eng.put("/api/sites/acme-site/groundwater/config",
                json={"wells": {"mw1": {"x": 0, "y": 0, "role": "source"}}})
    assert r.status_code == 200, r.text
    entry = auth.audit_entries(site="acme-site")[0]
    assert (entry["actor"], entry["action"], entry["detail"]["path"]) == (
        "eng", "api.put", "/api/sites/acme-site/groundwater/config")


def test_default_hash_is_argon2id_with_rfc9106_parameters(tmp_path):
    auth = AuthStore(tmp_path / "a.sqlite")
    auth.add_user("e", "long-enough", "enterprise", ["s"])
    conn = sqlite3.connect(tmp_path / "a.sqlite")
    (stored,) = conn.execute("SELECT password_hash FROM auth_users").fetchone()
    conn.close()
    # RFC 9106 section 4, second recommended option: t=3, m=64 MiB, p=4.
    assert stored.startswith("$argon2id$v=19$m=65536,t=3,p=4$")
    assert auth.login("e", "long-enough") is not None
    assert auth.login("e", "long-enougH") is None
    assert auth.login("nobody", "long-enough") is None
    auth.close()


def test_user_rules(tmp_path):
    auth = AuthStore(tmp_path / "a.sqlite", hasher=FAST)
    with pytest.raises(AuthError, match="regulator sees every site"):
        auth.add_user("r", "long-enough", "regulator", ["x"])
    with pytest.raises(AuthError, match="needs at least one"):
        auth.add_user("e", "long-enough", "enterprise")
    with pytest.raises(AuthError, match="not '\\*'"):
        auth.add_user("e", "long-enough", "enterprise", ["*"])
    with pytest.raises(AuthError, match="shorter"):
        auth.add_user("e", "short", "enterprise", ["s"])
    auth.add_user("e", "long-enough", "enterprise", ["s"])
    with pytest.raises(AuthError, match="exists"):
        auth.add_user("e", "long-enough", "enterprise", ["s"])
    auth.close()
    assert users_cli.ROLES == cloud_auth.ROLES


def test_series_buckets_hold_min_max_mean_of_good_readings_only():
    rows = []
    for i in range(1000):
        quality = "comm_lost" if i % 100 == 7 else "good"
        value = None if quality != "good" else math.sin(i / 50.0) * 10
        rows.append({"ts": f"2024-01-01T00:00:{0:02d}.000+00:00".replace(
            "00:00:00", f"{i // 3600:02d}:{i // 60 % 60:02d}:{i % 60:02d}"),
            "value": value, "quality": quality})
    out = decimate(rows, 100)
    assert not out["raw"] and out["total"] == 1000 and len(out["t"]) == 100
    # Equal spans over 999 s: bucket k holds the readings at seconds with
    # floor(s / 9.99) == k (the last one joins the last bucket).
    for k in (0, 37, 99):
        members = [i for i in range(1000) if min(int(i / 9.99), 99) == k]
        good = [math.sin(i / 50.0) * 10 for i in members if i % 100 != 7]
        assert out["min"][k] == pytest.approx(min(good))
        assert out["max"][k] == pytest.approx(max(good))
        assert out["mean"][k] == pytest.approx(sum(good) / len(good))
        assert out["count"][k] == len(good)
        assert out["not_good"][k] == len(members) - len(good)
    assert sum(out["count"]) == 990 and sum(out["not_good"]) == 10
    raw = decimate(rows[:50], 100)
    assert raw["raw"] and raw["mean"][7] is None and raw["not_good"][7] == 1
    assert raw["mean"][8] == pytest.approx(math.sin(8 / 50.0) * 10)


def test_series_and_csv_endpoints_agree_with_readings(env):
    _, auth, app, _ = env
    users(auth)
    c = client(app, "acme", "acme-password")
    readings = c.get("/api/sites/acme-site/readings?point=mw1.level_m").json()[
        "readings"]
    series = c.get("/api/sites/acme-site/series?point=mw1.level_m&max_points=10").json()
    assert series["total"] == len(readings) == 30 and len(series["t"]) == 10
    assert series["min"][0] == 0.0 and series["max"][-1] == 29.0
    text = c.get("/api/sites/acme-site/readings.csv?point=mw1.level_m").text
    rows = list(csv.DictReader(io.StringIO(text)))
    assert [(r["ts"], float(r["value"]), r["quality"]) for r in rows] == [
        (r["ts"], r["value"], r["quality"]) for r in readings]


def test_users_cli_add_list_token_disable(tmp_path, capsys, monkeypatch):
    db = str(tmp_path / "cloud.sqlite")
    monkeypatch.setenv("GW_TEST_PW", "a-password-1")
    assert main(["users", "add", "--db", db, "--username", "acme", "--role",
                 "enterprise", "--site", "acme-site", "--password-env",
                 "GW_TEST_PW"]) == 0
    assert main(["users", "add", "--db", db, "--username", "acme", "--role",
                 "enterprise", "--site", "x", "--password-env", "GW_TEST_PW"]) == 1
    assert main(["users", "token", "--db", db, "--username", "acme",
                 "--name", "scada"]) == 0
    token = capsys.readouterr().out.strip().splitlines()[-1]
    auth = AuthStore(db)
    principal = auth.token(token)
    assert principal is not None and principal.sites == frozenset({"acme-site"})
    assert main(["users", "disable", "--db", db, "--username", "acme"]) == 0
    assert auth.token(token) is None
    assert main(["users", "list", "--db", db]) == 0
    out = capsys.readouterr().out
    assert "acme" in out and "DISABLED" in out and "scada" in out
    assert [e["actor"].startswith("cli:") for e in auth.audit_entries()] == [True] * 3
    auth.close()
