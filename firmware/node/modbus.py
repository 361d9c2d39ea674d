"""Modbus RTU slave: CRC-16, functions 01/02/03/04/05/06, exception responses.

Frames end at 3.5 character times of silence (Modbus over serial line v1.02,
2.5.1.1); above 19200 baud the spec fixes the silence at 1.75 ms. Every buffer is
allocated once; serving a request allocates nothing.
"""

from array import array

from micropython import const

ILLEGAL_FUNCTION = const(1)
ILLEGAL_ADDRESS = const(2)
ILLEGAL_VALUE = const(3)
FRAME_MAX = const(256)  # an RTU ADU is at most 256 bytes (spec 2.5.1)


def _crc_table():
    t = array("H", bytes(512))
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0xA001 if c & 1 else c >> 1
        t[i] = c
    return t


CRC_TABLE = _crc_table()


def crc16(buf, n):
    """CRC-16/MODBUS of buf[:n] (poly 0xA001 reflected, init 0xFFFF)."""
    crc = 0xFFFF
    t = CRC_TABLE
    for i in range(n):
        crc = (crc >> 8) ^ t[(crc ^ buf[i]) & 0xFF]
    return crc


def silence_us(baudrate):
    """3.5 character times of 11 bits; 1750 us above 19200 baud (spec 2.5.1.1)."""
    if baudrate > 19200:
        return 1750
    return 38500000 // baudrate + 1


class Tables:
    """The slave's data: preallocated, shared with the application that fills it."""

    def __init__(self, n_coils, n_discrete, n_holding, n_input):
        self.coils = bytearray(n_coils)
        self.discrete = bytearray(n_discrete)
        self.holding = array("H", bytes(2 * n_holding))
        self.input = array("H", bytes(2 * n_input))
        # Which holding registers function 06 may write; the rest answer exception 02.
        self.holding_writable = bytearray(n_holding)

    def write_coil(self, address, on):
        """Called for function 05; the application decides what the coil drives."""
        self.coils[address] = 1 if on else 0

    def write_register(self, address, value):
        """Called for function 06 on a writable holding register."""
        self.holding[address] = value


class Slave:
    """Turns request frames into reply frames against a Tables object."""

    def __init__(self, unit_id, tables):
        self.unit_id = unit_id
        self.tables = tables
        self.tx = bytearray(FRAME_MAX)
        self.requests = 0
        self.bad_crc = 0
        self.exceptions = 0

    def handle(self, req, n):
        """Answer the frame req[:n]; return the reply's length in self.tx (0: none)."""
        if n < 4:
            return 0
        crc = crc16(req, n - 2)
        if req[n - 2] != crc & 0xFF or req[n - 1] != crc >> 8:
            self.bad_crc += 1
            return 0
        unit = req[0]
        if unit != self.unit_id and unit != 0:
            return 0
        self.requests += 1
        n = self._dispatch(req, n - 2)
        if unit == 0:  # broadcast: writes act, nothing answers (spec 2.1)
            return 0
        return n

    def _dispatch(self, req, n):
        f = req[1]
        t = self.tables
        if f < 1 or f > 6:
            return self._exception(f, ILLEGAL_FUNCTION)
        if n != 6:
            return self._exception(f, ILLEGAL_VALUE)
        address = req[2] << 8 | req[3]
        value = req[4] << 8 | req[5]
        if f <= 2:
            return self._read_bits(f, t.coils if f == 1 else t.discrete, address, value)
        if f <= 4:
            return self._read_regs(f, t.holding if f == 3 else t.input, address, value)
        if f == 5:
            if value != 0xFF00 and value != 0:
                return self._exception(f, ILLEGAL_VALUE)
            if address >= len(t.coils):
                return self._exception(f, ILLEGAL_ADDRESS)
            t.write_coil(address, value == 0xFF00)
            return self._echo(req)
        if address >= len(t.holding) or not t.holding_writable[address]:
            return self._exception(f, ILLEGAL_ADDRESS)
        t.write_register(address, value)
        return self._echo(req)

    def _read_bits(self, f, bits, address, count):
        if count < 1 or count > 2000:
            return self._exception(f, ILLEGAL_VALUE)
        if address + count > len(bits):
            return self._exception(f, ILLEGAL_ADDRESS)
        tx = self.tx
        nbytes = (count + 7) >> 3
        tx[2] = nbytes
        for i in range(nbytes):
            tx[3 + i] = 0
        for i in range(count):
            if bits[address + i]:
                tx[3 + (i >> 3)] |= 1 << (i & 7)
        return self._finish(f, 3 + nbytes)

    def _read_regs(self, f, regs, address, count):
        if count < 1 or count > 125:
            return self._exception(f, ILLEGAL_VALUE)
        if address + count > len(regs):
            return self._exception(f, ILLEGAL_ADDRESS)
        tx = self.tx
        tx[2] = 2 * count
        j = 3
        for i in range(address, address + count):
            v = regs[i]
            tx[j] = v >> 8
            tx[j + 1] = v & 0xFF
            j += 2
        return self._finish(f, j)

    def _echo(self, req):
        tx = self.tx
        for i in range(2, 6):
            tx[i] = req[i]
        return self._finish(req[1], 6)

    def _exception(self, f, code):
        self.exceptions += 1
        self.tx[2] = code
        return self._finish(f | 0x80, 3)

    def _finish(self, f, n):
        tx = self.tx
        tx[0] = self.unit_id
        tx[1] = f
        crc = crc16(tx, n)
        tx[n] = crc & 0xFF
        tx[n + 1] = crc >> 8
        return n + 2


class Framer:
    """Collects bytes into a frame; a silence of silence_us ends it."""

    def __init__(self, baudrate):
        self.rx = bytearray(FRAME_MAX)
        self.chunk = bytearray(64)  # what one UART read may return
        self.n = 0
        self.overflow = False
        self.last_us = 0
        self.silence_us = silence_us(baudrate)

    def got(self, k, now_us):
        """Append the first k bytes of self.chunk."""
        if not k:
            return
        self.last_us = now_us
        rx, chunk, n = self.rx, self.chunk, self.n
        for i in range(k):
            if n >= FRAME_MAX:
                self.overflow = True  # too long for RTU: dropped at the silence
                n = 0
            rx[n] = chunk[i]
            n += 1
        self.n = n

    def complete(self, now_us, ticks_diff):
        """Length of a finished frame (0 if none); the caller then calls reset()."""
        if self.n and ticks_diff(now_us, self.last_us) >= self.silence_us:
            if self.overflow:
                self.reset()
                return 0
            return self.n
        return 0

    def reset(self):
        self.n = 0
        self.overflow = False
