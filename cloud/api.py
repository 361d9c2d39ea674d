"""The cloud's HTTP JSON API: sites, latest values, readings history, alarms."""

from __future__ import annotations

import logging
from datetime import datetime, timezone
from typing import Any

from fastapi import FastAPI, HTTPException, Query

from cloud.ingest import Ingestor
from cloud.store import CloudStore, normalise_ts, parse_ts
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
    store: CloudStore, ingestor: Ingestor | None = None, offline_after_s: float = 120.0,
) -> FastAPI:
    """Build the API over a store; `ingestor` feeds /api/health when given."""
    app = FastAPI(title="groundwatch cloud", version=__version__)

    def require_site(site: str) -> None:
        if not store.site_exists(site):
            raise HTTPException(404, detail=f"unknown site {site!r}")

    def gateway_view(row: dict[str, Any], now: datetime) -> dict[str, Any]:
        last_seen = row["last_seen"]
        recent = (
            last_seen is not None
            and (now - parse_ts(last_seen)).total_seconds() <= offline_after_s
        )
        return {
            "gateway": row["gateway"],
            "online": recent and row["status"] != "offline",
            "last_seen": last_seen,
            "status": row["status"],
            "status_ts": row["status_ts"],
        }

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
    def sites() -> list[dict[str, Any]]:
        """Every site: gateways and their liveness, newest data, points, alarms."""
        now = datetime.now(timezone.utc)
        out = []
        for site in store.sites():
            gateways = [gateway_view(row, now) for row in store.gateways(site)]
            out.append({"site": site, "gateways": gateways, **store.site_summary(site)})
        return out

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
            "events": store.events(site, "alarm", limit),
            "device_events": store.events(site, "device", limit),
        }

    return app
