"""The uplink contract shared by the gateway and the cloud receiver.

Both sides import this module and nothing else of each other, so a gateway needs none
of the cloud's code. The contract is versioned; docs/uplink.md describes it for people.

Topics, all under ``groundwatch/{site}/{gateway}/``:

- ``data``   gateway -> cloud, QoS 1: a batch of records (readings and events).
- ``ack``    cloud -> gateway, QoS 1: the sequence ranges the receiver has stored.
- ``status`` gateway -> cloud, retained: ``online`` / ``offline`` (the MQTT will).
- ``health`` gateway -> cloud, QoS 1, retained: the gateway's counters (state, not a
  record: it never enters the outbox, and each one replaces the one before).
- ``command`` cloud -> gateway, QoS 1: an operator's command (acknowledge an alarm,
  maintenance on or off); the gateway answers with a ``command`` event record.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Iterable
from datetime import datetime
from enum import StrEnum
from typing import Any

CONTRACT_VERSION = 1
TOPIC_ROOT = "groundwatch"


class Quality(StrEnum):
    """Why a value is, or is not, to be trusted. One vocabulary, driver to cloud."""

    GOOD = "good"
    OUT_OF_RANGE = "out_of_range"  # outside the point's plausibility range
    SENTINEL = "sentinel"  # the device's own "no value" marker (offline value, NaN)
    DEVICE_ERROR = "device_error"  # the device said so: exception or quality register
    COMM_LOST = "comm_lost"  # no answer, or garbage, within the deadline
    STALE = "stale"  # the device answers but the value stopped updating
    MAINTENANCE = "maintenance"  # point or device in maintenance mode
    CLOCK_UNSYNCED = "clock_unsynced"  # taken before the gateway clock was synchronised


class ContractError(ValueError):
    """A message that does not follow the uplink contract."""


def data_topic(site: str, gateway: str) -> str:
    return f"{TOPIC_ROOT}/{site}/{gateway}/data"


def ack_topic(site: str, gateway: str) -> str:
    return f"{TOPIC_ROOT}/{site}/{gateway}/ack"


def status_topic(site: str, gateway: str) -> str:
    return f"{TOPIC_ROOT}/{site}/{gateway}/status"


def health_topic(site: str, gateway: str) -> str:
    return f"{TOPIC_ROOT}/{site}/{gateway}/health"


def command_topic(site: str, gateway: str) -> str:
    return f"{TOPIC_ROOT}/{site}/{gateway}/command"


DATA_SUBSCRIPTION = f"{TOPIC_ROOT}/+/+/data"
STATUS_SUBSCRIPTION = f"{TOPIC_ROOT}/+/+/status"
HEALTH_SUBSCRIPTION = f"{TOPIC_ROOT}/+/+/health"


def split_topic(topic: str) -> tuple[str, str, str]:
    """Return (site, gateway, leaf) of a contract topic."""
    parts = topic.split("/")
    if len(parts) != 4 or parts[0] != TOPIC_ROOT or not parts[1] or not parts[2]:
        raise ContractError(f"topic {topic!r} is not groundwatch/{{site}}/{{gateway}}/leaf")
    return parts[1], parts[2], parts[3]


# A data payload is either plain JSON (its first byte is "{") or this envelope: the
# magic, one byte of envelope version, then a zlib stream (RFC 1950) of the same JSON.
COMPRESSED_MAGIC = b"GWZ"
COMPRESSED_VERSION = 1
# The most a payload may inflate to: a receiver stops decompressing beyond it, so a
# small payload cannot expand into a memory exhaustion (a "zip bomb").
MAX_BATCH_BYTES = 1 << 20


def encode_batch(
    site: str, gateway: str, batch_id: int, records: list[dict[str, Any]],
    historical: bool = False, compress: bool = False,
) -> bytes:
    """Serialise one batch of records for the data topic, zlib-enveloped if asked."""
    body = {
        "v": CONTRACT_VERSION,
        "site": site,
        "gateway": gateway,
        "batch": batch_id,
        "historical": historical,
        "records": records,
    }
    text = json.dumps(body, separators=(",", ":"), allow_nan=False).encode()
    if not compress:
        return text
    return COMPRESSED_MAGIC + bytes([COMPRESSED_VERSION]) + zlib.compress(text, 6)


def unwrap_payload(payload: bytes, max_bytes: int = MAX_BATCH_BYTES) -> bytes:
    """The JSON text of a data payload, inflated if enveloped; at most max_bytes."""
    if payload[:1] == b"{":
        if len(payload) > max_bytes:
            raise ContractError(f"payload of {len(payload)} bytes is over the "
                                f"{max_bytes}-byte limit")
        return payload
    header = COMPRESSED_MAGIC + bytes([COMPRESSED_VERSION])
    if payload[:len(COMPRESSED_MAGIC)] != COMPRESSED_MAGIC:
        raise ContractError("payload is neither JSON nor a compressed envelope")
    if payload[:len(header)] != header:
        raise ContractError(f"unsupported compressed envelope version "
                            f"{payload[len(COMPRESSED_MAGIC):len(header)]!r}")
    inflater = zlib.decompressobj()
    try:
        text = inflater.decompress(payload[len(header):], max_bytes + 1)
    except zlib.error as exc:
        raise ContractError(f"compressed payload is corrupt: {exc}") from None
    if len(text) > max_bytes or inflater.unconsumed_tail:
        raise ContractError(f"compressed payload inflates beyond the {max_bytes}-byte "
                            "limit")
    if not inflater.eof:
        raise ContractError("compressed payload is truncated")
    return text


_READING_KEYS = {"seq", "kind", "ts", "device", "point", "value", "quality"}
_EVENT_KEYS = {"seq", "kind", "ts", "source", "event", "state"}


def decode_batch(payload: bytes, max_bytes: int = MAX_BATCH_BYTES) -> dict[str, Any]:
    """Parse and check a data-topic payload; raise ContractError naming the fault."""
    body = decode_envelope(payload, max_bytes)
    for i, rec in enumerate(body["records"]):
        check_record(i, rec)
    return body


def _parse_json(payload: bytes | str, what: str) -> Any:
    """JSON of a message; ContractError names the message kind if it is not JSON."""
    try:
        return json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ContractError(f"{what} is not JSON: {exc}") from None


def decode_envelope(payload: bytes, max_bytes: int = MAX_BATCH_BYTES) -> dict[str, Any]:
    """Parse a data-topic payload (plain or compressed) and check all but its records."""
    text = unwrap_payload(payload, max_bytes)
    body = _parse_json(text, "payload")
    if not isinstance(body, dict):
        raise ContractError("payload is not a JSON object")
    if body.get("v") != CONTRACT_VERSION:
        raise ContractError(f"unsupported contract version {body.get('v')!r}")
    for key in ("site", "gateway"):
        if not isinstance(body.get(key), str) or not body[key]:
            raise ContractError(f"{key}: missing or not a string")
    records = body.get("records")
    if not isinstance(records, list):
        raise ContractError("records: missing or not a list")
    return body


def record_seq(rec: Any) -> int | None:
    """The record's sequence number if it has a valid one, else None."""
    seq = rec.get("seq") if isinstance(rec, dict) else None
    ok = isinstance(seq, int) and not isinstance(seq, bool) and seq >= 1
    return seq if ok else None


