"""The field node under real MicroPython, serving on a socat pty, read by minimalmodbus
and by a real `groundwatch edge`: inputs, the local alarm relay with no gateway, and
the heartbeat the gateway watches, through a control-loop failure and a watchdog reset.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import minimalmodbus
import pytest
import serial

from hil_tests.field_node import Node, PtyPair, events, latest, node_config, write_site
from hil_tests.harness import Proc, query, wait_for

pytestmark = pytest.mark.hil

UNIT = 5


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[tuple[Node, PtyPair]]:
    pair = PtyPair(tmp_path)
    node = Node(tmp_path, node_config(tmp_path, pair.node_end, unit_id=UNIT))
    node.set_inputs([0, 0], [12.0, 4.0])
    node.start()
    try:
        yield node, pair
    finally:
        node.stop()
        pair.close()


def instrument(pair: PtyPair) -> minimalmodbus.Instrument:
    port = serial.Serial(str(pair.master_end), 19200, timeout=1.0, exclusive=True)
    inst = minimalmodbus.Instrument(port, UNIT)
    inst.clear_buffers_before_each_transaction = True
    return inst


def expected_ua(ma: float) -> int:
    """What the node computes: 12-bit count of the shunt voltage, back to µA."""
    count = round(ma * 150.0 / 3300 * 4095)
    return (count * 22000 + 2047) // 4095


def test_minimalmodbus_reads_inputs_and_drives_a_relay(rig):
    node, pair = rig
    inst = instrument(pair)
    try:
        # 12 mA through 150 ohm: 1.8 V, 2234 counts of 4095 at 3.3 V; 4 mA is 0 %.
        regs = inst.read_registers(8, 8, functioncode=4)
        assert regs[0] == expected_ua(12.0) and abs(regs[0] - 12000) <= 6
        assert regs[1] == (expected_ua(12.0) - 4000) * 10000 // 16000
        assert regs[2] == 0 and regs[6] == 0
        assert abs(regs[4] - 4000) <= 6
        assert inst.read_register(6, functioncode=4) == 100  # firmware 1.00
        assert inst.read_register(1, functioncode=3) == UNIT
        first = inst.read_register(0, functioncode=4)
        time.sleep(0.6)
        assert inst.read_register(0, functioncode=4) - first in (2, 3)  # every 250 ms
        # an open loop and an over-range transmitter, NAMUR NE 43
        node.set_inputs([0, 1], [2.0, 22.0])
        wait_for(lambda: inst.read_register(10, functioncode=4) == 1, 2, "open loop")
        assert inst.read_register(14, functioncode=4) == 2
        # di1 after its debounce time; analog faults; ai2 and ai3 are not fitted
        wait_for(lambda: inst.read_bits(0, 12, functioncode=2) == [
            0, 1, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1], 2, "the discrete inputs")
        assert inst.read_register(1, functioncode=4) & 4  # analog_fault
        # the gateway's command drives relay 1
        inst.write_bit(1, 1, functioncode=5)
        wait_for(lambda: node.relays() == [0, 1], 2, "relay 1 on")
        assert inst.read_bits(0, 2, functioncode=1) == [0, 1]
        assert inst.read_register(3, functioncode=4) == 0b10
        with pytest.raises(minimalmodbus.IllegalRequestError):
            inst.read_registers(20, 10, functioncode=4)  # past the map: exception 02
        with pytest.raises(minimalmodbus.IllegalRequestError):
            inst.write_register(1, 7, functioncode=6)  # unit id is read-only
    finally:
        inst.serial.close()


def test_sump_float_sounds_the_local_relay_within_the_debounce_time(rig):
    node, _ = rig  # no gateway anywhere: the node alone
    debounce_s = node.cfg["debounce_ms"] / 1000
    assert node.relays() == [0, 0]
    node.set_inputs([1, 0], [12.0, 4.0])
    start = time.monotonic()
    wait_for(lambda: node.relays() == [1, 0], 2, "the sump relay", interval_s=0.005)
    latency_s = time.monotonic() - start
    # Debounced: not before the debounce time; then within a sample (10 ms) and
    # the rereading of the inputs file, with slack for a loaded machine.
    assert debounce_s <= latency_s < debounce_s + 0.25, latency_s
    # a float bobbing faster than the debounce time does not release it
    for level in (0, 1, 0, 1):
        node.set_inputs([level, 0], [12.0, 4.0])
        time.sleep(0.05)
    assert node.relays() == [1, 0]
    node.set_inputs([0, 0], [12.0, 4.0])
    wait_for(lambda: node.relays() == [0, 0], 2, "the sump relay to release")


def test_gateway_reads_the_node_and_alarms_when_its_heartbeat_stops(rig, tmp_path):
    node, pair = rig
    site = write_site(tmp_path, pair, UNIT)
    db = tmp_path / "var" / "gateway.sqlite"
    edge = Proc("edge", ["edge", "--config", str(site)], tmp_path)
    try:
        wait_for(lambda: db.exists() and latest(db, "ai0_current_ma"), 15,
                 "readings from the node")
        value, quality = latest(db, "ai0_current_ma")
        assert quality == "good" and value == pytest.approx(expected_ua(12.0) / 1000)
        assert latest(db, "ai0_percent")[0] == pytest.approx(
            (expected_ua(12.0) - 4000) * 10000 // 16000 / 100)
        # the counter moves
        beats = wait_for(lambda: len({v for v, _ in query(
            db, "SELECT value, 1 FROM readings WHERE point = 'heartbeat'")}) >= 4, 10,
            "the heartbeat to count")
        assert beats and events(db, "node_heartbeat") == []
        # an open loop is flagged, not stored as good
        node.set_inputs([1, 0], [2.0, 4.0])
        wait_for(lambda: latest(db, "ai0_current_ma")[1] == "device_error", 5,
                 "the open loop flagged")
        wait_for(lambda: events(db, "sump_full"), 5, "the gateway's sump alarm")
        assert node.relays() == [1, 0]  # the node's own relay, beside the gateway
        # The control loop fails: Modbus still answers (the device stays online), the
        # heartbeat stops, the gateway raises the stale alarm, and the watchdog, no
        # longer fed, resets the node.
        node.set_inputs([1, 0], [2.0, 4.0], fault="adc bus stuck")
        failed_at = time.monotonic()
        wait_for(lambda: [s for s, _ in events(db, "node_heartbeat")] == ["raised"], 6,
                 "the stale heartbeat alarm")
        raised_after_s = time.monotonic() - failed_at
        assert 1.5 <= raised_after_s < 4.0, raised_after_s
        assert latest(db, "control_error")[0] == 1.0
        assert [s for s, _ in events(db, "node")] == []  # answering all along
        wait_for(lambda: not node.alive(), 6, "the watchdog to reset the node")
        assert node.proc is not None and node.proc.returncode == -9
        assert "watchdog expired" in node.log.read_text()
        reset_after_s = time.monotonic() - failed_at
        assert 3.0 <= reset_after_s < 5.0, reset_after_s
        # The board reboots (the fault was transient): counting again clears the alarm.
        node.set_inputs([0, 0], [12.0, 4.0])
        node.start(reset_cause="watchdog")
        wait_for(lambda: [s for s, _ in events(db, "node_heartbeat")] == [
            "raised", "cleared"], 10, "the stale alarm to clear")
        wait_for(lambda: latest(db, "watchdog_reset") == (1.0, "good"), 5,
                 "the watchdog-reset flag")
        assert edge.alive()
    finally:
        edge.stop()
    assert "Traceback" not in edge.tail(200)
