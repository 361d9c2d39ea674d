"""The web app in a real browser (Debian's Chromium, driven by Playwright) against a
real `groundwatch cloud` holding the demo site's data from the real gateway."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from edge.config import load_config
from groundwatch.demo import DEMO_LAYOUT, write_site
from hil_tests.conftest import Site
from hil_tests.harness import PrivateMosquitto, free_port, wait_for

pytestmark = pytest.mark.hil

CHROMIUM = "/usr/bin/chromium"
# No browser download: Playwright drives the distribution's Chromium.
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
ARTIFACTS = Path(__file__).resolve().parents[1] / "hil_artifacts" / "browser"
PASSWORD = "browser-test-pw"
POINT = "mw1.conductivity_us_cm"
# uPlot's stroke of the mean line in app.js (#1f6fa8).
MEAN_RGB = (31, 111, 168)


def launch(playwright: Any) -> Any:
    if not os.path.exists(CHROMIUM):
        pytest.fail(f"{CHROMIUM} is missing: apt-get install chromium")
    return playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)


def users_cli(db: Path, *args: str) -> str:
    proc = subprocess.run(
        [sys.executable, "-m", "groundwatch", "users", *args, "--db", str(db)],
        capture_output=True, text=True, timeout=60,
        env=dict(os.environ, GW_BROWSER_PW=PASSWORD))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def api(site: Site, token: str, path: str) -> Any:
    request = urllib.request.Request(f"{site.api}{path}",
                                     headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=10) as resp:
        return json.load(resp)


@pytest.fixture
def running(tmp_path: Path) -> Iterator[tuple[Site, str]]:
    """The demo site run until the leak alarm and some well data reached the cloud;
    then the gateway stops, so the cloud's data hold still for the comparisons."""
    broker = PrivateMosquitto(tmp_path / "broker")
    broker.start()
    config_path = write_site(tmp_path, broker.port, leak_at_s=3)
    site = Site(tmp_path, config_path, load_config(config_path), broker, free_port(),
                tmp_path / "cloud.sqlite", {})
    db = site.cloud_db
    users_cli(db, "add", "--username", "acme", "--role", "enterprise", "--site",
              "demo-site", "--password-env", "GW_BROWSER_PW")
    users_cli(db, "add", "--username", "other", "--role", "enterprise", "--site",
              "other-site", "--password-env", "GW_BROWSER_PW")
    users_cli(db, "add", "--username", "reg", "--role", "regulator",
              "--password-env", "GW_BROWSER_PW")
    token = users_cli(db, "token", "--username", "reg", "--name", "test").split()[-1]
    from cloud.operations import OperationsStore

    ops = OperationsStore(db)
    ops.set_layout("demo-site", DEMO_LAYOUT, "test")
    ops.close()
    try:
        site.start_cloud()
        site.start_sim()
        site.start_edge()
        def active() -> list[str]:
            try:
                return api(site, token, "/api/sites/demo-site/alarms")["active"]
            except (urllib.error.URLError, OSError):  # not listening yet, or no site
                return []

        wait_for(lambda: "trench-leak" in active(), 60,
                 "the trench-leak alarm in the cloud")
        wait_for(lambda: len(api(site, token, f"/api/sites/demo-site/readings?point="
                                 f"{POINT}")["readings"]) >= 20, 60, "20 mw1 readings")
        site.procs["edge"].stop()
        yield site, token
    finally:
        for proc in site.procs.values():
            proc.stop()
        if site.sim is not None:
            site.sim.close()
        broker.stop()


