"""Register codec: Modbus 16-bit registers <-> numbers, in every byte and word order.

Modbus fixes only the byte order inside one register (big-endian, "AB"). Values wider
than a register are laid out however the vendor chose, so each point names both:

    byte_order  order of the two bytes inside each register ("big" = AB, "little" = BA)
    word_order  order of the registers of one value ("big" = high word first)

Float32 10.0 in the four layouts (see docs/profiles.md): ABCD 4120 0000,
CDAB 0000 4120, BADC 2041 0000, DCBA 0000 2041.
"""

from __future__ import annotations

import struct
from typing import Literal

Order = Literal["big", "little"]

# type name -> (struct code, registers)
NUMERIC_TYPES: dict[str, tuple[str, int]] = {
    "int16": ("h", 1),
    "uint16": ("H", 1),
    "int32": ("i", 2),
    "uint32": ("I", 2),
    "int64": ("q", 4),
    "uint64": ("Q", 4),
    "float32": ("f", 2),
    "float64": ("d", 4),
}


class CodecError(ValueError):
    """Registers that cannot be decoded as asked (wrong count, value out of range)."""


def register_count(type_name: str, length: int = 0) -> int:
    """How many registers a value of this type occupies."""
    if type_name == "string":
        return (length + 1) // 2
    if type_name == "bit":
        return 1
    return NUMERIC_TYPES[type_name][1]


def _to_bytes(registers: list[int], byte_order: Order, word_order: Order) -> bytes:
    regs = registers if word_order == "big" else registers[::-1]
    out = bytearray()
    for reg in regs:
        if not 0 <= reg <= 0xFFFF:
            raise CodecError(f"register value {reg!r} is not 16-bit")
        hi, lo = reg >> 8, reg & 0xFF
        out += bytes((hi, lo)) if byte_order == "big" else bytes((lo, hi))
    return bytes(out)


def _from_bytes(data: bytes, byte_order: Order, word_order: Order) -> list[int]:
    regs = []
    for i in range(0, len(data), 2):
        hi, lo = (data[i], data[i + 1]) if byte_order == "big" else (data[i + 1], data[i])
        regs.append(hi << 8 | lo)
    return regs if word_order == "big" else regs[::-1]


def decode(
    registers: list[int],
    type_name: str,
    byte_order: Order = "big",
    word_order: Order = "big",
) -> int | float | str:
    """Decode the registers of one value into a Python number (or string)."""
    if type_name == "string":
        raw = _to_bytes(registers, byte_order, "big")
        return raw.split(b"\0", 1)[0].decode("ascii", errors="replace").strip()
    code, count = NUMERIC_TYPES[type_name]
    if len(registers) != count:
        raise CodecError(f"{type_name} needs {count} registers, got {len(registers)}")
    return struct.unpack(">" + code, _to_bytes(registers, byte_order, word_order))[0]


def encode(
    value: int | float | str,
    type_name: str,
    byte_order: Order = "big",
    word_order: Order = "big",
    length: int = 0,
) -> list[int]:
    """Encode one value into registers; the inverse of decode()."""
    if type_name == "string":
        raw = str(value).encode("ascii")[: length or None]
        raw = raw.ljust(2 * register_count("string", length or len(raw)), b"\0")
        return _from_bytes(raw, byte_order, "big")
    code, _ = NUMERIC_TYPES[type_name]
    if code not in "fd":
        value = int(round(value))  # type: ignore[arg-type]
    try:
        data = struct.pack(">" + code, value)
    except struct.error as exc:
        raise CodecError(f"{value!r} does not fit {type_name}: {exc}") from None
    return _from_bytes(data, byte_order, word_order)


def get_bit(register: int, bit: int) -> bool:
    """Bit `bit` (0 = least significant) of one register."""
    return bool(register >> bit & 1)
