"""Register codec: table-driven (registers -> value) in all four byte/word orders."""

import math

import pytest

from drivers.codec import CodecError, decode, encode

# The golden vectors of docs/profiles.md (float32 10.0 in ABCD, CDAB, BADC, DCBA).
GOLDEN_FLOAT32_10 = [
    ("big", "big", [0x4120, 0x0000]),
    ("big", "little", [0x0000, 0x4120]),
    ("little", "big", [0x2041, 0x0000]),
    ("little", "little", [0x0000, 0x2041]),
]


@pytest.mark.parametrize(("byte_order", "word_order", "registers"), GOLDEN_FLOAT32_10)
def test_float32_golden_vectors(byte_order, word_order, registers):
    assert decode(registers, "float32", byte_order, word_order) == 10.0
    assert encode(10.0, "float32", byte_order, word_order) == registers


TABLE = [
    ([0xFFFF], "int16", "big", "big", -1),
    ([0xFFFF], "uint16", "big", "big", 65535),
    ([0x8000], "int16", "big", "big", -32768),
    ([0x0001, 0x0000], "int32", "big", "little", 1),
    ([0x0000, 0x0001], "int32", "big", "big", 1),
    ([0xFFFF, 0xFFFE], "int32", "big", "big", -2),
    ([0xFFFE, 0xFFFF], "int32", "big", "little", -2),
    ([0x0100], "uint16", "little", "big", 1),
    ([0x0001, 0xE240], "uint32", "big", "big", 123456),
    ([0x3FF0, 0, 0, 0], "float64", "big", "big", 1.0),
    ([0, 0, 0, 0x3FF0], "float64", "big", "little", 1.0),
    ([0x4154, 0x414E, 0x4B31, 0x0000], "string", "big", "big", "ATANK1"),
]


@pytest.mark.parametrize(("registers", "type_name", "bo", "wo", "expected"), TABLE)
def test_decode_table(registers, type_name, bo, wo, expected):
    assert decode(registers, type_name, bo, wo) == expected


def test_nan_registers_decode_to_nan():
    assert math.isnan(decode([0xFFFF, 0xFFFF], "float32"))


def test_wrong_register_count_is_an_error():
    with pytest.raises(CodecError, match="float32 needs 2 registers"):
        decode([0x4120], "float32")


@pytest.mark.parametrize("type_name", ["int16", "uint16", "int32", "uint32", "float64"])
@pytest.mark.parametrize("bo", ["big", "little"])
@pytest.mark.parametrize("wo", ["big", "little"])
def test_round_trip(type_name, bo, wo):
    value = 1234 if type_name != "float64" else -1234.5678
    assert decode(encode(value, type_name, bo, wo), type_name, bo, wo) == value


def test_value_out_of_type_range_is_refused():
    with pytest.raises(CodecError, match="does not fit int16"):
        encode(40000, "int16")