def check_record(i: int, rec: Any) -> None:
    """Raise ContractError if records[i] does not follow the contract."""
    if not isinstance(rec, dict):
        raise ContractError(f"records[{i}]: not an object")
    kind = rec.get("kind")
    required = {"reading": _READING_KEYS, "event": _EVENT_KEYS}.get(str(kind))
    if required is None:
        raise ContractError(f"records[{i}].kind: {kind!r} is not reading or event")
    missing = required - rec.keys()
    if missing:
        raise ContractError(f"records[{i}]: missing {sorted(missing)}")
    if not isinstance(rec["seq"], int) or isinstance(rec["seq"], bool) or rec["seq"] < 1:
        raise ContractError(f"records[{i}].seq: {rec['seq']!r} is not a positive integer")
    if kind == "reading":
        try:
            Quality(rec["quality"])
        except ValueError:
            raise ContractError(
                f"records[{i}].quality: {rec['quality']!r} is not a quality code"
            ) from None
        if rec["value"] is not None and not isinstance(rec["value"], (int, float)):
            raise ContractError(f"records[{i}].value: {rec['value']!r} is not a number")


def seq_ranges(seqs: Iterable[int]) -> list[list[int]]:
    """Collapse sequence numbers into sorted inclusive [first, last] ranges."""
    ranges: list[list[int]] = []
    for seq in sorted(set(seqs)):
        if ranges and seq == ranges[-1][1] + 1:
            ranges[-1][1] = seq
        else:
            ranges.append([seq, seq])
    return ranges


