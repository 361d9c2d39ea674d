"""Alarm rules: hysteresis, latching, bad data holds state."""

from edge.alarms import AlarmRule
from edge.config import AlarmSection


def rule(**kw):
    return AlarmRule(AlarmSection(name="a", point="d.p", **kw))


def states(r, values):
    out = []
    for v in values:
        t = r.evaluate(v, True, "t")
        out.append(t.state if t else None)
    return out


def test_high_alarm_with_hysteresis():
    r = rule(kind="high", setpoint=100.0, hysteresis=5.0)
    got = states(r, [99, 101, 97, 96, 94.9, 101])
    assert got == [None, "raised", None, None, "cleared", "raised"]


def test_low_alarm_with_hysteresis():
    r = rule(kind="low", setpoint=10.0, hysteresis=2.0)
    assert states(r, [11, 9, 11.9, 12.1]) == [None, "raised", None, "cleared"]


def test_latched_alarm_holds_until_acknowledged():
    r = rule(kind="on", latch=True)
    assert states(r, [0, 1, 0]) == [None, "raised", "returned"]
    assert r.active  # relays stay on after the condition returned to normal
    assert r.acknowledge("t").state == "cleared"
    assert not r.active


def test_ack_while_condition_holds_keeps_it_active_until_it_clears():
    r = rule(kind="on", latch=True)
    states(r, [1])
    assert r.acknowledge("t").state == "acknowledged"
    assert r.active
    assert states(r, [0]) == ["cleared"]


def test_bad_quality_never_moves_an_alarm():
    r = rule(kind="high", setpoint=1.0)
    assert r.evaluate(5.0, False, "t") is None and not r.active
    states(r, [5.0])
    assert r.evaluate(None, True, "t") is None and r.active


def test_state_survives_a_restart():
    r = rule(kind="on", latch=True)
    states(r, [1, 0])
    again = AlarmRule(r.cfg, r.state)
    assert again.active
    assert states(again, [1]) == [None]  # still the same latched alarm, no new event


def test_stale_alarm_raises_when_a_counter_stops_and_clears_when_it_moves():
    r = rule(kind="stale", max_age_s=3.0)
    seen = []
    # A heartbeat counting once a second, polled every second, freezes at 5 (t = 5).
    for t in range(12):
        value = float(min(t, 5))
        tr = r.evaluate(value, True, "t", now_s=float(t))
        seen.append((t, tr.state if tr else None))
    # Unchanged since t = 5: 3.0 s old at t = 8 (not above), 4.0 s at t = 9.
    assert [s for s in seen if s[1]] == [(9, "raised")]
    assert r.active and r.state.value == 4.0
    t = r.evaluate(6.0, True, "t", now_s=12.0)
    assert t is not None and t.state == "cleared" and not r.active


def test_stale_alarm_ages_between_samples_and_ignores_bad_data():
    r = rule(kind="stale", max_age_s=2.0)
    assert r.evaluate(1.0, True, "t", now_s=100.0) is None
    # the device stops answering: no samples, only the gateway's periodic look
    assert r.evaluate(None, False, "t", now_s=101.0) is None
    assert r.evaluate(2.0, False, "t", now_s=101.5) is None  # not good: not a change
    t = r.evaluate(None, False, "t", now_s=102.5)
    assert t is not None and t.state == "raised" and t.value == 2.5


def test_a_device_never_heard_from_goes_stale_from_the_first_look():
    r = rule(kind="stale", max_age_s=5.0)
    assert r.evaluate(None, False, "t", now_s=10.0) is None
    assert r.evaluate(None, False, "t", now_s=15.0) is None
    assert r.evaluate(None, False, "t", now_s=15.1).state == "raised"


def test_stale_needs_max_age_and_max_age_needs_stale():
    import pytest
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="max_age_s"):
        rule(kind="stale")
    with pytest.raises(ValidationError, match="max_age_s"):
        rule(kind="high", setpoint=1.0, max_age_s=3.0)
