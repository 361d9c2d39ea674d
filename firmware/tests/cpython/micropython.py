"""Stand-in for MicroPython's `micropython` module when the tests run under CPython."""


def const(value):
    return value
