"""The gateway's local operator page: health, latest values, alarms, acknowledgement.

Served by the gateway process itself from the standard library's HTTP server in a
thread (no framework: the gateway's memory stays small), with no external assets, so
it works on the plant LAN with no internet. Every request reads the gateway's state on
its event loop, which owns the store; the page never touches the database itself.
"""

from __future__ import annotations

import asyncio
import html
import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, quote

from edge.store import utc_now_iso

if TYPE_CHECKING:
    from edge.gateway import Gateway

log = logging.getLogger(__name__)

LOOP_TIMEOUT_S = 5.0
MAX_BODY_BYTES = 4096
REFRESH_S = 5


def snapshot(gw: Gateway) -> dict[str, Any]:
    """What the page shows, read from the gateway (call on its event loop)."""
    now = gw.clock()
    devices = []
    for name, dev in gw.devices.items():
        devices.append({
            "device": name, "online": dev.online, "error_rate": dev.error_rate(now),
            "polls": dev.polls + dev.failures, "failures": dev.failures,
            "last_good_poll": dev.last_good_poll, "last_poll": dev.last_poll,
            "maintenance": name in gw.maintenance,
            "values": [{"point": p, "value": v, "quality": q,
                        "unit": dev.map.points[p].unit if p in dev.map.points else ""}
                       for p, (v, q) in dev.latest.items()],
        })
    alarms = [{"alarm": r.cfg.name, "point": r.cfg.point, "severity": r.cfg.severity,
               "active": r.active, "latched": r.state.latched, "since": r.state.since,
               "value": r.state.value, "message": r.cfg.message,
               "maintenance": gw.in_maintenance(r.device, r.point)}
              for r in gw.rules]
    return {
        "site": gw.cfg.site.id, "gateway": gw.cfg.gateway.id, "ts": utc_now_iso(),
        "uplink_connected": gw.uplink.connected,
        "outbox_depth": gw.store.outbox_depth(),
        "devices": devices,
        "alarms": alarms,
        "maintenance": [{"target": m.target, "who": m.who, "reason": m.reason,
                         "since": m.since, "until": m.until}
                        for m in gw.maintenance.values()],
        "relays": {name: gw.relay_state.get(name) for name in gw.cfg.relays},
    }


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value))


def _yes_no(value: bool | None) -> str:
    return {True: "是 yes", False: "否 no", None: "—"}[value]


def render(state: dict[str, Any], notice: str = "") -> str:
    """The page as HTML: plain, bilingual labels, no scripts, no external assets."""
    active = [a for a in state["alarms"] if a["active"]]
    rows_alarms = "".join(
        f"<tr class='{_e(a['severity'])}'><td>{_e(a['alarm'])}</td><td>{_e(a['point'])}"
        f"</td><td>{_e(a['severity'])}</td><td>{_e(a['since'])}</td>"
        f"<td>{_e(a['value'])}</td><td>{_e(a['message'])}</td><td>"
        + ("<form method='post' action='/ack'><input type='hidden' name='alarm' "
           f"value='{_e(a['alarm'])}'><button type='submit'>确认 Acknowledge</button>"
           "</form>" if a["latched"] else "")
        + "</td></tr>" for a in active
    ) or "<tr><td colspan='7'>无活动报警 No active alarms</td></tr>"
    rows_devices = []
    for d in state["devices"]:
        values = "<br>".join(
            f"{_e(v['point'])} = {_e(v['value'])} {_e(v['unit'])} "
            f"<span class='q-{_e(v['quality'])}'>[{_e(v['quality'])}]</span>"
            for v in d["values"])
        rate = "—" if d["error_rate"] is None else f"{d['error_rate']:.1%}"
        status = ("维护 maintenance" if d["maintenance"] else _yes_no(d["online"]))
        rows_devices.append(
            f"<tr><td>{_e(d['device'])}</td><td>{status}</td><td>{rate}</td>"
            f"<td>{_e(d['last_good_poll'])}</td><td>{values}</td></tr>")
    rows_maint = "".join(
        f"<tr><td>{_e(m['target'])}</td><td>{_e(m['who'])}</td><td>{_e(m['reason'])}"
        f"</td><td>{_e(m['since'])}</td><td>{_e(m['until'])}</td></tr>"
        for m in state["maintenance"]) or "<tr><td colspan='5'>— none</td></tr>"
    relays = ", ".join(f"{_e(k)}: {_yes_no(v)}" for k, v in state["relays"].items())
    up = "已连接 connected" if state["uplink_connected"] else "未连接 not connected"
    notice_html = f"<p class='notice'>{_e(notice)}</p>" if notice else ""
    return f"""<!doctype html>
<html lang="zh-CN"><head><meta charset="utf-8">
<meta http-equiv="refresh" content="{REFRESH_S}; url=/">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{_e(state['site'])} / {_e(state['gateway'])} — groundwatch</title>
<style>
body {{ font-family: sans-serif; margin: 1em; }}
table {{ border-collapse: collapse; margin-bottom: 1.5em; }}
td, th {{ border: 1px solid #999; padding: 0.25em 0.5em; vertical-align: top; }}
tr.critical td {{ background: #fcc; }} tr.warning td {{ background: #ffd; }}
.q-good {{ color: #060; }} .q-maintenance {{ color: #a60; }}
.notice {{ background: #def; padding: 0.5em; }}
button {{ font-size: 1.1em; padding: 0.3em 1em; }}
</style></head><body>
<h1>现场网关 Gateway {_e(state['gateway'])} — 站点 site {_e(state['site'])}</h1>
{notice_html}
<p>时间 Time: {_e(state['ts'])} · 云端 Uplink: {up} · 待发送 Outbox:
{_e(state['outbox_depth'])} · 继电器 Relays: {relays}</p>
<h2>活动报警 Active alarms ({len(active)})</h2>
<table><tr><th>报警 Alarm</th><th>测点 Point</th><th>级别 Severity</th>
<th>开始 Since</th><th>值 Value</th><th>说明 Message</th><th></th></tr>
{rows_alarms}</table>
<h2>设备状态 Devices</h2>
<table><tr><th>设备 Device</th><th>在线 Online</th><th>错误率 Error rate</th>
<th>最后成功 Last good poll</th><th>最新值 Latest values</th></tr>
{''.join(rows_devices)}</table>
<h2>维护 Maintenance</h2>
<table><tr><th>对象 Target</th><th>操作人 Who</th><th>原因 Reason</th>
<th>开始 Since</th><th>结束 Until</th></tr>
{rows_maint}</table>
</body></html>
"""


