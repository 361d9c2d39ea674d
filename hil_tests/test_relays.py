"""Relays: 'gateway healthy' follows the poll loop; alarm relays survive a restart."""

import time

import pytest

from hil_tests.harness import query, wait_for

pytestmark = pytest.mark.hil


def coil(site, point):
    return site.sim.call(lambda: site.sim.sim.coil("relay1", point))


def test_healthy_relay_and_latched_alarm_restored_after_restart(site):
    site.start_sim()
    site.start_edge()
    wait_for(lambda: coil(site, "relay_8"), 10, f"gateway-healthy relay\n{site.logs()}")

    site.sim.call(lambda: site.sim.sim.trigger_leak("cable1", 12.0))
    wait_for(lambda: coil(site, "relay_1"), 3, "horn relay on the leak")

    # An orderly stop de-energises 'gateway healthy' and leaves the alarm relay alone.
    assert site.procs["edge"].stop() == 0
    assert not coil(site, "relay_8")
    assert coil(site, "relay_1")

    # The relay module loses power meanwhile (all coils drop) and the leak dries up.
    site.sim.call(lambda: site.sim.sim.power_cycle("relay1"))
    site.sim.call(lambda: site.sim.sim.set_value("cable1", "leak", 0.0))
    assert not coil(site, "relay_1")

    # The latched alarm is restored from the store: the horn comes back on.
    t0 = time.monotonic()
    site.start_edge()
    wait_for(lambda: coil(site, "relay_1"), 10, f"horn restored\n{site.logs()}")
    assert time.monotonic() - t0 < 10
    time.sleep(2)
    assert coil(site, "relay_1"), "the latched horn dropped before acknowledgement"
    raised = query(site.gateway_db, "SELECT count(*) FROM events WHERE source="
                   "'trench-leak' AND state='raised'")[0][0]
    assert raised == 1  # the restart restored the alarm; it did not raise a new one
