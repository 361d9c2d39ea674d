"""A Modbus RTU master that never takes a late reply for the answer to a new request.

RTU frames carry no transaction id. If a slave answers after the master gave up, and
the master has meanwhile sent its next request, a naive master reads the old reply as
the new answer: a value of the wrong device, or the wrong registers, stored as good.
This master prevents that in three ways:

- after a failed transaction the line is *dirty*: before the next request the master
  reads and discards everything until twice the timeout has passed since the failed
  request (the window in which a late reply may still come) and the line is quiet;
- every reply is checked for unit id, function code, byte count and CRC, and is
  otherwise discarded as garbage (and the line made dirty);
- requests are separated by the inter-frame silence of 3.5 character times
  (Modbus over serial line v1.02, 2.5.1.1), fixed at 1.75 ms above 19200 baud.

Every read has a deadline: garbage or a stuck line can delay a poll by at most the
timeout (plus the drain after a failure), never hang it.

The same framing runs over a serial port (pyserial) and over TCP to a serial device
server ("RTU over TCP"); the transports only move bytes.
"""

from __future__ import annotations

import select
import socket
import struct
import termios
import time
from typing import Protocol

import serial

READ_FUNCTIONS = {"coil": 1, "discrete": 2, "holding": 3, "input": 4}
WRITE_SINGLE_COIL = 5


class RtuError(Exception):
    """Base error of an RTU transaction."""


class RtuTimeout(RtuError):
    """No complete reply before the deadline."""


class RtuGarbage(RtuError):
    """Bytes arrived, but not a valid reply to this request."""


class RtuException(RtuError):
    """The slave answered with a Modbus exception response."""

    def __init__(self, unit: int, function: int, code: int):
        self.code = code
        super().__init__(f"unit {unit} function {function}: exception code {code}")


def crc16(data: bytes) -> int:
    """CRC-16/MODBUS (poly 0xA001 reflected, init 0xFFFF); sent low byte first."""
    crc = 0xFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return crc


def frame(pdu: bytes) -> bytes:
    """Append the CRC to unit id + PDU."""
    return pdu + struct.pack("<H", crc16(pdu))


def read_request(unit: int, function: int, address: int, count: int) -> bytes:
    return frame(struct.pack(">BBHH", unit, function, address, count))


def reply_length(function: int, count: int) -> int:
    """Bytes of a normal reply: unit, function, byte count, data, CRC."""
    if function in (1, 2):
        return 5 + (count + 7) // 8
    if function in (3, 4):
        return 5 + 2 * count
    return 8  # write single coil / register: the request echoed


class Transport(Protocol):
    """Moves bytes; knows nothing of Modbus."""

    def write(self, data: bytes) -> None: ...
    def read(self, n: int, deadline: float) -> bytes: ...
    def discard_input(self) -> None: ...
    def close(self) -> None: ...


class SerialTransport:
    """An RS-485 adapter (or a pty) through pyserial, opened exclusively."""

    def __init__(self, port: str, baudrate: int, parity: str, stopbits: int,
                 bytesize: int):
        try:
            self.port = serial.Serial(
                port, baudrate=baudrate, parity=parity, stopbits=stopbits,
                bytesize=bytesize, timeout=0, exclusive=True,
            )
        except (serial.SerialException, OSError, ValueError, termios.error) as exc:
            # pyserial's own message is often just "(22, 'Invalid argument')".
            hint = (" (a pty refuses parity E or O on some kernels; a real RS-485 "
                    "adapter accepts it)" if "22" in str(exc) and parity != "N" else "")
            raise OSError(f"cannot open {port} at {baudrate} {bytesize}{parity}"
                          f"{stopbits}: {exc}{hint}") from None

    def write(self, data: bytes) -> None:
        self.port.write(data)
        self.port.flush()

    def read(self, n: int, deadline: float) -> bytes:
        # The port stays non-blocking (timeout 0) and the deadline is a select():
        # changing pyserial's timeout re-applies every line setting (a tcsetattr
        # per read), which is slow and fails outright on a pty that refused parity.
        out = bytearray()
        fd = self.port.fileno()
        while len(out) < n:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            ready, _, _ = select.select([fd], [], [], remaining)
            if not ready:
                break
            chunk = self.port.read(n - len(out))
            if not chunk:  # readable but empty: the adapter went away
                raise OSError(f"{self.port.port}: no data although readable "
                              "(device disconnected?)")
            out += chunk
        return bytes(out)

    def discard_input(self) -> None:
        self.port.reset_input_buffer()

    def close(self) -> None:
        self.port.close()