def shot(page: Any, tmp_path: Path, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    for folder in (tmp_path, ARTIFACTS):
        page.screenshot(path=str(folder / f"{name}.png"), full_page=True)


def login(page: Any, base: str, username: str) -> None:
    page.goto(f"{base}/")
    assert page.url.startswith(f"{base}/login")
    page.fill("#username", username)
    page.fill("#password", PASSWORD)
    page.click("#login-submit")


def test_browser_login_site_chart_ack_csv_and_refusal(running, tmp_path: Path):
    from playwright.sync_api import sync_playwright

    site, token = running
    base = site.api
    readings = api(site, token, f"/api/sites/demo-site/readings?point={POINT}")[
        "readings"]
    good = [r for r in readings if r["quality"] == "good" and r["value"] is not None]
    assert good
    errors: list[str] = []
    with sync_playwright() as p:
        browser = launch(p)
        try:
            ctx = browser.new_context(viewport={"width": 1400, "height": 1000},
                                      accept_downloads=True, locale="en-GB")
            page = ctx.new_page()
            page.on("pageerror", lambda e: errors.append(str(e)))
            # Log in; the enterprise sees its own site only.
            login(page, base, "acme")
            page.wait_for_selector("#sites")
            assert page.locator("#sites tbody tr").evaluate_all(
                "rows => rows.map(r => r.dataset.site)") == ["demo-site"]
            assert page.locator("#who").inner_text() == "acme (enterprise)"
            shot(page, tmp_path, "1-sites")
            # Open the site: plan, latest values, and a chart of real points.
            page.click("#sites a:text('demo-site')")
            page.wait_for_selector("#chart[data-rendered=true]", timeout=20_000)
            assert page.locator("#plan svg g[data-device]").count() == len(
                DEMO_LAYOUT["items"])
            assert page.locator("#flow-arrow").get_attribute("data-deg") == "135"
            assert page.locator(f"#latest tr[data-point='{POINT}']").count() == 1
            chart = page.locator("#chart")
            assert chart.get_attribute("data-raw") == "true"
            assert int(chart.get_attribute("data-total")) == len(readings)
            assert int(chart.get_attribute("data-plotted")) == len(good)
            # The canvas has the mean line drawn: pixels of its stroke colour.
            drawn = page.evaluate("""([r, g, b]) => {
                const c = document.querySelector('#chart canvas');
                const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
                let n = 0;
                for (let i = 0; i < d.length; i += 4) {
                  if (Math.abs(d[i] - r) < 30 && Math.abs(d[i + 1] - g) < 30
                      && Math.abs(d[i + 2] - b) < 30 && d[i + 3] > 128) n++;
                }
                return n; }""", list(MEAN_RGB))
            assert drawn > 200, drawn
            shot(page, tmp_path, "2-site")
            # Acknowledge the leak alarm with a comment.
            comment = "trench inspected, cable section replaced"
            item = page.locator("#active-alarms li[data-alarm='trench-leak']")
            item.locator("textarea").fill(comment)
            item.locator("button.ack-button").click()
            page.wait_for_selector(f"#acks td:text('{comment}')")
            acks = api(site, token, "/api/sites/demo-site/acks")["acks"]
            assert [(a["kind"], a["alarm"], a["actor"], a["comment"]) for a in acks] == [
                ("ack", "trench-leak", "acme", comment)]
            audit = api(site, token, "/api/audit?site=demo-site")["entries"]
            assert (audit[0]["actor"], audit[0]["action"], audit[0]["detail"]["comment"]
                    ) == ("acme", "alarm.ack", comment)
            shot(page, tmp_path, "3-acknowledged")
            # Export CSV: the rows are the API's readings.
            with page.expect_download() as info:
                page.click("#export-csv")
            path = info.value.path()
            with open(path, newline="", encoding="utf-8") as f:
                rows = list(csv.DictReader(f))
            assert [(r["ts"], float(r["value"]) if r["value"] else None, r["quality"])
                    for r in rows] == [(r["ts"], r["value"], r["quality"])
                                       for r in readings]
            # The same page in Chinese.
            page.click("#lang")
            page.wait_for_selector("#trend h2:has-text('趋势')")
            page.wait_for_selector("#chart[data-rendered=true]")
            assert page.locator("#acks td:text('已确认')").count() == 1
            shot(page, tmp_path, "4-site-zh")
            ctx.close()
            # Another enterprise is refused the site, on the page and through the API.
            ctx = browser.new_context(viewport={"width": 1200, "height": 700})
            page = ctx.new_page()
            login(page, base, "other")
            page.wait_for_selector("#sites, p.muted")
            assert page.locator("#sites tbody tr").count() == 0
            response = page.goto(f"{base}/sites/demo-site")
            assert response.status == 403
            page.wait_for_selector("#refused[data-error=forbidden]")
            shot(page, tmp_path, "5-forbidden")
            for path in ("/api/sites/demo-site/points",
                         f"/api/sites/demo-site/readings?point={POINT}",
                         f"/api/sites/demo-site/readings.csv?point={POINT}",
                         f"/api/sites/demo-site/series?point={POINT}",
                         "/api/sites/demo-site/alarms"):
                assert page.request.get(f"{base}{path}").status == 403, path
            r = page.request.post(f"{base}/api/sites/demo-site/alarms/trench-leak/ack",
                                  data=json.dumps({"comment": "x"}),
                                  headers={"Content-Type": "application/json"})
            assert r.status == 403
            assert [s["site"] for s in page.request.get(f"{base}/api/sites").json()] == []
            ctx.close()
        finally:
            browser.close()
    assert errors == []
