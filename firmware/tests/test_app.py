"""The node on fake hardware: local alarms, gateway commands, heartbeat, watchdog."""

import gc
import sys

from fakes import Clock, FakeHw, adc_for_ma, frame, ticks_diff
from node import app, config

MICROPYTHON = sys.implementation.name == "micropython"


def make(**overrides):
    cfg = dict(config.DEFAULTS)
    cfg["local_alarms"] = [{"relay": 0, "di": 0},
                           {"relay": 1, "ai": 0, "above_ma": 16.0}]
    cfg.update(overrides)
    clock = Clock()
    hw = FakeHw()
    hw.adc[0] = hw.adc[1] = adc_for_ma(8.0)
    node = app.Node(cfg, hw, clock.ms, clock.ticks_us, ticks_diff)
    return node, hw, clock


def run_for(node, clock, ms, step_ms=1):
    for _ in range(ms // step_ms):
        clock.advance_ms(step_ms)
        node.step()


def request(node, hw, clock, *pdu):
    """Send a request frame, let the line go silent, return the reply's bytes."""
    hw.send(frame(node.cfg["unit_id"], *pdu))
    node.step()
    clock.advance_ms(5)  # longer than 3.5 characters at 9600 baud
    node.step()
    return hw.take_reply()


def registers(reply):
    n = reply[2] // 2
    return [reply[3 + 2 * i] << 8 | reply[4 + 2 * i] for i in range(n)]


def test_sump_float_drives_its_relay_within_the_debounce_time_without_a_gateway():
    node, hw, clock = make()  # inputs invert by default: a contact pulls to ground
    hw.di[0] = 1
    run_for(node, clock, 200)
    assert hw.relays[0] == 0
    hw.di[0] = 0  # the float closes its contact
    run_for(node, clock, 90)
    assert hw.relays[0] == 0  # not before the debounce time
    run_for(node, clock, 30)  # debounce 100 ms plus one 10 ms sample
    assert hw.relays[0] == 1
    assert node.tables.input[app.IR_STATUS] & app.ST_LOCAL_ALARM
    hw.di[0] = 1
    run_for(node, clock, 120)
    assert hw.relays[0] == 0


def test_analog_level_above_its_setpoint_and_an_open_loop_drive_the_relay():
    node, hw, clock = make()
    run_for(node, clock, 50)
    assert hw.relays[1] == 0
    hw.adc[0] = adc_for_ma(17.0)
    run_for(node, clock, 20)
    assert hw.relays[1] == 1
    hw.adc[0] = adc_for_ma(12.0)
    run_for(node, clock, 20)
    assert hw.relays[1] == 0
    hw.adc[0] = adc_for_ma(1.0)  # a cut wire: fail towards the alarm
    run_for(node, clock, 20)
    assert hw.relays[1] == 1
    assert node.tables.input[app.IR_AI + 2] == 1  # open loop
    assert node.tables.discrete[app.DI_AI_FAULT] == 1
    assert node.tables.input[app.IR_STATUS] & app.ST_AI_FAULT


def test_analog_registers_over_modbus():
    node, hw, clock = make()
    hw.adc[0] = adc_for_ma(12.0)
    hw.adc[1] = adc_for_ma(22.0)
    run_for(node, clock, 20)
    regs = registers(request(node, hw, clock, 4, 0, app.IR_AI, 0, 8))
    assert abs(regs[0] - 12000) <= 6 and abs(regs[1] - 5000) <= 4
    assert regs[2] == 0 and regs[3] == adc_for_ma(12.0)
    assert abs(regs[4] - 22000) <= 6 and regs[6] == 2  # over range
    # inputs not fitted say so
    regs = registers(request(node, hw, clock, 4, 0, app.IR_AI + 8, 0, 8))
    assert regs[2] == 3 and regs[6] == 3


def test_an_unreadable_adc_is_flagged_and_the_rest_keeps_working():
    node, hw, clock = make()
    hw.adc_broken[1] = 1
    hw.di[0] = 0
    run_for(node, clock, 150)
    assert node.tables.input[app.IR_AI + 4 + 2] == 3
    assert hw.relays[0] == 1


def test_the_gateway_commands_relays_but_cannot_silence_a_local_alarm():
    node, hw, clock = make()
    hw.di[0] = 1
    run_for(node, clock, 20)
    assert request(node, hw, clock, 5, 0, 1, 0xFF, 0) == bytes(
        frame(10, 5, 0, 1, 0xFF, 0))
    run_for(node, clock, 20)
    assert hw.relays[1] == 1
    reply = request(node, hw, clock, 1, 0, 0, 0, 2)
    assert reply[3] == 0b10
    hw.di[0] = 0
    run_for(node, clock, 150)
    request(node, hw, clock, 5, 0, 0, 0, 0)  # "off" while the sump is full
    run_for(node, clock, 20)
    assert hw.relays[0] == 1
    request(node, hw, clock, 6, 0, app.HR_RELAY_COMMAND, 0, 0)
    run_for(node, clock, 20)
    assert hw.relays[1] == 0
    assert request(node, hw, clock, 6, 0, app.HR_UNIT_ID, 0, 5)[1] == 0x86


def test_heartbeat_counts_and_the_watchdog_is_fed_every_sample():
    node, hw, clock = make()
    run_for(node, clock, 3500)
    assert node.tables.input[app.IR_HEARTBEAT] == 3
    assert 340 <= hw.feeds <= 352  # one a sample: 3.5 s / 10 ms
    regs = registers(request(node, hw, clock, 4, 0, 0, 0, 8))
    assert regs[0] == 3 and regs[5] == 3 and regs[6] == app.VERSION


def test_a_failing_control_step_stops_heartbeat_and_watchdog_but_not_modbus():
    node, hw, clock = make()
    run_for(node, clock, 2000)
    feeds = hw.feeds
    beat = node.tables.input[app.IR_HEARTBEAT]
    assert beat >= 1
    hw.fail_refresh = True
    run_for(node, clock, 3000)
    assert hw.feeds == feeds
    regs = registers(request(node, hw, clock, 4, 0, 0, 0, 2))
    assert regs[0] == beat and regs[1] & app.ST_CONTROL_ERROR


def test_status_reports_a_watchdog_reset_and_config_problems():
    node, hw, clock = make()
    run_for(node, clock, 20)
    assert node.tables.input[app.IR_STATUS] & (app.ST_WATCHDOG | app.ST_CONFIG) == 0
    hw = FakeHw()
    hw.reset_by_watchdog = True
    cfg = dict(config.DEFAULTS)
    node = app.Node(cfg, hw, clock.ms, clock.ticks_us, ticks_diff, ["x: bad"])
    run_for(node, clock, 20)
    assert node.tables.input[app.IR_STATUS] & app.ST_WATCHDOG
    assert node.tables.input[app.IR_STATUS] & app.ST_CONFIG


def test_no_allocation_in_the_control_loop():
    if not MICROPYTHON:
        return
    import micropython

    node, hw, clock = make()
    run_for(node, clock, 50)
    micropython.heap_lock()  # any allocation now raises MemoryError
    try:
        for _ in range(2000):
            clock.us += 1000
            node.step()
            hw.di[0] ^= 1 if clock.us % 300000 == 0 else 0
    finally:
        micropython.heap_unlock()


def test_memory_does_not_grow_while_serving():
    node, hw, clock = make()
    for _ in range(50):
        request(node, hw, clock, 4, 0, 0, 0, 16)
    gc.collect()
    if not MICROPYTHON:
        return
    before = gc.mem_alloc()
    for _ in range(2000):
        request(node, hw, clock, 4, 0, 0, 0, 16)
        request(node, hw, clock, 1, 0, 0, 0, 4)
    gc.collect()
    assert gc.mem_alloc() - before < 512, gc.mem_alloc() - before