class SocketTransport:
    """A TCP connection to a serial device server that passes RTU frames through."""

    def __init__(self, host: str, port: int, connect_timeout_s: float):
        self.sock = socket.create_connection((host, port), timeout=connect_timeout_s)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def write(self, data: bytes) -> None:
        self.sock.sendall(data)

    def read(self, n: int, deadline: float) -> bytes:
        out = bytearray()
        while len(out) < n:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            self.sock.settimeout(remaining)
            try:
                chunk = self.sock.recv(n - len(out))
            except TimeoutError:
                break
            if not chunk:
                raise ConnectionError("serial device server closed the connection")
            out += chunk
        return bytes(out)

    def discard_input(self) -> None:
        self.sock.setblocking(False)
        try:
            while self.sock.recv(4096):
                pass
        except (BlockingIOError, InterruptedError):
            pass
        finally:
            self.sock.setblocking(True)

    def close(self) -> None:
        self.sock.close()


class RtuMaster:
    """Synchronous RTU master on one transport; one transaction at a time."""

    def __init__(self, transport: Transport, baudrate: int | None = None):
        self.transport = transport
        # 3.5 characters of 11 bits; the standard fixes 1.75 ms above 19200 baud.
        char_s = 11 / baudrate if baudrate else 0.0
        self.silence_s = 3.5 * char_s if baudrate and baudrate <= 19200 else 0.00175
        self._quiet_from = 0.0  # when the line last went quiet
        self._dirty_until: float | None = None  # drain the line until then
        self.stats = {"transactions": 0, "timeouts": 0, "garbage": 0, "drained_bytes": 0}

    def _drain(self) -> None:
        """Discard whatever a late reply still brings, until its window has passed."""
        assert self._dirty_until is not None
        while True:
            now = time.monotonic()
            end = max(self._dirty_until, now + self.silence_s)
            junk = self.transport.read(256, end)
            self.stats["drained_bytes"] += len(junk)
            if not junk and time.monotonic() >= self._dirty_until:
                break
        self._dirty_until = None
        self._quiet_from = time.monotonic()

    def transact(self, request: bytes, expect_len: int, timeout_s: float) -> bytes:
        """Send a request frame; return the validated reply frame (with CRC)."""
        if self._dirty_until is not None:
            self._drain()
        self.transport.discard_input()
        wait_s = self._quiet_from + self.silence_s - time.monotonic()
        if wait_s > 0:
            time.sleep(wait_s)

        sent_at = time.monotonic()
        deadline = sent_at + timeout_s
        self.stats["transactions"] += 1
        self.transport.write(request)
        try:
            reply = self._read_reply(request, expect_len, deadline)
        except RtuError as exc:
            if not isinstance(exc, RtuException):
                # A reply may still be on its way: drain it before the next request.
                self._dirty_until = sent_at + 2 * timeout_s
            raise
        finally:
            self._quiet_from = time.monotonic()
        return reply

    def _read_reply(self, request: bytes, expect_len: int, deadline: float) -> bytes:
        unit, function = request[0], request[1]
        head = self.transport.read(2, deadline)
        if len(head) < 2:
            self.stats["timeouts"] += 1
            raise RtuTimeout(f"unit {unit}: no reply" + (" (1 byte)" if head else ""))
        if head[0] != unit or head[1] & 0x7F != function:
            self.stats["garbage"] += 1
            raise RtuGarbage(
                f"unit {unit} function {function}: reply starts {head.hex(' ')}"
            )
        rest_len = 3 if head[1] & 0x80 else expect_len - 2
        rest = self.transport.read(rest_len, deadline)
        reply = head + rest
        if len(rest) < rest_len:
            self.stats["timeouts"] += 1
            raise RtuTimeout(f"unit {unit}: reply cut short at {len(reply)} bytes")
        if crc16(reply[:-2]) != struct.unpack("<H", reply[-2:])[0]:
            self.stats["garbage"] += 1
            raise RtuGarbage(f"unit {unit}: CRC error in {reply.hex(' ')}")
        if head[1] & 0x80:
            raise RtuException(unit, function, reply[2])
        if function in (1, 2, 3, 4) and reply[2] != expect_len - 5:
            self.stats["garbage"] += 1
            raise RtuGarbage(f"unit {unit}: byte count {reply[2]}, expected {expect_len - 5}")
        return reply

    def read(self, unit: int, table: str, address: int, count: int,
             timeout_s: float) -> list[int]:
        """Read registers (or bits, as 0/1) of one table."""
        function = READ_FUNCTIONS[table]
        reply = self.transact(read_request(unit, function, address, count),
                              reply_length(function, count), timeout_s)
        data = reply[3:-2]
        if function in (1, 2):
            return [data[i // 8] >> (i % 8) & 1 for i in range(count)]
        return list(struct.unpack(f">{count}H", data))

    def write_coil(self, unit: int, address: int, on: bool, timeout_s: float) -> None:
        """Function 05; the slave echoes the request."""
        request = frame(struct.pack(">BBHH", unit, WRITE_SINGLE_COIL, address,
                                    0xFF00 if on else 0))
        reply = self.transact(request, 8, timeout_s)
        if reply != request:
            self._dirty_until = time.monotonic()
            raise RtuGarbage(f"unit {unit}: write echo {reply.hex(' ')} differs")

    def close(self) -> None:
        self.transport.close()
