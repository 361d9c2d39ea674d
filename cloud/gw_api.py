"""Groundwater routes of the cloud API: lab results, records, analysis, verdicts."""

from __future__ import annotations

import logging
from collections import defaultdict
from datetime import UTC, date, datetime
from typing import Any, Literal, Protocol

from fastapi import APIRouter, FastAPI, HTTPException, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, Field

from cloud import groundwater as gw
from cloud import selfmonitoring as sm
from cloud.gw_store import GroundwaterStore
from cloud.labdata import (
    LabDataError, LabResult, parse_date, parse_result, parse_results, parse_wells,
)
from cloud.store import normalise_ts

log = logging.getLogger(__name__)

MAX_SENSOR_READINGS = 100_000


class ReadingSource(Protocol):
    """What the analysis reads from the readings store (SQLite or PostgreSQL)."""

    def site_exists(self, site: str) -> bool: ...

    def readings(self, site: str, point: str, since: str | None = None,
                 until: str | None = None, limit: int = 10_000) -> list[dict[str, Any]]:
        ...

    def active_alarms(self, site: str) -> list[str]: ...


class QuickScreen(BaseModel):
    """A logged quick-screen result (PID on a leak tube, XRF on soil, a test kit)."""

    ts: str
    location: str = Field(min_length=1)
    kind: str = Field(min_length=1)
    value: float | None = None
    unit: str = ""
    threshold: float | None = None
    abnormal: bool | None = None
    note: str = ""


class Incident(BaseModel):
    """A logged incident: a spill, a leak found in an inspection, a complaint."""

    ts: str
    kind: str = Field(min_length=1)
    title: str = Field(min_length=1)
    severity: Literal["minor", "major"] = "minor"
    note: str = ""


def _ts(text: str) -> str:
    try:
        return normalise_ts(text)
    except ValueError as exc:
        raise HTTPException(422, detail=f"ts: {exc}") from None


def _json_results(items: Any) -> list[LabResult]:
    if not isinstance(items, list):
        raise LabDataError("results: not a list")
    out = []
    for i, item in enumerate(items):
        where = f"results[{i}]"
        try:
            parsed = parse_result(str(item.get("result", "")))
            if parsed is None:
                continue
            sampled = parse_date(str(item["date"]))
            well, constituent = str(item["well"]), str(item["constituent"])
        except (KeyError, AttributeError, ValueError) as exc:
            raise LabDataError(f"{where}: {exc}") from None
        value, censored = parsed
        out.append(LabResult(well, constituent, sampled, value, censored,
                             value if censored else None, str(item.get("unit", "")),
                             str(item.get("flags", ""))))
    return out


def sensor_results(store: ReadingSource, site: str,
                   sensors: dict[str, Any]) -> list[LabResult]:
    """Daily means of good gateway readings of the points mapped to wells."""
    out = []
    for point, target in sensors.items():
        by_day: dict[Any, list[float]] = defaultdict(list)
        unit = str(target.get("unit", ""))
        for row in store.readings(site, point, limit=MAX_SENSOR_READINGS):
            if row["quality"] != "good" or row["value"] is None:
                continue
            by_day[datetime.fromisoformat(row["ts"]).date()].append(row["value"])
            unit = unit or row["unit"]
        for day, values in sorted(by_day.items()):
            out.append(LabResult(str(target["well"]), str(target["constituent"]), day,
                                 sum(values) / len(values), False, None, unit,
                                 "sensor daily mean"))
    return out


