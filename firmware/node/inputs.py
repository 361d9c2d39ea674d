"""Debounced digital inputs and 4-20 mA analog inputs; no allocation per sample."""

from array import array

from micropython import const

# NAMUR NE 43: 3.8 to 20.5 mA carries a measurement; <= 3.6 mA or >= 21 mA signals a
# failure. Below 3.6 mA a current loop is open (wire break, dead transmitter).
OPEN_LOOP_UA = const(3600)
OVER_RANGE_UA = const(21000)
STATUS_OK = const(0)
STATUS_OPEN_LOOP = const(1)
STATUS_OVER_RANGE = const(2)
STATUS_ADC_ERROR = const(3)


class Debouncer:
    """A level counts only once it has held for debounce_ms (on an injected clock)."""

    def __init__(self, n, debounce_ms, ticks_diff):
        self.debounce_ms = debounce_ms
        self.ticks_diff = ticks_diff
        self.raw = bytearray(n)
        self.stable = bytearray(n)
        self.since = array("i", bytes(4 * n))

    def update(self, i, level, now_ms):
        """Feed input i's raw level; return its debounced state."""
        level = 1 if level else 0
        if level != self.raw[i]:
            self.raw[i] = level
            self.since[i] = now_ms
        elif level != self.stable[i] and self.ticks_diff(
                now_ms, self.since[i]) >= self.debounce_ms:
            self.stable[i] = level
        return self.stable[i]


def full_scale_ua(vref_mv, shunt_ohms):
    """The loop current that puts vref across the shunt: mA = volts / ohms * 1000."""
    return int(vref_mv * 1000 / shunt_ohms + 0.5)


def loop_ua(adc_u16, full_ua):
    """Loop current in µA from a read_u16() value of a 12-bit ADC."""
    # read_u16 scales the 12-bit count to 16 bits; integer maths on the 12-bit count
    # stays within a small int (31 bits) on a 32-bit port, so nothing is allocated.
    return ((adc_u16 >> 4) * full_ua + 2047) // 4095


def loop_status(ua):
    if ua <= OPEN_LOOP_UA:
        return STATUS_OPEN_LOOP
    if ua >= OVER_RANGE_UA:
        return STATUS_OVER_RANGE
    return STATUS_OK


def percent_x100(ua):
    """Share of the 4-20 mA span, x100 (4 mA = 0, 20 mA = 10000), clamped to int16."""
    p = (ua - 4000) * 10000 // 16000
    if p > 32767:
        return 32767
    if p < -32768:
        return -32768
    return p
