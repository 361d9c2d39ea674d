"""Web app benchmark of issue 7: a year of 15-minute data for one point, in a browser.

Run from the repository root: ``.venv/bin/python -m bench.web`` (about a minute) or
``--quick``. It fills a cloud database with 35,040 readings (365 days x 96), runs a
real ``groundwatch cloud`` process over it, times the decimated series endpoint, and
times page load to chart rendered in headless Debian Chromium (the page's
``chart-rendered`` performance mark, from navigation start). Target: under 1 s.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
SITE, POINT = "bench-site", "mw1.level_m"
READINGS = 365 * 96
TARGET_S = 1.0
PASSWORD = "bench-password"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]


def year_of_readings(n: int = READINGS) -> list[dict[str, Any]]:
    """A well level every 15 minutes: a seasonal swing, a daily tide, noise-free."""
    start = datetime(2025, 1, 1, tzinfo=timezone.utc)
    out = []
    for i in range(n):
        day = i / 96
        level = (3.5 + 0.6 * math.sin(2 * math.pi * day / 365)
                 + 0.05 * math.sin(2 * math.pi * day))
        quality = "comm_lost" if i % 5000 == 4999 else "good"
        out.append({"seq": i + 1, "kind": "reading",
                    "ts": (start + timedelta(minutes=15 * i)).isoformat(),
                    "device": "mw1", "point": "level_m",
                    "value": None if quality != "good" else round(level, 4),
                    "quality": quality, "unit": "m"})
    return out


def fill_db(db: Path, n: int = READINGS) -> None:
    """Store a year of one point through the cloud store's batch path."""
    from cloud.store import CloudStore

    store = CloudStore(db)
    rows = year_of_readings(n)
    for i in range(0, len(rows), 5000):
        store.store_batch(SITE, "gw-bench", rows[i:i + 5000], historical=True)
    store.close()


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get(url: str, token: str) -> tuple[float, Any]:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    t0 = time.perf_counter()
    with urllib.request.urlopen(request, timeout=30) as resp:
        body = resp.read()
    return time.perf_counter() - t0, json.loads(body)


def run(quick: bool, workdir: Path) -> int:
    from cloud.auth import AuthStore

    db = workdir / "cloud.sqlite"
    t0 = time.perf_counter()
    fill_db(db)
    fill_s = time.perf_counter() - t0
    auth = AuthStore(db)
    auth.add_user("bench", PASSWORD, "regulator", actor="bench")
    token = auth.create_token("bench", "bench", actor="bench")
    auth.close()
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    log = (workdir / "cloud.log").open("ab")
    cloud = subprocess.Popen(
        [sys.executable, "-m", "groundwatch", "cloud", "--db", str(db), "--http-port",
         str(port), "--broker", f"mqtt://127.0.0.1:{_free_port()}"],
        stdout=log, stderr=subprocess.STDOUT, cwd=workdir)
    figures: list[tuple[str, str, str, str]] = []
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                _get(f"{base}/api/health", token)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        runs = 3 if quick else 10
        url = f"{base}/api/sites/{SITE}/series?point={POINT}&max_points=2000"
        times, body = [], None
        for _ in range(runs + 1):
            elapsed, body = _get(url, token)
            times.append(elapsed)
        assert body is not None and body["total"] == READINGS
        figures.append(("readings in the range", str(body["total"]), "35,040", ""))
        figures.append(("buckets returned (min/max/mean each)", str(len(body["t"])),
                        "<= 2000", ""))
        warm = times[1:]
        figures.append(("series endpoint, median of warm runs",
                        f"{statistics.median(warm) * 1000:.0f} ms", "",
                        f"max {max(warm) * 1000:.0f} ms, first {times[0] * 1000:.0f} ms"))
        elapsed, raw = _get(f"{base}/api/sites/{SITE}/readings?point={POINT}"
                            "&limit=100000", token)
        figures.append(("plain /readings of the year (for comparison)",
                        f"{elapsed * 1000:.0f} ms", "", f"{len(raw['readings'])} rows"))
        loads = page_loads(base, 2 if quick else 6)
        figures.append(("page load to chart rendered, median",
                        f"{statistics.median(loads[1:]) * 1000:.0f} ms",
                        f"< {TARGET_S * 1000:.0f} ms",
                        "PASS" if statistics.median(loads[1:]) < TARGET_S else "FAIL"))
        figures.append(("page load to chart rendered, worst / first (cold)",
                        f"{max(loads[1:]) * 1000:.0f} ms / {loads[0] * 1000:.0f} ms",
                        f"< {TARGET_S * 1000:.0f} ms",
                        "PASS" if max(loads) < TARGET_S else "FAIL"))
    finally:
        cloud.terminate()
        cloud.wait(15)
        log.close()
    print(f"bench.web{' --quick' if quick else ''}: {os.cpu_count()} cores, "
          f"{READINGS} readings stored in {fill_s:.1f} s")
    print("| figure | value | target | result |")
    print("|---|---|---|---|")
    for row in figures:
        print("| " + " | ".join(row) + " |")
    return 0 if all(r[3] != "FAIL" for r in figures) else 1


def page_loads(base: str, runs: int) -> list[float]:
    """Seconds from navigation start to the chart's first draw, per page load."""
    from playwright.sync_api import sync_playwright

    out = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium",
                                    args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(f"{base}/login")
            page.fill("#username", "bench")
            page.fill("#password", PASSWORD)
            page.click("#login-submit")
            page.wait_for_selector("#sites")
            for _ in range(runs + 1):
                page.goto(f"{base}/sites/{SITE}?point={POINT}&range=all")
                page.wait_for_selector("#chart[data-rendered=true]", timeout=30_000)
                mark = page.evaluate(
                    "performance.getEntriesByName('chart-rendered')[0].startTime")
                plotted = int(page.get_attribute("#chart", "data-plotted") or 0)
                assert plotted > 100, plotted
                out.append(mark / 1000)
            page.screenshot(path=str(Path(tempfile.gettempdir()) / "bench-web.png"))
        finally:
            browser.close()
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.web", description=__doc__.splitlines()[0],
        epilog="example: python -m bench.web --quick")
    parser.add_argument("--quick", action="store_true", help="fewer runs")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-web-") as work:
        return run(args.quick, Path(work))


if __name__ == "__main__":
    sys.exit(main())
