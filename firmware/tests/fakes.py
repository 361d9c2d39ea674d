"""Test doubles of the hardware interface and the clocks; they allocate nothing."""

from node import modbus


class Clock:
    """Millisecond and microsecond ticks the test moves by hand."""

    def __init__(self):
        self.us = 0

    def ms(self):
        return self.us // 1000

    def ticks_us(self):
        return self.us

    def advance_ms(self, ms):
        self.us += 1000 * ms


def ticks_diff(a, b):
    return a - b


class FakeHw:
    """Pins, ADC, UART and watchdog of a board, in memory."""

    def __init__(self, n_di=4, n_ai=2, n_relays=2):
        self.di = bytearray(n_di)
        self.adc = [0] * n_ai
        self.adc_broken = bytearray(n_ai)
        self.relays = bytearray(n_relays)
        self.relay_writes = 0
        self.rx = bytearray(256)
        self.rx_n = 0
        self.tx = bytearray(256)
        self.tx_n = 0
        self.feeds = 0
        self.reset_by_watchdog = False
        self.fail_refresh = False

    # the interface
    def refresh(self, now_ms):
        if self.fail_refresh:
            raise RuntimeError("injected fault")

    def read_di(self, i):
        return self.di[i]

    def read_adc(self, i):
        if self.adc_broken[i]:
            raise OSError(5)
        return self.adc[i]

    def set_relay(self, i, on):
        self.relays[i] = 1 if on else 0
        self.relay_writes += 1

    def uart_wait(self, ms):
        pass

    def uart_readinto(self, buf):
        n = self.rx_n
        for i in range(n):
            buf[i] = self.rx[i]
        self.rx_n = 0
        return n

    def uart_write(self, buf):
        for i in range(len(buf)):
            self.tx[self.tx_n + i] = buf[i]
        self.tx_n += len(buf)

    def watchdog_start(self, ms):
        pass

    def watchdog_feed(self):
        self.feeds += 1

    def watchdog_reset(self):
        return self.reset_by_watchdog

    def stop(self):
        pass

    # for the tests
    def send(self, frame):
        for i in range(len(frame)):
            self.rx[i] = frame[i]
        self.rx_n = len(frame)

    def take_reply(self):
        out = bytes(self.tx[:self.tx_n])
        self.tx_n = 0
        return out


def adc_for_ma(ma, shunt_ohms=150.0, vref_mv=3300):
    """The read_u16() value a 12-bit ADC gives for a loop current through the shunt."""
    count = int(ma * shunt_ohms / vref_mv * 4095 + 0.5)
    count = max(0, min(4095, count))
    return count << 4 | count >> 8


def frame(*pdu):
    b = bytearray(pdu)
    crc = modbus.crc16(b, len(b))
    b.append(crc & 0xFF)
    b.append(crc >> 8)
    return b
