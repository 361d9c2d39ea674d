"""Acknowledgements both ways, maintenance, notifications and the operator page, with
the real gateway, cloud receiver, simulators and a private Mosquitto."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import urllib.error
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from edge.config import load_config
from hil_tests.harness import free_port, http_json, query, wait_for

pytestmark = pytest.mark.hil

SITE, GATEWAY, ALARM = "demo-site", "gw-demo", "trench-leak"


class Hook:
    """The test's own webhook server, standing in for a WeCom bot."""

    def __init__(self) -> None:
        self.texts: list[str] = []
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                hook.texts.append(body["text"]["content"])
                data = b'{"errcode":0,"errmsg":"ok"}'
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/cgi-bin/webhook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def coil(site, point):
    return site.sim.call(lambda: site.sim.sim.coil("relay1", point))


def sim(site, func):
    return site.sim.call(lambda: func(site.sim.sim))


def post(url, data: bytes, kind: str):
    req = urllib.request.Request(url, data=data, method="POST",
                                 headers={"Content-Type": kind})
    with urllib.request.urlopen(req, timeout=10) as resp:
        return resp.status, resp.read().decode()


def cloud_alarm(site):
    try:
        states = http_json(f"{site.api}/api/sites/{SITE}/alarms")["states"]
    except (urllib.error.URLError, OSError):  # the receiver is still starting
        return None
    return next((s for s in states if s["alarm"] == ALARM), None)


def gateway_events(site, state):
    return query(site.gateway_db, "SELECT message FROM events WHERE source=? AND "
                 "state=? ORDER BY seq", ALARM, state)


