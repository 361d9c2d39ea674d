"""The web app and its API: login, alarm acknowledgement, chart series, CSV, layouts."""

from __future__ import annotations

import csv
import io
import logging
from pathlib import Path
from typing import Any, Protocol
from collections.abc import Awaitable, Callable
from urllib.parse import quote, unquote

from fastapi import FastAPI, HTTPException, Query, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field

from cloud.auth import (
    PUBLIC_PATHS,
    SESSION_COOKIE,
    AuthStore,
    Principal,
    can_see,
    principal_of,
)
from cloud.operations import MAX_COMMENT_CHARS, OperationsStore
from cloud.series import DEFAULT_MAX_POINTS, MAX_MAX_POINTS, decimate
from cloud.store import normalise_ts

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).parent / "static"
MAX_SERIES_ROWS = 2_000_000
MAX_CSV_ROWS = 2_000_000
LANGS = ("en", "zh")


class ReadStore(Protocol):
    """What the web routes read from a cloud store (SQLite or PostgreSQL)."""

    def sites(self) -> list[str]: ...

    def site_exists(self, site: str) -> bool: ...

    def point_exists(self, site: str, point: str) -> bool: ...

    def readings(self, site: str, point: str, since: str | None = None,
                 until: str | None = None, limit: int = 10_000,
                 ) -> list[dict[str, Any]]: ...

    def events(self, site: str, event: str, limit: int = 1000,
               ) -> list[dict[str, Any]]: ...

    def active_alarms(self, site: str) -> list[str]: ...


class LoginBody(BaseModel):
    """A login form."""

    username: str = Field(max_length=200)
    password: str = Field(max_length=1000)


class CommentBody(BaseModel):
    """An acknowledgement's or a comment's text."""

    comment: str = Field("", max_length=MAX_COMMENT_CHARS)


def _ts(name: str, text: str | None) -> str | None:
    if text is None or text == "":
        return None
    try:
        return normalise_ts(text)
    except ValueError as exc:
        raise HTTPException(422, detail=f"{name}: {exc}") from None


def _lang(request: Request) -> str:
    """The page language: the gw_lang cookie, else the first of Accept-Language."""
    chosen = request.cookies.get("gw_lang")
    if chosen in LANGS:
        return chosen
    for part in request.headers.get("accept-language", "").split(","):
        tag = part.split(";")[0].strip().lower()
        if tag.startswith("zh"):
            return "zh"
        if tag.startswith("en"):
            return "en"
    return "en"


def _require_json(request: Request) -> None:
    # A cross-site form cannot send application/json without a CORS preflight, which
    # this API never grants: with SameSite=Lax that keeps a session cookie from being
    # used by another site's page.
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != "application/json":
        raise HTTPException(415, detail="send application/json")


def _principal(request: Request) -> Principal:
    principal = principal_of(request)
    if principal is None:  # the guard runs first; this is only a safety net
        raise HTTPException(401, detail="log in or send a bearer token")
    return principal