class StatusPage:
    """The operator page's HTTP server, in a thread of the gateway process."""

    def __init__(self, gw: Gateway, host: str, port: int) -> None:
        self.gw, self.host, self.port = gw, host, port
        self.loop: asyncio.AbstractEventLoop | None = None
        self.server: ThreadingHTTPServer | None = None
        self.thread: threading.Thread | None = None

    def on_loop(self, func: Any, *args: Any) -> Any:
        """Run func(*args) on the gateway's event loop and return its result."""
        assert self.loop is not None

        async def call() -> Any:
            return func(*args)

        return asyncio.run_coroutine_threadsafe(call(), self.loop).result(LOOP_TIMEOUT_S)

    def start(self) -> bool:
        """Listen and serve in a thread; False (logged) if the address is taken."""
        self.loop = asyncio.get_running_loop()
        page = self

        class Handler(_Handler):
            owner = page

        try:
            self.server = ThreadingHTTPServer((self.host, self.port), Handler)
        except OSError as exc:
            log.error("site=%s operator page cannot listen on %s:%s: %s",
                      self.gw.cfg.site.id, self.host, self.port, exc)
            return False
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever,
                                       name="status-page", daemon=True)
        self.thread.start()
        log.info("site=%s operator page on http://%s:%s/", self.gw.cfg.site.id,
                 self.host, self.port)
        return True

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None


class _Handler(BaseHTTPRequestHandler):
    owner: StatusPage
    server_version = "groundwatch-gateway"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        log.debug("operator page %s: " + format, self.client_address[0], *args)

    def _send(self, status: int, body: bytes, kind: str,
              headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        path, _, query = self.path.partition("?")
        try:
            state = self.owner.on_loop(snapshot, self.owner.gw)
        except Exception as exc:  # noqa: BLE001 - a page error never stops the gateway
            log.warning("operator page: cannot read the gateway's state: %s", exc)
            self._send(503, b"gateway busy, try again\n", "text/plain; charset=utf-8")
            return
        if path == "/status.json":
            self._send(200, json.dumps(state, ensure_ascii=False).encode(),
                       "application/json")
        elif path in ("/", "/index.html"):
            notice = parse_qs(query).get("notice", [""])[0][:200]
            self._send(200, render(state, notice).encode(), "text/html; charset=utf-8")
        else:
            self._send(404, b"not found\n", "text/plain; charset=utf-8")

    def do_POST(self) -> None:  # noqa: N802
        if self.path != "/ack":
            self._send(404, b"not found\n", "text/plain; charset=utf-8")
            return
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY_BYTES:
            self._send(413, b"too large\n", "text/plain; charset=utf-8")
            return
        form = parse_qs(self.rfile.read(length).decode("utf-8", errors="replace"))
        alarm = form.get("alarm", [""])[0]
        who = f"operator page ({self.client_address[0]})"
        try:
            ok = self.owner.on_loop(self.owner.gw.request_local_ack, alarm, who)
        except Exception as exc:  # noqa: BLE001
            log.warning("operator page: cannot queue the acknowledgement: %s", exc)
            self._send(503, b"gateway busy, try again\n", "text/plain; charset=utf-8")
            return
        if not ok:
            self._send(404, f"no alarm {alarm!r}\n".encode(), "text/plain; charset=utf-8")
            return
        notice = quote(f"acknowledgement of {alarm} queued / 已确认")
        self._send(303, b"", "text/plain", {"Location": f"/?notice={notice}"})
