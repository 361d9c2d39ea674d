"""From a profile to block reads, and from block replies to quality-flagged samples."""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from typing import Any

from groundwatch.contract import Quality

from .codec import NUMERIC_TYPES, CodecError
from .profile import BIT_TABLES, MAX_READ_BITS, Point, Profile

_GOOD, _SENTINEL = Quality.GOOD, Quality.SENTINEL
_DEVICE_ERROR, _OUT_OF_RANGE = Quality.DEVICE_ERROR, Quality.OUT_OF_RANGE
_NO_RANGE: tuple[None, None] = (None, None)
_EMPTY: dict[int, int] = {}


@dataclass(frozen=True, slots=True)
class ReadBlock:
    """One Modbus read request: a table, a 0-based start address and a count."""

    table: str
    start: int
    count: int


# Not frozen: a frozen dataclass pays a setattr call per field, and a Sample is made
# for every point of every poll (see docs/bench.md). Treat it as immutable all the same.
@dataclass(slots=True)
class Sample:
    """A decoded point value with its quality; value is None when there is none."""

    point: str
    value: float | None
    quality: Quality
    unit: str


class DeviceMap:
    """The registers of one device instance: which blocks to read, how to decode them."""

    def __init__(
        self,
        profile: Profile,
        points: list[str] | None = None,
        address_offset: int = 0,
        ranges: dict[str, tuple[float | None, float | None]] | None = None,
    ):
        unknown = set(points or []) - profile.points.keys()
        if unknown:
            raise KeyError(f"profile {profile.name} has no point(s) {sorted(unknown)}")
        self.profile = profile
        self.address_offset = address_offset
        self.points: dict[str, Point] = {
            n: p for n, p in profile.points.items() if not points or n in points
        }
        self.ranges = {
            n: (p.plausible_min, p.plausible_max) for n, p in self.points.items()
        }
        self.ranges.update(ranges or {})
        self.blocks = self._plan()
        self._decoders = [self._decoder(n, p) for n, p in self.points.items()
                          if p.type != "string"]

    def wire(self, address: int) -> int:
        """0-based protocol address of a register number in this profile."""
        return address - self.profile.register_base + self.address_offset

    def _spans(self) -> dict[str, list[tuple[int, int]]]:
        spans: dict[str, list[tuple[int, int]]] = {}
        for p in self.points.values():
            if p.type == "string":
                continue
            spans.setdefault(p.table, []).append((self.wire(p.address), p.count))
            if p.quality_address is not None:
                spans[p.table].append((self.wire(p.quality_address), 1))
        return spans

    def _plan(self) -> list[ReadBlock]:
        """Coalesce the points' registers into as few reads as the protocol allows."""
        blocks = []
        for table, spans in sorted(self._spans().items()):
            limit = MAX_READ_BITS if table in BIT_TABLES else self.profile.max_read_registers
            spans = sorted(spans)
            start, end = spans[0][0], spans[0][0] + spans[0][1]
            for s, n in spans[1:]:
                merged_end = max(end, s + n)
                if s <= end + self.profile.max_gap and merged_end - start <= limit:
                    end = merged_end
                    continue
                blocks.append(ReadBlock(table, start, end - start))
                start, end = s, s + n
            blocks.append(ReadBlock(table, start, end - start))
        return blocks

    def _decoder(self, name: str, p: Point) -> tuple[Any, ...]:
        """What decode() needs of one point, worked out once per device."""
        addr = self.wire(p.address)
        quality = None if p.quality_address is None else self.wire(p.quality_address)
        codec: tuple[Any, ...] | None = None
        if p.type not in ("bool", "bit"):
            # Registers -> bytes in the point's byte order ("<H" writes BA), words in
            # its word order, then one unpack of the value: codec.decode, precompiled.
            code, n = NUMERIC_TYPES[p.type]
            words = struct.Struct(("<" if p.byte_order == "little" else ">") + "H" * n)
            codec = (words, struct.Struct(">" + code), p.word_order == "little")
        scaled = p.scale != 1 or bool(p.offset)
        return (name, p.type, p.table, addr, p.count, p.bit or 0, codec, quality,
                frozenset(p.sentinel), p.scale, p.offset, scaled, p.unit)

    def decode(self, data: dict[str, dict[int, int]]) -> list[Sample]:
        """Decode read replies ({table: {address: register or bit}}) into samples."""
        out = []
        ranges = self.ranges
        for (name, type_, table, addr, count, bit, codec, quality, sentinel, scale,
             offset, scaled, unit) in self._decoders:
            regs = data.get(table, _EMPTY)
            try:
                words = [regs[addr]] if count == 1 else [
                    regs[a] for a in range(addr, addr + count)
                ]
            except KeyError:
                out.append(Sample(name, None, Quality.COMM_LOST, unit))
                continue
            if codec is None:  # bool (a coil or input) or bit (of a status register)
                on = words[0] if type_ == "bool" else words[0] >> bit & 1
                out.append(Sample(name, float(bool(on)), _GOOD, unit))
                continue
            to_bytes, unpack, swap_words = codec
            try:
                raw = unpack.unpack(to_bytes.pack(*(words[::-1] if swap_words
                                                     else words)))[0]
            except struct.error:
                raise CodecError(f"register values {words!r} are not 16-bit") from None
            if isinstance(raw, float) and math.isnan(raw) or raw in sentinel:
                out.append(Sample(name, None, _SENTINEL, unit))
                continue
            value = raw * scale + offset if scaled else float(raw)
            if not math.isfinite(value):
                out.append(Sample(name, None, _SENTINEL, unit))
                continue
            if quality is not None and regs.get(quality):
                out.append(Sample(name, value, _DEVICE_ERROR, unit))
                continue
            low, high = ranges.get(name, _NO_RANGE)
            if (low is not None and value < low) or (high is not None and value > high):
                out.append(Sample(name, value, _OUT_OF_RANGE, unit))
                continue
            out.append(Sample(name, value, _GOOD, unit))
        return out
