"""The whole chain on real parts: pymodbus simulators (TCP and RTU on a socat pty),
the gateway process, a private Mosquitto, the cloud receiver and its HTTP API."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest

from groundwatch.sim.replay import load_aquatroll
from hil_tests.harness import http_json, query, wait_for

pytestmark = pytest.mark.hil

DEVICES = {"tank1", "cable1", "relay1", "mw1", "mw2"}


def cloud_devices(site) -> set[str]:
    try:
        return {p["device"] for p in http_json(f"{site.api}/api/sites/demo-site/points")}
    except OSError:
        return set()


def gateway_records(site) -> dict[int, tuple]:
    rows = query(site.gateway_db, "SELECT seq, ts, device || '.' || point, value, quality "
                 "FROM readings")
    rows += query(site.gateway_db, "SELECT seq, ts, source, event || ':' || state, NULL "
                  "FROM events")
    return {r[0]: r[1:] for r in rows}


def cloud_records(site) -> list[tuple]:
    rows = query(site.cloud_db, "SELECT seq, ts, device || '.' || point, value, quality "
                 "FROM readings WHERE gateway = 'gw-demo'")
    rows += query(site.cloud_db, "SELECT seq, ts, source, event || ':' || state, NULL "
                  "FROM events WHERE gateway = 'gw-demo'")
    return rows


def test_leak_during_broker_outage_fires_relay_and_everything_syncs_once(site):
    poll_interval_s = site.cfg.device("cable1").poll_interval_s
    site.start_sim()
    site.start_cloud()
    site.start_edge()
    wait_for(lambda: cloud_devices(site) >= DEVICES, 40,
             f"readings from every device in the cloud\n{site.logs()}")

    # The broker dies. Polling, alarms and relays go on.
    site.broker.stop()
    seq_at_outage = query(site.gateway_db, "SELECT max(seq) FROM readings")[0][0]
    assert not site.sim.call(lambda: site.sim.sim.coil("relay1", "relay_1"))
    t0 = time.monotonic()
    site.sim.call(lambda: site.sim.sim.trigger_leak("cable1", 42.5))
    wait_for(lambda: site.sim.call(lambda: site.sim.sim.coil("relay1", "relay_1")),
             2 * poll_interval_s, "the horn relay coil within two poll periods")
    relay_latency_s = time.monotonic() - t0
    assert relay_latency_s <= 2 * poll_interval_s
    time.sleep(3)  # keep polling through the outage
    seq_during = query(site.gateway_db, "SELECT max(seq) FROM readings")[0][0]
    assert seq_during > seq_at_outage + 20, "the gateway stopped storing during the outage"
    raised = query(site.gateway_db, "SELECT seq, value FROM events WHERE source = "
                   "'trench-leak' AND state = 'raised'")
    assert len(raised) == 1 and raised[0][1] == 1.0

    # The broker returns; the outbox drains past everything from the outage.
    site.broker.start()
    seq_back = query(site.gateway_db, "SELECT max(seq) FROM readings")[0][0]
    wait_for(lambda: (query(site.gateway_db, "SELECT min(seq) FROM outbox")[0][0] or 1e18)
             > seq_back, 60, f"the outbox to drain after the outage\n{site.logs()}")
    assert site.procs["edge"].stop() == 0
    time.sleep(0.5)

    gw = gateway_records(site)
    unsent = {r[0] for r in query(site.gateway_db, "SELECT seq FROM outbox")}
    cloud = cloud_records(site)
    cloud_seqs = [r[0] for r in cloud]
    assert len(cloud_seqs) == len(set(cloud_seqs)), "a record reached the cloud twice"
    assert set(cloud_seqs) == set(gw) - unsent
    assert all(seq > seq_back for seq in unsent)  # only the last moments are unsent
    for seq, *rest in cloud:
        ts, name, value, quality = rest
        g_ts, g_name, g_value, g_quality = gw[seq]
        assert (name, quality) == (g_name, g_quality)
        assert ts[:23] == g_ts[:23]
        assert value == g_value or (value is None and g_value is None) or (
            isinstance(g_value, float) and math.isclose(value, g_value))

    alarms = http_json(f"{site.api}/api/sites/demo-site/alarms")
    assert "trench-leak" in alarms["active"]
    leak_points = {p["point"]: p for p in
                   http_json(f"{site.api}/api/sites/demo-site/points")}
    assert leak_points["cable1.leak_distance_m"]["value"] == pytest.approx(42.5)


def test_replayed_well_point_serves_recorded_values_in_order(site):
    # Slow enough that the gateway sees every record, including the first.
    site.start_edge()
    site.start_cloud()
    site.start_sim(speed=450.0)  # one record every 2 s, polled every 1 s
    def served_now():
        try:
            rows = http_json(f"{site.api}/api/sites/demo-site/readings?"
                             "point=mw1.conductivity_us_cm")["readings"]
        except OSError:
            return None
        rows = [r for r in rows if r["quality"] != "comm_lost"]
        return rows if len({r["value"] for r in rows}) >= 6 else None

    served = wait_for(served_now, 60, f"six distinct mw1 values in the cloud\n{site.logs()}")
    recorded = np.array([r.specific_conductivity_us_cm for r in load_aquatroll()], np.float32)

    # Every served value is a value of the recorded file, in recorded order.
    indices = []
    for r in served:
        hits = np.flatnonzero(recorded == np.float32(r["value"]))
        assert hits.size, f"{r['value']} is not in the recorded file"
        later = hits[hits >= (indices[-1] if indices else 0)]
        assert later.size, f"{r['value']} served out of recorded order"
        indices.append(int(later[0]))
    assert indices[-1] >= 5 and len(set(indices)) >= 5

    # The logger's startup artefact (0.000 µS/cm) is served, flagged, never good.
    assert served[0]["value"] == 0.0 and indices[0] == 0
    for r, index in zip(served, indices, strict=True):
        assert r["quality"] == ("out_of_range" if index == 0 else "good"), (r, index)
