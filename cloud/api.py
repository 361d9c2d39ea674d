"""The cloud's HTTP JSON API: sites, latest values, readings history, alarms."""

from __future__ import annotations

import logging
from datetime import datetime, timezone
from typing import Any

from fastapi import Depends, FastAPI, HTTPException, Query, Request

from cloud.auth import AuthStore, can_see, make_guard
from cloud.gw_api import install_groundwater
from cloud.gw_store import GroundwaterStore
from cloud.ingest import Ingestor
from cloud.leak_api import install_leak_tests
from cloud.operations import OperationsStore
from cloud.store import HEALTH_HISTORY, CloudStore, normalise_ts, parse_ts
from cloud.store_pg import PgStore
from cloud.web import install_web
from groundwatch import __version__

log = logging.getLogger(__name__)

DEFAULT_READINGS_LIMIT = 10_000
MAX_READINGS_LIMIT = 100_000
DEFAULT_EVENTS_LIMIT = 1_000


def _query_ts(name: str, text: str | None) -> str | None:
    """Normalise a time query parameter, or answer 422 naming it."""
    if text is None:
        return None
    try:
        return normalise_ts(text)
    except ValueError as exc:
        raise HTTPException(422, detail=f"{name}: {exc}") from None


def create_app(
    store: CloudStore | PgStore, ingestor: Ingestor | None = None,
    offline_after_s: float = 120.0,
    auth: AuthStore | None = None, ops: OperationsStore | None = None,
) -> FastAPI:
    """Build the API over a store; `ingestor` feeds /api/health when given."""
    # Accounts live beside a SQLite store's data; a login is asked once a user exists.
    auth = auth or AuthStore(getattr(store, "path", ":memory:"))
    app = FastAPI(title="groundwatch cloud", version=__version__,
                  dependencies=[Depends(make_guard(auth))])

    def require_site(site: str) -> None:
        if not store.site_exists(site):
            raise HTTPException(404, detail=f"unknown site {site!r}")

    def gateway_view(row: dict[str, Any], now: datetime,
                     health: dict[str, Any] | None) -> dict[str, Any]:
        # Online: something live (data, an "online" status, health) was heard within
        # offline_after_s, and not an "offline" status after it.
        last_seen, status_ts = row["last_seen"], row["status_ts"]
        recent = (
            last_seen is not None
            and (now - parse_ts(last_seen)).total_seconds() <= offline_after_s
        )
        said_offline = row["status"] == "offline" and (
            status_ts is None or last_seen is None
            or parse_ts(status_ts) >= parse_ts(last_seen))
        return {
            "gateway": row["gateway"],
            "online": recent and not said_offline,
            "last_seen": last_seen,
            "status": row["status"],
            "status_ts": status_ts,
            "health": health,
        }

    def health_summary(health: dict[str, Any] | None) -> dict[str, Any] | None:
        if health is None:
            return None
        devices = health.get("devices", {})
        return {
            "ts": health.get("ts"),
            "uptime_s": health.get("uptime_s"),
            "outbox_depth": health.get("outbox_depth"),
            "oldest_unsent_age_s": health.get("oldest_unsent_age_s"),
            "drops": health.get("drops"),
            "devices_offline": sorted(
                n for n, d in devices.items() if d.get("online") is False),
            "free_bytes": health.get("disk", {}).get("free_bytes"),
        }

    def site_gateways(site: str, summary: bool) -> list[dict[str, Any]]:
        now = datetime.now(timezone.utc)
        healths = store.latest_health(site)
        views = []
        for row in store.gateways(site):
            health = healths.get(row["gateway"])
            views.append(gateway_view(
                row, now, health_summary(health) if summary else health))
        return views

    @app.get("/api/health")
    def health() -> dict[str, Any]:
        """Liveness, version and the ingest counters."""
        return {
            "status": "ok",
            "version": __version__,
            "broker_connected": ingestor.connected if ingestor else None,
            "ingest": ingestor.counters() if ingestor else {},
        }

    @app.get("/api/sites")
    def sites(request: Request) -> list[dict[str, Any]]:
        """Every site the caller may see: gateways, liveness, newest data, alarms."""
        out = []
        for site in store.sites():
            if not can_see(request, site):
                continue
            gateways = site_gateways(site, summary=True)
            online = sum(1 for g in gateways if g["online"])
            out.append({"site": site, "gateways": gateways, "gateways_online": online,
                        "gateways_offline": len(gateways) - online,
                        **store.site_summary(site)})
        return out

    @app.get("/api/sites/{site}/gateways")
    def gateways(site: str) -> list[dict[str, Any]]:
        """The site's gateways: online or not, when last heard, their latest health."""
        require_site(site)
        return site_gateways(site, summary=False)

    @app.get("/api/sites/{site}/gateways/{gateway}/health")
    def gateway_health(
        site: str, gateway: str,
        limit: int = Query(100, ge=1, le=HEALTH_HISTORY),
    ) -> dict[str, Any]:
        """A gateway's recent health messages, newest first."""
        require_site(site)
        if gateway not in {row["gateway"] for row in store.gateways(site)}:
            raise HTTPException(404, detail=f"site {site!r} has no gateway {gateway!r}")
        return {"site": site, "gateway": gateway,
                "health": store.health_history(site, gateway, limit)}

    @app.get("/api/sites/{site}/points")
    def points(site: str) -> list[dict[str, Any]]:
        """The newest reading of every point of the site."""
        require_site(site)
        return store.latest_points(site)

    @app.get("/api/sites/{site}/readings")
    def readings(
        site: str,
        point: str = Query(..., description='point as "device.point"'),
        since: str | None = Query(None, description="ISO 8601, inclusive"),
        until: str | None = Query(None, description="ISO 8601, exclusive"),
        limit: int = Query(DEFAULT_READINGS_LIMIT, ge=1, le=MAX_READINGS_LIMIT),
    ) -> dict[str, Any]:
        """Readings of one point with since <= ts < until, oldest first."""
        since_ts, until_ts = _query_ts("since", since), _query_ts("until", until)
        if since_ts and until_ts and since_ts > until_ts:
            raise HTTPException(422, detail="since is after until")
        require_site(site)
        if not store.point_exists(site, point):
            raise HTTPException(404, detail=f"site {site!r} has no point {point!r}")
        rows = store.readings(site, point, since_ts, until_ts, limit)
        return {"site": site, "point": point, "readings": rows,
                "truncated": len(rows) == limit}

    @app.get("/api/sites/{site}/alarms")
    def alarms(
        site: str,
        limit: int = Query(DEFAULT_EVENTS_LIMIT, ge=1, le=MAX_READINGS_LIMIT),
    ) -> dict[str, Any]:
        """Active alarm names, alarm events and device events, newest first."""
        require_site(site)
        return {
            "site": site,
            "active": store.active_alarms(site),
            # Newest state of each alarm per gateway, acknowledged or not (the
            # command sender keeps it: cloud/commands.py).
            "states": (app.state.commands.alarm_states(site)
                       if hasattr(app.state, "commands") else []),
            "events": store.events(site, "alarm", limit),
            "device_events": store.events(site, "device", limit),
        }

    # Lab results and groundwater records live beside a SQLite store's data; beside
    # PostgreSQL, in the accounts' SQLite file (--auth-db, cloud-auth.sqlite).
    gw_path = getattr(store, "path", None) or auth.path
    install_groundwater(app, store, GroundwaterStore(gw_path))
    install_web(app, store, auth, ops)
    install_leak_tests(app, store, MAX_READINGS_LIMIT)
    return app