def test_acks_both_ways_maintenance_notifications_and_the_operator_page(site):
    page_port = free_port()
    text = site.config_path.read_text().replace(
        'clock_sync = "assume"\n',
        f'clock_sync = "assume"\nstatus_http = "127.0.0.1:{page_port}"\n'
        'ack_input = "relay1.input_1"\n', 1)
    site.config_path.write_text(text)
    site.cfg = load_config(site.config_path)
    hook = Hook()
    notify = site.workdir / "notify.toml"
    notify.write_text(f"""
[channels.wecom]
kind = "webhook"
url = "{hook.url}"
preset = "wecom"

[[rules]]
sites = ["{SITE}"]
alarms = ["{ALARM}"]
levels = [["wecom"], ["wecom"]]
escalate_after_s = 3
""")
    try:
        site.start_sim()
        site.start_cloud("--notify", str(notify))
        site.start_edge()
        wait_for(lambda: coil(site, "relay_8"), 15, f"gateway healthy\n{site.logs()}")

        # 1. A leak: the latched alarm sounds the horn, reaches the cloud, notifies,
        # and, unacknowledged, escalates after 3 s.
        sim(site, lambda s: s.trigger_leak("cable1", 12.0))
        wait_for(lambda: coil(site, "relay_1"), 5, "horn on the leak")
        wait_for(lambda: (cloud_alarm(site) or {}).get("state") == "raised", 20,
                 f"raised alarm in the cloud\n{site.logs()}")
        wait_for(lambda: hook.texts, 10, f"the alarm notification\n{site.logs()}")
        assert f"{SITE}/{GATEWAY} {ALARM} raised (critical)" in hook.texts[0]
        wait_for(lambda: len(hook.texts) >= 2, 15, "the escalation")
        assert "escalation 1: not acknowledged after 3 s" in hook.texts[1]

        # 2. The leak dries up; the horn holds (latched) until a cloud operator
        # acknowledges through the web app's endpoint: the command reaches the gateway,
        # the horn drops, and the gateway's event comes back to the cloud.
        sim(site, lambda s: s.set_value("cable1", "leak", 0.0))
        wait_for(lambda: (cloud_alarm(site) or {}).get("state") == "returned", 20,
                 "returned in the cloud")
        assert coil(site, "relay_1")
        status, body = post(f"{site.api}/api/sites/{SITE}/alarms/{ALARM}/ack",
                            json.dumps({"comment": "trench inspected"}).encode(),
                            "application/json")
        assert status == 200, body
        wait_for(lambda: not coil(site, "relay_1"), 15,
                 f"horn off after the cloud ack\n{site.logs()}")
        [(message,)] = gateway_events(site, "cleared")
        assert message.endswith("in the cloud: trench inspected")
        wait_for(lambda: (cloud_alarm(site) or {}).get("state") == "cleared", 20,
                 "the acknowledgement back in the cloud")
        assert cloud_alarm(site)["message"] == message
        acks = http_json(f"{site.api}/api/sites/{SITE}/acks")["acks"]
        wait_for(lambda: http_json(f"{site.api}/api/sites/{SITE}/acks")["acks"][0][
            "delivered_at"], 10, "the web ack marked delivered")
        assert acks[0]["comment"] == "trench inspected"
        raised_notices = len(hook.texts)

        # 3. Maintenance on cable1 from the cloud: its readings arrive flagged, and a
        # leak during maintenance raises nothing.
        done = subprocess.run(
            [sys.executable, "-m", "groundwatch", "command", "--db", str(site.cloud_db),
             "--site", SITE, "--gateway", GATEWAY, "--who", "carol", "--reason",
             "re-splicing", "maintenance", "cable1", "on"],
            capture_output=True, text=True, timeout=30, cwd=site.workdir)
        assert done.returncode == 0, done.stderr
        wait_for(lambda: any(p["point"] == "cable1.leak" and p["quality"] == "maintenance"
                             for p in http_json(f"{site.api}/api/sites/{SITE}/points")),
                 20, f"maintenance readings in the cloud\n{site.logs()}")
        sim(site, lambda s: s.clear_override("cable1", "leak"))  # wet again
        wait_for(lambda: query(site.gateway_db, "SELECT value FROM readings WHERE "
                               "device='cable1' AND point='leak' ORDER BY seq DESC "
                               "LIMIT 1") == [(1.0,)], 10, "the wet cable read")
        assert not coil(site, "relay_1")
        assert len(gateway_events(site, "raised")) == 1
        assert query(site.gateway_db, "SELECT state, message FROM events WHERE "
                     "event='maintenance'") == [("on", "by carol in the cloud: "
                                                       "re-splicing")]

        # 4. Out of maintenance the leak raises again; dried, the latch holds the horn
        # until someone presses the acknowledge button on the relay module.
        assert subprocess.run(
            [sys.executable, "-m", "groundwatch", "maintenance", "--config",
             str(site.config_path), "cable1", "off"], capture_output=True,
            timeout=30).returncode == 0
        wait_for(lambda: coil(site, "relay_1"), 10, f"horn on again\n{site.logs()}")
        sim(site, lambda s: s.set_value("cable1", "leak", 0.0))
        wait_for(lambda: gateway_events(site, "returned")[1:], 10, "returned again")
        assert coil(site, "relay_1")
        sim(site, lambda s: s.set_value("relay1", "input_1", True))
        wait_for(lambda: not coil(site, "relay_1"), 10, "horn off by the push button")
        sim(site, lambda s: s.set_value("relay1", "input_1", False))
        assert gateway_events(site, "cleared")[-1] == (
            "acknowledged by push button relay1.input_1",)
        wait_for(lambda: len(hook.texts) >= raised_notices + 1, 10,
                 "the second raise notified")

        # 5. The broker goes down; the operator page still shows the alarm and its
        # button acknowledges it. The event reaches the cloud once the broker is back.
        sim(site, lambda s: s.clear_override("cable1", "leak"))
        wait_for(lambda: coil(site, "relay_1"), 10, "horn on for the third leak")
        sim(site, lambda s: s.set_value("cable1", "leak", 0.0))
        wait_for(lambda: gateway_events(site, "returned")[2:], 10, "returned a third time")
        site.broker.stop()
        page = f"http://127.0.0.1:{page_port}"
        with urllib.request.urlopen(page + "/", timeout=10) as resp:
            html = resp.read().decode()
        assert ALARM in html and "确认 Acknowledge" in html and "未连接 not connected" in html
        status, html = post(page + "/ack", urllib.parse.urlencode({"alarm": ALARM})
                            .encode(), "application/x-www-form-urlencoded")
        assert status == 200 and "queued" in html  # followed the 303 back to the page
        wait_for(lambda: not coil(site, "relay_1"), 10, "horn off from the page")
        [(message,)] = gateway_events(site, "cleared")[-1:]
        assert message == "acknowledged by operator page (127.0.0.1)"
        site.broker.start()
        wait_for(lambda: (cloud_alarm(site) or {}).get("message") == message, 30,
                 f"the page's acknowledgement in the cloud\n{site.logs()}")
    finally:
        hook.close()
