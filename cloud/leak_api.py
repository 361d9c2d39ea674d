"""GET /api/sites/{site}/leak-tests: the tanks' static-test verdicts, from the
gateways' leak_test events (edge/tank_monitor.py)."""

from __future__ import annotations

from typing import Any, Protocol

from fastapi import FastAPI, HTTPException, Query

from leak_detection.static_test import parse_leak_test_message


class EventSource(Protocol):
    def site_exists(self, site: str) -> bool: ...

    def events(self, site: str, event: str,
               limit: int = 1000) -> list[dict[str, Any]]: ...


def leak_tests(store: EventSource, site: str, limit: int = 1000,
               tank: str | None = None) -> list[dict[str, Any]]:
    """Verdicts newest first: tank, verdict, rate and bounds (gal/h), test window."""
    out = []
    for row in store.events(site, "leak_test", limit):
        if tank is not None and row["source"] != tank:
            continue
        fields = parse_leak_test_message(row["message"] or "")
        out.append({
            "ts": row["ts"], "gateway": row["gateway"], "seq": row["seq"],
            "tank": row["source"], "point": row["point"], "verdict": row["state"],
            "rate_gph": row["value"], "lower_gph": fields["lower_gph"],
            "upper_gph": fields["upper_gph"], "threshold_gph": fields["threshold_gph"],
            "target_gph": fields["target_gph"], "window_h": fields["window_h"],
            "window_start": fields["start"], "window_end": fields["end"],
            "reason": fields["reason"],
        })
    return out


def install_leak_tests(app: FastAPI, store: EventSource, max_limit: int = 100_000
                       ) -> None:
    """Add the leak-test route to the app."""

    @app.get("/api/sites/{site}/leak-tests")
    def leak_test_results(
        site: str, tank: str | None = None,
        limit: int = Query(1000, ge=1, le=max_limit),
    ) -> dict[str, Any]:
        """Static leak-test verdicts of the site's tanks, newest first."""
        if not store.site_exists(site):
            raise HTTPException(404, detail=f"unknown site {site!r}")
        return {"site": site, "leak_tests": leak_tests(store, site, limit, tank)}
