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