def encode_ack(batch_id: Any, stored: list[list[int]],
               dead_lettered: list[list[int]] | None = None) -> bytes:
    """Serialise the receiver's acknowledgement: the seq ranges now safely stored.

    `dead_lettered` names records the receiver could not accept and kept aside in its
    dead-letter table with the reason: the gateway must not send them again.
    """
    body: dict[str, Any] = {"v": CONTRACT_VERSION, "batch": batch_id, "stored": stored}
    if dead_lettered:
        body["dead_lettered"] = dead_lettered
    return json.dumps(body, separators=(",", ":")).encode()


def decode_ack(payload: bytes) -> dict[str, Any]:
    """Parse an acknowledgement; raise ContractError if it is not one."""
    body = _parse_json(payload, "ack")
    if not isinstance(body, dict) or body.get("v") != CONTRACT_VERSION:
        raise ContractError("ack: not a version-1 object")
    for key in ("stored", "dead_lettered"):
        ranges = body.get(key, [])
        if not isinstance(ranges, list) or not all(
            isinstance(r, list) and len(r) == 2 and all(isinstance(x, int) for x in r)
            and r[0] <= r[1]
            for r in ranges
        ):
            raise ContractError(f"ack.{key}: not a list of [first, last] ranges")
    body.setdefault("dead_lettered", [])
    return body


# -- health -----------------------------------------------------------------------
#
# The health message has its own version: it may grow without touching batches.
HEALTH_VERSION = 1
_COUNT, _SECONDS, _RATE = "a non-negative integer", "a non-negative number", "0 to 1"


