"""Our RTU master against a scripted slave on a real socat pty pair.

The slave is a few lines of our own so that it can misbehave on purpose: answer late,
answer for another unit, send garbage, send a bad CRC.
"""

from __future__ import annotations

import shutil
import struct
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import serial

from drivers.rtu import (
    RtuException,
    RtuGarbage,
    RtuMaster,
    RtuTimeout,
    SerialTransport,
    crc16,
    frame,
    read_request,
)

TIMEOUT_S = 0.2


def registers_reply(unit: int, values: list[int]) -> bytes:
    return frame(struct.pack(f">BBB{len(values)}H", unit, 3, 2 * len(values), *values))


class ScriptedSlave:
    """Answers each request with whatever `script(request)` returns, after a delay."""

    def __init__(self, port: str):
        self.port = serial.Serial(port, 19200, timeout=0.05, exclusive=True)
        self.script: Callable[[bytes], tuple[float, bytes]] = lambda r: (0, b"")
        self.requests: list[bytes] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.is_set():
            req = self.port.read(8)
            if len(req) < 8:
                continue
            self.requests.append(req)
            delay_s, reply = self.script(req)
            if reply:
                threading.Timer(delay_s, self.port.write, (reply,)).start()

    def close(self) -> None:
        self.stop.set()
        self.thread.join(2)
        self.port.close()


@pytest.fixture
def bus(tmp_path: Path) -> Iterator[tuple[RtuMaster, ScriptedSlave]]:
    socat = shutil.which("socat")
    assert socat, "socat is required for RTU tests: apt-get install socat"
    a, b = tmp_path / "master", tmp_path / "slave"
    proc = subprocess.Popen([socat, f"pty,raw,echo=0,link={a}", f"pty,raw,echo=0,link={b}"],
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 5
    while not (a.exists() and b.exists()):
        assert time.monotonic() < deadline, "socat did not create the pty pair"
        time.sleep(0.02)
    slave = ScriptedSlave(str(b))
    master = RtuMaster(SerialTransport(str(a), 19200, "N", 1, 8), 19200)
    try:
        yield master, slave
    finally:
        master.close()
        slave.close()
        proc.terminate()
        proc.wait()


def echo_unit(values: dict[int, list[int]], delay_s: dict[int, float] | None = None):
    def script(req: bytes) -> tuple[float, bytes]:
        unit = req[0]
        return (delay_s or {}).get(unit, 0.0), registers_reply(unit, values[unit])
    return script


def test_crc_of_the_textbook_frame():
    assert read_request(1, 3, 0, 10) == bytes.fromhex("01 03 00 00 00 0a c5 cd")
    assert crc16(b"\x01\x03\x00\x00\x00\x0a") == 0xCDC5


def test_read_returns_registers(bus):
    master, slave = bus
    slave.script = echo_unit({1: [0x4120, 0x0000]})
    assert master.read(1, "holding", 0, 2, TIMEOUT_S) == [0x4120, 0]


def test_late_reply_is_never_the_answer_to_the_next_request(bus):
    master, slave = bus
    # Unit 1 answers after 1.5 x the timeout; unit 2 at once. Same function, same
    # length: only draining the line keeps unit 1's late reply out of unit 2's read.
    slave.script = echo_unit({1: [111, 111], 2: [222, 222]}, {1: 1.5 * TIMEOUT_S})
    for _ in range(3):
        with pytest.raises(RtuTimeout):
            master.read(1, "holding", 0, 2, TIMEOUT_S)
        assert master.read(2, "holding", 0, 2, TIMEOUT_S) == [222, 222]
    assert master.stats["drained_bytes"] == 3 * 9


def test_late_reply_from_the_same_unit_is_not_taken_for_the_retry(bus):
    master, slave = bus
    counter = iter(range(1, 100))

    def script(req: bytes) -> tuple[float, bytes]:
        n = next(counter)
        # The first answer is late; the retry's answer is fresh and different.
        return (1.5 * TIMEOUT_S if n == 1 else 0.0), registers_reply(1, [n])

    slave.script = script
    with pytest.raises(RtuTimeout):
        master.read(1, "holding", 0, 1, TIMEOUT_S)
    assert master.read(1, "holding", 0, 1, TIMEOUT_S) == [2]


def test_wrong_unit_bad_crc_and_garbage_are_rejected_within_the_deadline(bus):
    master, slave = bus
    cases = [
        registers_reply(7, [1, 2]),  # another unit's reply
        registers_reply(1, [1, 2])[:-1] + b"\x00",  # CRC broken
        frame(struct.pack(">BBB2H", 1, 3, 6, 1, 2)),  # byte count lies
        bytes(range(1, 40)),  # line noise
    ]
    for reply in cases:
        slave.script = lambda r, reply=reply: (0.0, reply)
        t0 = time.monotonic()
        with pytest.raises((RtuGarbage, RtuTimeout)):
            master.read(1, "holding", 0, 2, TIMEOUT_S)
        # Bounded: the timeout, plus draining the previous failure's reply window.
        assert time.monotonic() - t0 <= 2 * TIMEOUT_S + 0.1
    # After all that, a good reply is read correctly.
    slave.script = echo_unit({1: [5, 6]})
    assert master.read(1, "holding", 0, 2, TIMEOUT_S) == [5, 6]


def test_exception_response_is_the_device_speaking(bus):
    master, slave = bus
    slave.script = lambda r: (0.0, frame(bytes([r[0], 0x83, 2])))
    with pytest.raises(RtuException) as err:
        master.read(1, "holding", 0, 2, TIMEOUT_S)
    assert err.value.code == 2


def test_requests_keep_the_inter_frame_silence(bus):
    master, slave = bus
    slave.script = echo_unit({1: [1]})
    for _ in range(5):
        master.read(1, "holding", 0, 1, TIMEOUT_S)
    assert master.silence_s == pytest.approx(3.5 * 11 / 19200)
    assert len(slave.requests) == 5


def test_coils_unpack_lsb_first(bus):
    master, slave = bus
    slave.script = lambda r: (0.0, frame(bytes([1, 1, 2, 0b00000101, 0b1])))
    assert master.read(1, "coil", 0, 9, TIMEOUT_S) == [1, 0, 1, 0, 0, 0, 0, 0, 1]
