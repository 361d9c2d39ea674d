"""Line leak detection by pressure decay, and leak-cable states and zones."""

import numpy as np
import pytest

from leak_detection.cable import CableMonitor, Zone, locate
from leak_detection.line import LineSettings, line_leak_test

GAL_L = 3.785411784


def pump_off_decay(rng, leak_gph_at_10psi, compliance_l_per_psi, p0_psi=12.0,
                   minutes=60, thermal_psi_per_h=0.0, noise_psi=0.02):
    """Pressure after pump-off of a line leaking through an orifice (Q ~ sqrt(P))."""
    dt = 1.0
    t = np.arange(0, minutes * 60, dt)
    p = np.empty(len(t))
    pressure = p0_psi
    for i in range(len(t)):
        p[i] = pressure
        q_l_s = leak_gph_at_10psi * GAL_L / 3600 * np.sqrt(max(pressure, 0) / 10)
        pressure -= q_l_s * dt / compliance_l_per_psi + thermal_psi_per_h * dt / 3600
    return t, p + noise_psi * rng.standard_normal(len(t))


@pytest.mark.parametrize("compliance", [0.05, 0.5, 2.0])
def test_3_gph_at_10_psi_is_flagged_within_10_minutes(compliance):
    rng = np.random.default_rng(1)
    t, p = pump_off_decay(rng, 3.0, compliance)
    res = line_leak_test(t, p, LineSettings(compliance_l_per_psi=compliance))
    assert res.verdict == "fail"
    assert res.decided_s <= 600
    if res.rate_gph != float("inf"):
        assert res.rate_gph == pytest.approx(3.0, rel=0.25)


def test_tight_line_passes_despite_cooling():
    rng = np.random.default_rng(2)
    # Product cooling in the line: 0.3 psi/h of decay, far below 1.5 gal/h at C=0.5.
    t, p = pump_off_decay(rng, 0.0, 0.5, thermal_psi_per_h=0.3)
    res = line_leak_test(t, p, LineSettings(compliance_l_per_psi=0.5))
    assert res.verdict == "pass" and res.decided_s <= 600
    assert res.upper_gph < res.threshold_gph == pytest.approx(1.5)


def test_line_that_loses_its_pressure_fails_at_once():
    rng = np.random.default_rng(3)
    t, p = pump_off_decay(rng, 60.0, 0.05)
    res = line_leak_test(t, p, LineSettings(compliance_l_per_psi=0.05))
    assert res.verdict == "fail"
    assert res.decided_s < 120


ZONES = (Zone("trench T1", 0, 60, "pump island", 0),
         Zone("trench T2", 60, 150, "north pit", 150))


def test_location_in_zones():
    assert locate(115.0, ZONES) == "trench T2, 35 m from the north pit"
    assert locate(12.4, ZONES) == "trench T1, 12 m from the pump island"
    assert locate(151.0, ZONES).startswith("151.0 m along the cable")
    assert locate(5.0, (Zone("bund", 0, 20),)) == "bund, 5 m into the zone"


def test_cable_states_realarm_and_restore():
    mon = CableMonitor(zones=ZONES, spread_m=2.0)
    assert mon.update(0, False, False, False, 0.0, 150) == []
    ev = mon.update(1, True, False, False, 115.0, 150)
    assert [e.kind for e in ev] == ["leak"]
    assert ev[0].location == "trench T2, 35 m from the north pit"
    assert ev[0].accuracy_m == pytest.approx(0.75)
    assert mon.update(2, True, False, False, 116.0, 150) == []  # within the spread
    ev = mon.update(3, True, False, False, 104.0, 150)  # a second or spreading leak
    assert [e.kind for e in ev] == ["new_leak"] and ev[0].distance_m == 104.0
    assert [e.kind for e in mon.update(4, False, False, False, 0.0, 150)] == [
        "leak_cleared"]
    assert [e.kind for e in mon.update(5, False, True, False, 0.0, 150)] == [
        "cable_break"]
    assert [e.kind for e in mon.update(6, False, True, True, 0.0, 150)] == ["loop_fault"]
    assert [e.kind for e in mon.update(7, False, False, False, 0.0, 150)] == [
        "cable_restored", "loop_restored"]