def _is_count(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and x >= 0


def _is_seconds(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and 0 <= x < 1e12


def _check_ts(where: str, x: Any, nullable: bool = False) -> None:
    if x is None and nullable:
        return
    try:
        ok = isinstance(x, str) and datetime.fromisoformat(x).tzinfo is not None
    except ValueError:
        ok = False
    if not ok:
        raise ContractError(f"{where}: {x!r} is not an ISO 8601 time with an offset")


def _check_fields(where: str, body: Any, spec: dict[str, tuple[str, bool]]) -> None:
    """Check body's fields against spec: name -> (kind, nullable)."""
    if not isinstance(body, dict):
        raise ContractError(f"{where}: not an object")
    kinds = {"count": (_is_count, _COUNT), "seconds": (_is_seconds, _SECONDS),
             "rate": (lambda x: _is_seconds(x) and x <= 1, _RATE),
             "bool": (lambda x: isinstance(x, bool), "true or false")}
    for name, (kind, nullable) in spec.items():
        path = f"{where}.{name}" if where else name
        if name not in body:
            raise ContractError(f"{path}: missing")
        value = body[name]
        if value is None and nullable:
            continue
        if kind == "ts":
            _check_ts(path, value)
            continue
        check, text = kinds[kind]
        if not check(value):
            raise ContractError(f"{path}: {value!r} is not {text}")


_HEALTH_FIELDS = {
    "ts": ("ts", False), "uptime_s": ("seconds", False),
    "outbox_depth": ("count", False), "oldest_unsent_age_s": ("seconds", True),
    "error_window_s": ("seconds", False), "clock_synchronised": ("bool", False),
    "schema_version": ("count", False),
}
_DROP_FIELDS = {"evicted_unsent": ("count", False), "dead_lettered": ("count", False),
                "store_failures": ("count", False)}
_DEVICE_FIELDS = {
    "polls": ("count", False), "failures": ("count", False),
    "error_rate": ("rate", True), "online": ("bool", True),
    "last_good_poll": ("ts", True),
}
_DISK_FIELDS = {"db_bytes": ("count", False), "wal_bytes": ("count", False),
                "free_bytes": ("count", True)}


def encode_health(site: str, gateway: str, health: dict[str, Any]) -> bytes:
    """Serialise a gateway's health for the health topic, checking it first."""
    body = {"v": HEALTH_VERSION, "site": site, "gateway": gateway, **health}
    check_health(body)
    return json.dumps(body, separators=(",", ":"), allow_nan=False).encode()


def decode_health(payload: bytes) -> dict[str, Any]:
    """Parse and check a health-topic payload; raise ContractError naming the field."""
    body = _parse_json(payload, "health")
    check_health(body)
    return body  # type: ignore[no-any-return]


def check_health(body: Any) -> None:
    """Raise ContractError if body is not a health message; unknown keys are allowed."""
    if not isinstance(body, dict):
        raise ContractError("health is not a JSON object")
    if body.get("v") != HEALTH_VERSION:
        raise ContractError(f"v: unsupported health version {body.get('v')!r}")
    for key in ("site", "gateway"):
        if not isinstance(body.get(key), str) or not body[key]:
            raise ContractError(f"{key}: missing or not a string")
    _check_fields("", body, _HEALTH_FIELDS)
    _check_fields("drops", body.get("drops"), _DROP_FIELDS)
    if "parked" in body["drops"]:
        _check_fields("drops", body["drops"], {"parked": ("count", False)})
    _check_fields("disk", body.get("disk"), _DISK_FIELDS)
    devices = body.get("devices")
    if not isinstance(devices, dict):
        raise ContractError("devices: missing or not an object")
    for name, dev in devices.items():
        _check_fields(f"devices.{name}", dev, _DEVICE_FIELDS)
        if dev["failures"] > dev["polls"]:
            raise ContractError(f"devices.{name}.failures: more than its polls")
    relays = body.get("relays")
    if not isinstance(relays, dict) or not all(
            r is None or isinstance(r, bool) for r in relays.values()):
        raise ContractError("relays: not an object of true, false or null")


# -- commands (cloud -> gateway) ----------------------------------------------------
#
# A command has its own version, like health. The gateway applies each `id` once
# (it remembers the ids it has seen), so the cloud may send a command again until the
# gateway's answer arrives: a `command` event record whose source is the id and whose
# state is one of COMMAND_RESULTS.
COMMAND_VERSION = 1
COMMAND_KINDS = ("ack", "maintenance")
COMMAND_RESULTS = ("applied", "ignored", "rejected")
_ID_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.")


def encode_command(site: str, gateway: str, command: dict[str, Any]) -> bytes:
    """Serialise a command for the command topic, checking it first."""
    body = {"v": COMMAND_VERSION, "site": site, "gateway": gateway, **command}
    check_command(body)
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()


def decode_command(payload: bytes) -> dict[str, Any]:
    """Parse and check a command-topic payload; raise ContractError naming the field."""
    body = _parse_json(payload, "command")
    check_command(body)
    return body  # type: ignore[no-any-return]


def _check_text(body: dict[str, Any], key: str, required: bool = True,
                max_len: int = 500) -> None:
    value = body.get(key)
    if value is None and not required:
        return
    if not isinstance(value, str) or (required and not value) or len(value) > max_len:
        raise ContractError(f"{key}: {value!r} is not a string of 1 to {max_len} "
                            "characters")


def check_command(body: Any) -> None:
    """Raise ContractError if body is not a command; unknown keys are allowed.

    ack: `alarm`, `who`, optional `comment`. maintenance: `target` ("device" or
    "device.point"), `on` (true/false), `who`, optional `reason` and `until` (ISO 8601
    with an offset: maintenance ends by itself then). Every command: `id` (1 to 64 of
    [A-Za-z0-9_.-]), `command`, `ts` (when the cloud issued it).
    """
    if not isinstance(body, dict):
        raise ContractError("command is not a JSON object")
    if body.get("v") != COMMAND_VERSION:
        raise ContractError(f"v: unsupported command version {body.get('v')!r}")
    for key in ("site", "gateway"):
        _check_text(body, key)
    cid = body.get("id")
    if not isinstance(cid, str) or not 1 <= len(cid) <= 64 or not set(cid) <= _ID_CHARS:
        raise ContractError(f"id: {cid!r} is not 1 to 64 of [A-Za-z0-9_.-]")
    if body.get("command") not in COMMAND_KINDS:
        raise ContractError(f"command: {body.get('command')!r} is not one of "
                            f"{', '.join(COMMAND_KINDS)}")
    _check_ts("ts", body.get("ts"))
    _check_text(body, "who", max_len=100)
    if body["command"] == "ack":
        _check_text(body, "alarm", max_len=100)
        _check_text(body, "comment", required=False)
    else:
        _check_text(body, "target", max_len=100)
        if not isinstance(body.get("on"), bool):
            raise ContractError(f"on: {body.get('on')!r} is not true or false")
        _check_text(body, "reason", required=False)
        _check_ts("until", body.get("until"), nullable=True)