def install_web(app: FastAPI, store: ReadStore, auth: AuthStore,
                ops: OperationsStore | None = None) -> None:
    """Add the web pages and the login, ack, series, CSV, layout and audit routes."""
    ops = ops or OperationsStore(getattr(store, "path", ":memory:"))
    app.state.auth, app.state.ops = auth, ops
    shell = (STATIC_DIR / "app.html").read_text(encoding="utf-8")

    def require_point(site: str, point: str) -> None:
        if not store.site_exists(site):
            raise HTTPException(404, detail=f"unknown site {site!r}")
        if not store.point_exists(site, point):
            raise HTTPException(404, detail=f"site {site!r} has no point {point!r}")

    def page(request: Request, status: int = 200, error: str = "") -> HTMLResponse:
        html = shell.replace("{{lang}}", _lang(request)).replace("{{error}}", error)
        return HTMLResponse(html, status_code=status,
                            headers={"Cache-Control": "no-store"})

    # -- pages -----------------------------------------------------------------------

    def page_principal(request: Request) -> Principal | None:
        return auth.principal(request)

    @app.get("/", include_in_schema=False)
    def sites_page(request: Request) -> Response:
        if page_principal(request) is None:
            return RedirectResponse("/login?next=/", status_code=303)
        return page(request)

    @app.get("/login", include_in_schema=False)
    def login_page(request: Request) -> Response:
        return page(request)

    @app.get("/sites/{site}", include_in_schema=False)
    def site_page(request: Request, site: str) -> Response:
        principal = page_principal(request)
        if principal is None:
            return RedirectResponse(f"/login?next=/sites/{quote(site)}",
                                    status_code=303)
        if not principal.can_see(site):
            log.info("user %s refused the page of site=%s", principal.username, site)
            return page(request, 403, "forbidden")
        if not store.site_exists(site):
            return page(request, 404, "not_found")
        return page(request)

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    @app.middleware("http")
    async def audit_writes(
        request: Request, call_next: Callable[[Request], Awaitable[Response]],
    ) -> Response:
        # Every change through the API is audited: routes that write their own entry
        # (ack, comment, layout) mark the request; any other accepted write gets one
        # naming its method and path.
        response = await call_next(request)
        path = request.url.path
        state = request.scope.get("state", {})
        if (request.method in ("POST", "PUT", "PATCH", "DELETE")
                and path.startswith("/api/") and path not in PUBLIC_PATHS
                and response.status_code < 400 and not state.get("audited")):
            principal = state.get("principal")
            parts = path.split("/")
            site = unquote(parts[3]) if len(parts) > 3 and parts[2] == "sites" else None
            auth.audit(principal.username if principal else "anonymous",
                       f"api.{request.method.lower()}", site,
                       {"path": path, "status": response.status_code})
        return response

    # -- accounts --------------------------------------------------------------------

    @app.post("/api/auth/login")
    def login(body: LoginBody, request: Request, response: Response) -> dict[str, Any]:
        """Check a password; set an HttpOnly session cookie that expires."""
        _require_json(request)
        result = auth.login(body.username, body.password)
        if result is None:
            raise HTTPException(401, detail="wrong username or password")
        token, principal = result
        response.set_cookie(
            SESSION_COOKIE, token, max_age=int(auth.session_ttl_s), httponly=True,
            samesite="lax", secure=request.url.scheme == "https", path="/")
        return dict(principal.public(), expires_at=auth.session_expiry(token))

    @app.post("/api/auth/logout")
    def logout(request: Request, response: Response) -> dict[str, Any]:
        """End the session and clear its cookie."""
        token = request.cookies.get(SESSION_COOKIE)
        if token:
            auth.logout(token)
        response.delete_cookie(SESSION_COOKIE, path="/")
        return {"logged_out": True}

    @app.get("/api/auth/me")
    def me(request: Request) -> dict[str, Any]:
        """Who is logged in: username, role, sites, how (session, token, open)."""
        return _principal(request).public()

    @app.get("/api/audit")
    def audit(request: Request, site: str | None = None,
              limit: int = Query(200, ge=1, le=10_000)) -> dict[str, Any]:
        """Audit entries newest first: a site's, or all a caller may read.

        Entries about accounts (no site) are shown to regulators only.
        """
        principal = _principal(request)
        if site is not None:
            if not principal.can_see(site):
                raise HTTPException(403, detail=f"no access to site {site!r}")
            return {"entries": auth.audit_entries(site=site, limit=limit)}
        if principal.open or principal.role == "regulator":
            return {"entries": auth.audit_entries(limit=limit)}
        visible = [s for s in store.sites() if principal.can_see(s)]
        return {"entries": auth.audit_entries(sites=visible, limit=limit)}

    # -- alarms ----------------------------------------------------------------------

    def known_alarm(site: str, alarm: str) -> None:
        if not store.site_exists(site):
            raise HTTPException(404, detail=f"unknown site {site!r}")
        if alarm in store.active_alarms(site):
            return
        if not any(e["source"] == alarm
                   for e in store.events(site, "alarm", MAX_SERIES_ROWS)):
            raise HTTPException(404, detail=f"site {site!r} has no alarm {alarm!r}")

    def note(request: Request, site: str, alarm: str, kind: str,
             body: CommentBody) -> dict[str, Any]:
        _require_json(request)
        principal = _principal(request)
        if kind == "ack" and not principal.can_acknowledge:
            raise HTTPException(
                403, detail=f"a {principal.role} user may comment, not acknowledge")
        known_alarm(site, alarm)
        request.state.audited = True
        entry = ops.add(site, alarm, kind, principal.username, body.comment)
        entry["audit_id"] = auth.audit(
            principal.username, f"alarm.{kind}", site,
            {"alarm": alarm, "comment": entry["comment"], "ack_id": entry["id"]})
        log.info("alarm %s %s by %s site=%s", alarm,
                 "acknowledged" if kind == "ack" else "commented", principal.username,
                 site)
        return entry

    @app.post("/api/sites/{site}/alarms/{alarm}/ack")
    def ack_alarm(site: str, alarm: str, body: CommentBody,
                  request: Request) -> dict[str, Any]:
        """Acknowledge an alarm with a comment (enterprise and engineer users)."""
        return note(request, site, alarm, "ack", body)

    @app.post("/api/sites/{site}/alarms/{alarm}/comment")
    def comment_alarm(site: str, alarm: str, body: CommentBody,
                      request: Request) -> dict[str, Any]:
        """Comment on an alarm (any user who sees the site)."""
        return note(request, site, alarm, "comment", body)

    @app.get("/api/sites/{site}/acks")
    def acks(site: str, alarm: str | None = None,
             limit: int = Query(500, ge=1, le=10_000)) -> dict[str, Any]:
        """Acknowledgements and comments, newest first."""
        return {"site": site, "acks": ops.entries(site, alarm, limit)}

    # -- series and CSV --------------------------------------------------------------

    @app.get("/api/sites/{site}/series")
    def series(
        site: str,
        point: str = Query(..., description='point as "device.point"'),
        since: str | None = Query(None, description="ISO 8601, inclusive"),
        until: str | None = Query(None, description="ISO 8601, exclusive"),
        max_points: int = Query(DEFAULT_MAX_POINTS, ge=10, le=MAX_MAX_POINTS),
    ) -> dict[str, Any]:
        """A point's readings in at most max_points time buckets: min, max, mean."""
        since_ts, until_ts = _ts("since", since), _ts("until", until)
        if since_ts and until_ts and since_ts > until_ts:
            raise HTTPException(422, detail="since is after until")
        require_point(site, point)
        rows = store.readings(site, point, since_ts, until_ts, MAX_SERIES_ROWS)
        unit = rows[-1]["unit"] if rows else ""
        return {"site": site, "point": point, "unit": unit, "since": since_ts,
                "until": until_ts, "truncated": len(rows) == MAX_SERIES_ROWS,
                **decimate(rows, max_points)}

    @app.get("/api/sites/{site}/readings.csv")
    def readings_csv(
        site: str,
        point: str = Query(..., description='point as "device.point"'),
        since: str | None = Query(None, description="ISO 8601, inclusive"),
        until: str | None = Query(None, description="ISO 8601, exclusive"),
    ) -> Response:
        """A point's readings as CSV (ts, value, quality, unit, seq, gateway)."""
        since_ts, until_ts = _ts("since", since), _ts("until", until)
        require_point(site, point)
        rows = store.readings(site, point, since_ts, until_ts, MAX_CSV_ROWS)
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        columns = ("ts", "value", "quality", "unit", "seq", "gateway")
        writer.writerow(columns)
        for row in rows:
            writer.writerow(["" if row[c] is None else row[c] for c in columns])
        name = f"{site}_{point}.csv".replace('"', "")
        return Response(out.getvalue(), media_type="text/csv; charset=utf-8", headers={
            "Content-Disposition": f'attachment; filename="{name}"',
            "X-Truncated": str(len(rows) == MAX_CSV_ROWS).lower()})

    # -- layout (configuration) ------------------------------------------------------

    @app.get("/api/sites/{site}/layout")
    def layout(site: str) -> dict[str, Any]:
        """The site's plan: wells, tanks and cable runs, and the groundwater flow."""
        return {"site": site, "layout": ops.layout(site)}

    @app.put("/api/sites/{site}/layout")
    async def set_layout(site: str, request: Request) -> dict[str, Any]:
        """Replace the site's plan (engineer users); the change is audited."""
        _require_json(request)
        principal = _principal(request)
        if not principal.can_configure:
            raise HTTPException(403, detail="only an engineer changes a configuration")
        try:
            body = await request.json()
            ops.set_layout(site, body, principal.username)
        except ValueError as exc:
            raise HTTPException(422, detail=str(exc)) from None
        request.state.audited = True
        auth.audit(principal.username, "config.layout", site,
                   {"items": len(body.get("items", [])),
                    "flow_deg": body.get("flow_deg")})
        return {"site": site, "layout": ops.layout(site)}


__all__ = ["install_web", "can_see"]
