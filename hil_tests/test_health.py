"""Gateway health with the real gateway, broker and receiver: what the API shows agrees
with the gateway's database, a silent device's error rate rises, and a gateway that
dies shows offline after the receiver's configured silence."""

from __future__ import annotations

import signal
import time
from datetime import datetime
from typing import Any

import pytest

from edge.config import load_config
from edge.store import SCHEMA_VERSION
from hil_tests.conftest import Site
from hil_tests.harness import Proc, http_json, query, wait_for

pytestmark = pytest.mark.hil

OFFLINE_AFTER_S = 4.0
STATUS_INTERVAL_S = 1.0
SILENT = "mw1"  # on the RS-485 pty bus


def gateway_view(site: Site) -> dict[str, Any] | None:
    try:
        gateways = http_json(f"{site.api}/api/sites/{site.cfg.site.id}/gateways")
    except OSError:
        return None
    return gateways[0] if gateways else None


def with_health(site: Site) -> dict[str, Any] | None:
    view = gateway_view(site)
    return view if view and view["health"] else None


def test_health_reaches_the_api_and_a_dead_gateway_shows_offline(site: Site) -> None:
    text = site.config_path.read_text()
    text = text.replace("[gateway]\n", f"[gateway]\nstatus_interval_s = "
                        f"{STATUS_INTERVAL_S}\n", 1)
    # A will after 90 s: within this test only the silence can mark it offline.
    text = text.replace("[uplink]\n", "[uplink]\nkeepalive_s = 60\n", 1)
    site.config_path.write_text(text)
    site.cfg = load_config(site.config_path)
    site.start_sim()
    site.start_cloud("--offline-after", str(OFFLINE_AFTER_S))
    site.start_edge()
    sim = site.sim
    assert sim is not None

    # (a receiver that subscribes late gets the retained health first: no sign of
    # life, so the gateway shows online from the next live one)
    view = wait_for(lambda: (v := with_health(site)) and v["online"] and all(
        d["online"] for d in v["health"]["devices"].values()) and v, 60,
        f"live health with every device online\n{site.logs()}")
    health = view["health"]
    assert set(health["devices"]) == {d.name for _, d in site.cfg.devices()}
    assert set(health["relays"]) == set(site.cfg.relays)
    assert health["relays"]["gateway_ok"] is True  # the healthy relay is driven
    assert health["clock_synchronised"] is True  # clock_sync = "assume"
    assert health["schema_version"] == SCHEMA_VERSION
    assert health["disk"]["db_bytes"] > 0 and health["disk"]["free_bytes"] > 0
    # (parked: when the uplink parks poison batches)
    assert {"evicted_unsent", "dead_lettered", "store_failures"} <= set(health["drops"])
    assert set(health["drops"].values()) == {0}
    [summary] = [s for s in http_json(f"{site.api}/api/sites")
                 if s["site"] == site.cfg.site.id]
    assert summary["gateways_online"] == 1
    assert summary["gateways"][0]["health"]["devices_offline"] == []

    # A device goes silent: offline in the health, its error rate rising message by
    # message (failed polls over the polls of the last error_window_s).
    sim.call(lambda: sim.sim.set_reply_delay(SILENT, None))
    rates: dict[str, float] = {}

    def rising() -> bool:
        h = (with_health(site) or {}).get("health")
        if h and h["devices"][SILENT]["error_rate"] is not None:
            rates[h["ts"]] = h["devices"][SILENT]["error_rate"]
        values = [rates[ts] for ts in sorted(rates)]
        steps = sorted(set(values))
        return bool(h) and h["devices"][SILENT]["online"] is False and len(steps) >= 4

    wait_for(rising, 60, f"a rising error rate of {SILENT}: {rates}\n{site.logs()}",
             interval_s=0.5)
    values = [rates[ts] for ts in sorted(rates)]
    assert values == sorted(values), f"error rate fell while silent: {values}"
    assert values[-1] > values[0]
    [summary] = [s for s in http_json(f"{site.api}/api/sites")
                 if s["site"] == site.cfg.site.id]
    assert summary["gateways"][0]["health"]["devices_offline"] == [SILENT]

    # An orderly stop: the last health, published after everything else stopped,
    # agrees with the gateway's database exactly; the "offline" status follows it.
    assert site.procs["edge"].stop() == 0
    view = wait_for(lambda: (v := gateway_view(site)) and v["status"] == "offline" and v,
                    15, "the offline status")
    assert view["online"] is False
    final = view["health"]
    db = site.gateway_db
    [(depth,)] = query(db, "SELECT count(*) FROM outbox")
    assert final["outbox_depth"] == depth
    assert final["uptime_s"] >= health["uptime_s"]
    for name, dev in final["devices"].items():
        [(answered, last_good)] = query(
            db, "SELECT count(DISTINCT ts), max(ts) FROM readings WHERE device = ? "
                "AND quality != 'comm_lost'", name)
        assert dev["polls"] - dev["failures"] == answered, name
        assert datetime.fromisoformat(dev["last_good_poll"]) == datetime.fromisoformat(
            last_good), name
    [(went_offline,)] = query(db, "SELECT count(*) FROM events WHERE source = ? AND "
                                  "event = 'device' AND state = 'offline'", SILENT)
    assert went_offline == 1 and final["devices"][SILENT]["online"] is False
    # each rise of the rate was one more failed poll
    assert final["devices"][SILENT]["failures"] >= len({v for v in values if v > 0})

    # A gateway that hangs (or whose link goes half-open): its connection stays up, so
    # no will for 1.5 keepalives; it shows offline once nothing was heard for
    # --offline-after. (A killed one's socket closes: the broker sends the will.)
    site.procs["edge"] = Proc("edge", ["edge", "--config", str(site.config_path)],
                              site.workdir)
    wait_for(lambda: (v := with_health(site)) and v["online"] and v["status"] == "online"
             and v["health"]["uptime_s"] < final["uptime_s"], 60,
             f"the restarted gateway's health\n{site.logs()}")
    edge = site.procs["edge"].proc
    edge.send_signal(signal.SIGSTOP)
    frozen = time.monotonic()
    try:
        view = wait_for(lambda: (v := gateway_view(site)) and not v["online"] and v,
                        OFFLINE_AFTER_S + 10, "the hung gateway to show offline")
        silence_s = time.monotonic() - frozen
    finally:
        edge.kill()
        edge.wait()
    assert view["status"] == "online"  # no will yet: the silence did it
    # Its last sign of life came at most a status interval (plus delivery) before
    # it froze; the API is polled every 0.1 s.
    assert OFFLINE_AFTER_S - STATUS_INTERVAL_S - 0.5 <= silence_s <= OFFLINE_AFTER_S + 2