def install_groundwater(app: FastAPI, store: ReadingSource,
                        gws: GroundwaterStore) -> None:
    """Add the groundwater routes to the app."""
    router = APIRouter(prefix="/api/sites/{site}")

    def require(site: str) -> None:
        if not gws.known(site) and not store.site_exists(site):
            raise HTTPException(404, detail=f"unknown site {site!r}")

    def config_of(site: str) -> tuple[dict[str, Any], gw.SiteConfig]:
        body = gws.config(site) or {}
        try:
            return body, gw.SiteConfig.from_json(body)
        except (KeyError, TypeError, ValueError) as exc:
            raise HTTPException(409, detail=f"stored configuration: {exc}") from None

    def analysis(site: str) -> dict[str, Any]:
        require(site)
        body, cfg = config_of(site)
        results = gws.results(site)
        if body.get("sensors"):
            results += sensor_results(store, site, body["sensors"])
        alarms = store.active_alarms(site) if store.site_exists(site) else []
        out = gw.analyse_site(results, cfg, gws.quick_screens(site),
                              gws.incidents(site), alarms)
        return gw.finite({"site": site, **out})

    @router.put("/groundwater/config")
    async def put_config(site: str, request: Request) -> dict[str, Any]:
        """Wells (x, y, role), facilities (x, y, kind), sensors and verdict rules."""
        body = await request.json()
        if not isinstance(body, dict):
            raise HTTPException(422, detail="body: not a JSON object")
        try:
            cfg = gw.SiteConfig.from_json(body)
            for point, target in (body.get("sensors") or {}).items():
                if not {"well", "constituent"} <= set(target):
                    raise ValueError(f"sensors.{point}: needs well and constituent")
            sm.check_config(body)
        except (KeyError, TypeError, ValueError) as exc:
            raise HTTPException(422, detail=str(exc)) from None
        gws.set_config(site, body)
        log.info("groundwater config stored site=%s wells=%d facilities=%d", site,
                 len(cfg.wells), len(cfg.facilities))
        return {"site": site, "wells": len(cfg.wells),
                "facilities": len(cfg.facilities)}

    @router.get("/groundwater/config")
    def get_config(site: str) -> dict[str, Any]:
        """The site's groundwater configuration."""
        require(site)
        return gws.config(site) or {}

    @router.post("/wells")
    async def post_wells(site: str, request: Request) -> dict[str, Any]:
        """Well coordinates as CSV (well, x, y; GWSDAT WellCoords layout too)."""
        try:
            wells = parse_wells((await request.body()).decode("utf-8-sig"))
        except (LabDataError, UnicodeDecodeError) as exc:
            raise HTTPException(422, detail=str(exc)) from None
        body = gws.config(site) or {}
        known = body.setdefault("wells", {})
        for w in wells:
            known.setdefault(w.well, {"role": "other"}).update(x=w.x, y=w.y)
        gws.set_config(site, body)
        return {"site": site, "wells": len(wells)}

    @router.post("/lab-results")
    async def post_results(site: str, request: Request) -> dict[str, Any]:
        """Lab results as CSV (text/csv) or JSON {"results": [...]}; ND<x kept."""
        raw = await request.body()
        try:
            if request.headers.get("content-type", "").startswith("application/json"):
                results = _json_results((await request.json()).get("results"))
            else:
                results = parse_results(raw.decode("utf-8-sig"))
        except (LabDataError, UnicodeDecodeError, AttributeError) as exc:
            raise HTTPException(422, detail=str(exc)) from None
        new, replaced = gws.add_results(site, results)
        log.info("lab results stored site=%s new=%d replaced=%d", site, new, replaced)
        return {"site": site, "stored": len(results), "new": new, "replaced": replaced,
                "non_detects": sum(r.censored for r in results)}

    @router.get("/lab-results")
    def get_results(site: str, well: str | None = None,
                    constituent: str | None = None) -> dict[str, Any]:
        """Stored results, optionally of one well and constituent."""
        require(site)
        rows = [r.to_json() for r in gws.results(site)
                if (well is None or r.well == well)
                and (constituent is None or r.constituent == constituent)]
        return {"site": site, "results": rows}

    @router.post("/quick-screens")
    def post_quick_screen(site: str, rec: QuickScreen) -> dict[str, Any]:
        """Log a quick-screen result; abnormal defaults to value > threshold."""
        data = rec.model_dump()
        data["ts"] = _ts(rec.ts)
        if data["abnormal"] is None:
            data["abnormal"] = bool(rec.value is not None and rec.threshold is not None
                                    and rec.value > rec.threshold)
        return {"site": site, "id": gws.add_quick_screen(site, data), **data}

    @router.get("/quick-screens")
    def get_quick_screens(site: str) -> dict[str, Any]:
        """Logged quick-screen results, newest first."""
        require(site)
        return {"site": site, "quick_screens": gws.quick_screens(site)}

    @router.post("/incidents")
    def post_incident(site: str, rec: Incident) -> dict[str, Any]:
        """Log an incident."""
        data = rec.model_dump()
        data["ts"] = _ts(rec.ts)
        return {"site": site, "id": gws.add_incident(site, data), **data}

    @router.get("/incidents")
    def get_incidents(site: str) -> dict[str, Any]:
        """Logged incidents, newest first."""
        require(site)
        return {"site": site, "incidents": gws.incidents(site)}

    @router.get("/groundwater")
    def get_analysis(site: str) -> dict[str, Any]:
        """Everything: per-series trends and states, flow, sources, verdicts, risk."""
        return analysis(site)

    @router.get("/groundwater/trends")
    def get_trends(site: str) -> dict[str, Any]:
        """Per well and constituent: trend class, Sen slope, class, chart state."""
        out = analysis(site)
        return {"site": site, "series": out["series"]}

    @router.get("/groundwater/flow")
    def get_flow(site: str) -> dict[str, Any]:
        """Flow direction and gradient, latest event and every event with heads."""
        out = analysis(site)
        return {"site": site, "flow": out["flow"],
                "flow_by_event": out["flow_by_event"],
                "candidate_sources": out["candidate_sources"]}

    @router.get("/groundwater/verdicts")
    def get_verdicts(site: str) -> dict[str, Any]:
        """Effect-evaluation verdicts per well and site, and the site risk status."""
        out = analysis(site)
        return {"site": site, "verdicts": out["verdicts"], "risk": out["risk"]}

    @router.get("/self-monitoring")
    def get_self_monitoring(site: str, as_of: str | None = None) -> dict[str, Any]:
        """HJ 1209 schedule: each object's last sampling, due date, whether overdue."""
        require(site)
        try:
            today = date.fromisoformat(as_of) if as_of else datetime.now(UTC).date()
            out = sm.schedule(gws.config(site) or {}, gws.results(site), today)
        except ValueError as exc:
            raise HTTPException(422 if as_of else 409, detail=str(exc)) from None
        return {"site": site, **out}

    @router.get("/self-monitoring/summary", response_model=None)
    def get_self_monitoring_summary(
        site: str, year: int = Query(ge=1900, le=9999),
        format: Literal["json", "csv"] = "json",
    ) -> dict[str, Any] | Response:
        """The year's results per location and constituent against the standards."""
        require(site)
        try:
            out = sm.yearly_summary(gws.config(site) or {}, gws.results(site), year)
        except ValueError as exc:
            raise HTTPException(409, detail=str(exc)) from None
        if format == "csv":
            return Response(sm.summary_csv(site, out),
                            media_type="text/csv; charset=utf-8",
                            headers={"Content-Disposition": f'attachment; filename='
                                     f'"{site}_self_monitoring_{year}.csv"'})
        return gw.finite({"site": site, **out})

    app.include_router(router)
