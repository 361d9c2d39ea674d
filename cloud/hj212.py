"""HJ 212 packets: the national protocol for sending monitoring data to a platform.

HJ 212-2017 is what municipal platforms have spoken since 2017; HJ 212-2025 replaces
it from 2026-01-01. A packet is ASCII (the data segment may carry UTF-8):

    ## LLLL <data segment> CCCC CR LF

- LLLL: the data segment's length in bytes, 4 decimal digits;
- the data segment: ``QN=...;ST=..;CN=....;PW=...;MN=...;Flag=n;CP=&&...&&``, fields
  joined by ``;``, each ``name=value``; CP carries the data between ``&&`` markers, in
  which ``;`` separates items, ``,`` the values of one item and ``=`` joins a name and
  its value; names are case-sensitive;
- CCCC: the CRC of the data segment only, as 4 upper-case hex digits.

The CRC is *not* CRC-16/MODBUS, although it uses the same polynomial: the register
starts at 0xFFFF and each byte is folded in as ``reg = (reg >> 8) ^ byte`` before the 8
shift-and-XOR steps. Several public implementations use the Modbus CRC instead; the
tests check ours on the standard's Annex A packet.

Flag (HJ 212-2017, 6.3.3) holds, most significant bit first, the version V5..V0, then
D (the packet is one of several: PNUM and PNO follow) and A (an answer is wanted).
Version 000001 is HJ 212-2017, so Flag=5 is "2017, answer wanted", and replies carry
Flag=4. The version bits are configuration: agree them with the platform.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone

HEADER = "##"
TRAILER = "\r\n"
MAX_DATA_BYTES = 9999  # four decimal digits; the standard caps a packet at 1024 bytes
STANDARD_MAX_DATA_BYTES = 1024
REQUIRED_FIELDS = ("ST", "CN", "PW", "MN", "CP")
FLAG_ANSWER = 0x01  # A: the receiver must answer
FLAG_SPLIT = 0x02  # D: one of several packets (PNUM, PNO present)
VERSION_2017 = 0b000001

_FIELD_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9]*$")


class Hj212Error(ValueError):
    """A packet that breaks HJ 212's framing, length, CRC or data-segment rules."""


def crc(data: bytes) -> int:
    """The HJ 212 CRC of a data segment (HJ 212-2017 Annex A)."""
    reg = 0xFFFF
    for byte in data:
        reg = (reg >> 8) ^ byte
        for _ in range(8):
            carry = reg & 1
            reg >>= 1
            if carry:
                reg ^= 0xA001
    return reg


def flag(version: int = VERSION_2017, answer: bool = True, split: bool = False) -> int:
    """The Flag field: version bits, then D (split) and A (answer wanted)."""
    if not 0 <= version <= 0b111111:
        raise ValueError(f"version {version} does not fit the 6 version bits")
    return version << 2 | (FLAG_SPLIT if split else 0) | (FLAG_ANSWER if answer else 0)


def qn(when: datetime) -> str:
    """A request number: the time to the millisecond, YYYYMMDDhhmmsszzz."""
    return when.strftime("%Y%m%d%H%M%S") + f"{when.microsecond // 1000:03d}"


@dataclass(frozen=True, slots=True)
class Packet:
    """A decoded packet: its data-segment fields in order, and CP's items."""

    fields: dict[str, str]
    cp: list[dict[str, str]] = field(default_factory=list)

    @property
    def flag(self) -> int | None:
        value = self.fields.get("Flag")
        return int(value) if value is not None and value.isdigit() else None

    @property
    def version(self) -> int | None:
        return None if self.flag is None else self.flag >> 2

    @property
    def wants_answer(self) -> bool:
        return bool((self.flag or 0) & FLAG_ANSWER)


def encode_cp(items: list[dict[str, str]]) -> str:
    """CP's data: items separated by ';', the name=value pairs of one item by ','."""
    return ";".join(",".join(f"{k}={v}" for k, v in item.items()) for item in items)


def build(fields: dict[str, str], cp: list[dict[str, str]]) -> str:
    """A framed packet, CR LF included, from data-segment fields and CP items."""
    for name, value in fields.items():
        if not _FIELD_NAME.match(name) or any(c in value for c in ";&\r\n"):
            raise Hj212Error(f"field {name}={value!r} cannot be framed")
    head = ";".join(f"{k}={v}" for k, v in fields.items() if k != "CP")
    data = f"{head};CP=&&{encode_cp(cp)}&&".encode()
    if len(data) > MAX_DATA_BYTES:
        raise Hj212Error(f"data segment of {len(data)} bytes does not fit 4 digits")
    return f"{HEADER}{len(data):04d}{data.decode()}{crc(data):04X}{TRAILER}"


