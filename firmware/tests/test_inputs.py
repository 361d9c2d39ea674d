"""Debouncing on an injected clock; 4-20 mA scaling and NAMUR NE 43 limits."""

import time

from fakes import adc_for_ma
from node import inputs


def diff(a, b):
    return a - b


def test_a_level_counts_only_after_holding_for_the_debounce_time():
    d = inputs.Debouncer(1, 100, diff)
    assert d.update(0, 0, 0) == 0
    assert d.update(0, 1, 10) == 0  # rises at 10 ms
    assert d.update(0, 1, 109) == 0
    assert d.update(0, 1, 110) == 1  # held for 100 ms
    assert d.update(0, 0, 200) == 1  # falls: also debounced
    assert d.update(0, 0, 299) == 1
    assert d.update(0, 0, 300) == 0


def test_chatter_shorter_than_the_debounce_time_never_counts():
    d = inputs.Debouncer(2, 50, diff)
    for t in range(0, 1000, 10):  # a float bobbing on waves: 20 ms up, 20 ms down
        assert d.update(0, (t // 20) % 2, t) == 0
        assert d.update(1, 1, t) == (1 if t >= 50 else 0)  # the other input unaffected


def test_debounce_across_the_tick_counter_wrapping():
    if not hasattr(time, "ticks_add"):
        return  # CPython has no wrapping tick counter
    d = inputs.Debouncer(1, 100, time.ticks_diff)
    start = time.ticks_add(0, -60)  # 60 ms before the counter wraps to 0
    d.update(0, 1, start)
    assert d.update(0, 1, time.ticks_add(start, 99)) == 0
    assert d.update(0, 1, time.ticks_add(start, 100)) == 1


def test_loop_current_from_the_adc():
    full = inputs.full_scale_ua(3300, 150.0)
    assert full == 22000  # 3.3 V across 150 ohm: 22 mA
    # 12 mA * 150 ohm = 1.8 V; a 12-bit ADC at 3.3 V reads 1.8 / 3.3 * 4095 = 2234.
    assert adc_for_ma(12.0) >> 4 == 2234
    ua = inputs.loop_ua(adc_for_ma(12.0), full)
    assert abs(ua - 12000) <= 6  # one count is 22000 / 4095 = 5.4 µA
    assert inputs.loop_ua(0xFFFF, full) == 22000
    assert inputs.loop_ua(0, full) == 0
    for ma in (4.0, 8.5, 20.0):
        assert abs(inputs.loop_ua(adc_for_ma(ma), full) - ma * 1000) <= 6


def test_namur_ne43_limits():
    # NE 43: <= 3.6 mA or >= 21 mA signals a failure; 3.8-20.5 mA is a measurement.
    assert inputs.loop_status(0) == inputs.STATUS_OPEN_LOOP
    assert inputs.loop_status(3600) == inputs.STATUS_OPEN_LOOP
    assert inputs.loop_status(3601) == inputs.STATUS_OK
    assert inputs.loop_status(3800) == inputs.STATUS_OK
    assert inputs.loop_status(20500) == inputs.STATUS_OK
    assert inputs.loop_status(20999) == inputs.STATUS_OK
    assert inputs.loop_status(21000) == inputs.STATUS_OVER_RANGE


def test_percent_of_span():
    assert inputs.percent_x100(4000) == 0
    assert inputs.percent_x100(12000) == 5000
    assert inputs.percent_x100(20000) == 10000
    assert inputs.percent_x100(3800) == -125  # below the span, still a measurement
    assert inputs.percent_x100(22000) == 11250
