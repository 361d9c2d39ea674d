"""The uplink contract shared by the gateway and the cloud receiver.

Both sides import this module and nothing else of each other, so a gateway needs none
of the cloud's code. The contract is versioned; docs/uplink.md describes it for people.

Topics, all under ``groundwatch/{site}/{gateway}/``:

- ``data``   gateway -> cloud, QoS 1: a batch of records (readings and events).
- ``ack``    cloud -> gateway, QoS 1: the sequence ranges the receiver has stored.
- ``status`` gateway -> cloud, retained: ``online`` / ``offline`` (the MQTT will).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
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


DATA_SUBSCRIPTION = f"{TOPIC_ROOT}/+/+/data"
STATUS_SUBSCRIPTION = f"{TOPIC_ROOT}/+/+/status"


def split_topic(topic: str) -> tuple[str, str, str]:
    """Return (site, gateway, leaf) of a contract topic."""
    parts = topic.split("/")
    if len(parts) != 4 or parts[0] != TOPIC_ROOT or not parts[1] or not parts[2]:
        raise ContractError(f"topic {topic!r} is not groundwatch/{{site}}/{{gateway}}/leaf")
    return parts[1], parts[2], parts[3]


def encode_batch(
    site: str, gateway: str, batch_id: int, records: list[dict[str, Any]],
    historical: bool = False,
) -> bytes:
    """Serialise one batch of records for the data topic."""
    body = {
        "v": CONTRACT_VERSION,
        "site": site,
        "gateway": gateway,
        "batch": batch_id,
        "historical": historical,
        "records": records,
    }
    return json.dumps(body, separators=(",", ":"), allow_nan=False).encode()


_READING_KEYS = {"seq", "kind", "ts", "device", "point", "value", "quality"}
_EVENT_KEYS = {"seq", "kind", "ts", "source", "event", "state"}


def decode_batch(payload: bytes) -> dict[str, Any]:
    """Parse and check a data-topic payload; raise ContractError naming the fault."""
    body = decode_envelope(payload)
    for i, rec in enumerate(body["records"]):
        check_record(i, rec)
    return body


def decode_envelope(payload: bytes) -> dict[str, Any]:
    """Parse a data-topic payload and check all but its records."""
    try:
        body = json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ContractError(f"payload is not JSON: {exc}") from None
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
    try:
        body = json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ContractError(f"ack is not JSON: {exc}") from None
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