def parse(packet: str | bytes, strict_length: bool = False) -> Packet:
    """Check framing, length and CRC, then decode the data segment.

    Raises Hj212Error naming the first fault. A trailing CR LF is optional (lines
    read from a log usually lost it); with strict_length the standard's 1024-byte
    cap on the data segment applies too.
    """
    raw = packet.encode() if isinstance(packet, str) else bytes(packet)
    raw = raw.removesuffix(b"\n").removesuffix(b"\r")
    if not raw.startswith(b"##"):
        raise Hj212Error("does not start with ##")
    if len(raw) < 2 + 4 + 4:
        raise Hj212Error(f"too short for a packet ({len(raw)} bytes)")
    digits = raw[2:6]
    if not digits.isdigit():
        raise Hj212Error(f"length field {digits.decode(errors='replace')!r} is not 4 "
                         "decimal digits")
    length = int(digits)
    data, tail = raw[6:-4], raw[-4:]
    if len(data) != length:
        raise Hj212Error(f"length field says {length} bytes, data segment has "
                         f"{len(data)}")
    if strict_length and length > STANDARD_MAX_DATA_BYTES:
        raise Hj212Error(f"data segment of {length} bytes is over the standard's "
                         f"{STANDARD_MAX_DATA_BYTES}")
    if not re.fullmatch(rb"[0-9A-Fa-f]{4}", tail):
        raise Hj212Error(f"CRC field {tail.decode(errors='replace')!r} is not 4 hex "
                         "digits")
    expected = crc(data)
    if int(tail, 16) != expected:
        raise Hj212Error(f"CRC {tail.decode()} does not match the data segment's "
                         f"{expected:04X}")
    try:
        text = data.decode()
    except UnicodeDecodeError as exc:
        raise Hj212Error(f"data segment is not UTF-8: {exc}") from None
    return _decode_segment(text)


def _decode_segment(text: str) -> Packet:
    cp_at = text.find("CP=&&")
    if cp_at < 0 or not text.endswith("&&") or len(text) < cp_at + 7:
        raise Hj212Error("no CP=&&...&& at the end of the data segment")
    head, cp_text = text[:cp_at], text[cp_at + 5:-2]
    fields: dict[str, str] = {}
    for part in filter(None, head.split(";")):
        name, eq, value = part.partition("=")
        if not eq or not _FIELD_NAME.match(name):
            raise Hj212Error(f"data segment field {part!r} is not name=value")
        if name in fields:
            raise Hj212Error(f"field {name} appears twice")
        fields[name] = value
    fields["CP"] = cp_text
    missing = [f for f in REQUIRED_FIELDS if f not in fields]
    if missing:
        raise Hj212Error(f"missing field(s) {', '.join(missing)}")
    if "Flag" in fields and not fields["Flag"].isdigit():
        raise Hj212Error(f"Flag={fields['Flag']!r} is not a number")
    cp: list[dict[str, str]] = []
    for item in filter(None, cp_text.split(";")):
        pairs: dict[str, str] = {}
        for pair in item.split(","):
            name, eq, value = pair.partition("=")
            if not eq or not name:
                raise Hj212Error(f"CP item {item!r} has {pair!r}, not name=value")
            pairs[name] = value
        cp.append(pairs)
    return Packet(fields, cp)


def verify_line(line: str) -> dict[str, object]:
    """One line of `groundwatch hj212 verify`: ok, error, and what was decoded."""
    try:
        packet = parse(line)
    except Hj212Error as exc:
        return {"ok": False, "error": str(exc)}
    out: dict[str, object] = {"ok": True, "error": None}
    for key in ("QN", "ST", "CN", "MN", "Flag"):
        if key in packet.fields:
            out[key.lower()] = packet.fields[key]
    out["version"] = packet.version
    out["items"] = len(packet.cp)
    return out


BEIJING = timezone(timedelta(hours=8))


def now_beijing() -> datetime:
    """Beijing time, which platforms expect in QN and DataTime."""
    return datetime.now(UTC).astimezone(BEIJING)
