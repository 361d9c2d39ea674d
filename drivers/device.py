"""From a profile to block reads, and from block replies to quality-flagged samples."""

from __future__ import annotations

import math
from dataclasses import dataclass

from groundwatch.contract import Quality

from .codec import decode, get_bit
from .profile import BIT_TABLES, MAX_READ_BITS, Point, Profile


@dataclass(frozen=True, slots=True)
class ReadBlock:
    """One Modbus read request: a table, a 0-based start address and a count."""

    table: str
    start: int
    count: int


@dataclass(frozen=True, slots=True)
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

    def decode(self, data: dict[str, dict[int, int]]) -> list[Sample]:
        """Decode read replies ({table: {address: register or bit}}) into samples."""
        out = []
        for name, p in self.points.items():
            if p.type == "string":
                continue
            regs = data.get(p.table, {})
            addr = self.wire(p.address)
            try:
                words = [regs[a] for a in range(addr, addr + p.count)]
            except KeyError:
                out.append(Sample(name, None, Quality.COMM_LOST, p.unit))
                continue
            out.append(self._decode_point(name, p, words, regs))
        return out

    def _decode_point(
        self, name: str, p: Point, words: list[int], regs: dict[int, int]
    ) -> Sample:
        if p.type == "bool":
            return Sample(name, float(bool(words[0])), Quality.GOOD, p.unit)
        if p.type == "bit":
            return Sample(name, float(get_bit(words[0], p.bit or 0)), Quality.GOOD, p.unit)

        raw = decode(words, p.type, p.byte_order or "big", p.word_order or "big")
        assert isinstance(raw, (int, float))
        if isinstance(raw, float) and math.isnan(raw) or raw in p.sentinel:
            return Sample(name, None, Quality.SENTINEL, p.unit)
        value = raw * p.scale + p.offset if (p.scale != 1 or p.offset) else float(raw)
        if not math.isfinite(value):
            return Sample(name, None, Quality.SENTINEL, p.unit)
        if p.quality_address is not None and regs.get(self.wire(p.quality_address)):
            return Sample(name, value, Quality.DEVICE_ERROR, p.unit)
        low, high = self.ranges.get(name, (None, None))
        if (low is not None and value < low) or (high is not None and value > high):
            return Sample(name, value, Quality.OUT_OF_RANGE, p.unit)
        return Sample(name, value, Quality.GOOD, p.unit)
