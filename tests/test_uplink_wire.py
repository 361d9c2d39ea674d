"""The uplink's wire format (compressed envelope, size caps) and its backoff."""

from __future__ import annotations

import os
import zlib
from pathlib import Path
from typing import Any

import pytest

from edge.config import load_config
from edge.store import ms_to_iso
from edge.uplink import Backoff
from groundwatch import contract
from groundwatch.demo import write_site
from groundwatch.sim.server import SiteSimulator

T0_MS = 1796112000000  # 2026-12-01T08:00Z


def demo_site_readings(tmp_path: Path, n: int) -> list[dict[str, Any]]:
    """n readings as the demo site's gateway takes them: the simulator's models,
    decoded by the site's device maps, each device on its poll period."""
    now = [0.0]
    cfg = load_config(write_site(tmp_path, 1883, leak_at_s=1e9))
    sim = SiteSimulator(cfg, speed=900.0, clock=lambda: now[0])
    due = {dev.name: 0.0 for _, dev in cfg.devices()}
    records: list[dict[str, Any]] = []
    while len(records) < n:
        for _, dev in cfg.devices():
            if due[dev.name] > now[0]:
                continue
            device = sim._device(dev.name)
            device.refresh(*sim.elapsed())
            data = {t: dict(enumerate(regs)) for t, regs in device.image.items()}
            ts = ms_to_iso(T0_MS + round(now[0] * 1000))
            for s in cfg.maps[dev.name].decode(data):
                records.append({"seq": len(records) + 1, "kind": "reading", "ts": ts,
                                "device": dev.name, "point": s.point, "value": s.value,
                                "quality": s.quality.value, "unit": s.unit})
            due[dev.name] += dev.poll_interval_s
        now[0] += 0.25
    return records[:n]


def mqtt_publish_bytes(topic: str, payload: bytes) -> int:
    """A QoS 1 PUBLISH packet's size: fixed header, topic, packet id, payload."""
    remaining = 2 + len(topic.encode()) + 2 + len(payload)
    length_bytes = 1 + sum(remaining >= limit for limit in (128, 16384, 2097152))
    return 1 + length_bytes + remaining


def test_compressed_batch_round_trips_and_plain_json_is_still_accepted(tmp_path):
    records = demo_site_readings(tmp_path, 50)
    packed = contract.encode_batch("demo-site", "gw-demo", 7, records, True,
                                   compress=True)
    plain = contract.encode_batch("demo-site", "gw-demo", 7, records, True)
    assert packed[:4] == b"GWZ\x01" and plain[:1] == b"{"
    for payload in (packed, plain):
        body = contract.decode_batch(payload)
        assert body["records"] == records
        assert (body["batch"], body["historical"]) == (7, True)


def test_demo_site_batch_of_200_costs_at_most_20_bytes_a_reading_on_the_wire(tmp_path):
    records = demo_site_readings(tmp_path, 200)
    topic = contract.data_topic("demo-site", "gw-demo")
    packed = contract.encode_batch("demo-site", "gw-demo", T0_MS, records,
                                   compress=True)
    plain = contract.encode_batch("demo-site", "gw-demo", T0_MS, records)
    per_reading = mqtt_publish_bytes(topic, packed) / len(records)
    assert per_reading <= 20
    # Plain JSON names every field of every record: several times bigger.
    assert mqtt_publish_bytes(topic, plain) / len(records) > 5 * per_reading


def test_payload_inflating_beyond_the_cap_is_refused_without_inflating_it_all():
    body = b'{"v":1,"site":"s","gateway":"g","records":[' + b" " * (8 << 20) + b"]}"
    bomb = b"GWZ\x01" + zlib.compress(body, 9)
    assert len(bomb) < 16384
    with pytest.raises(contract.ContractError, match="inflates beyond"):
        contract.decode_envelope(bomb)
    ok = contract.encode_batch("s", "g", 1, [], compress=True)
    assert contract.decode_envelope(ok, max_bytes=200)["records"] == []
    with pytest.raises(contract.ContractError, match="inflates beyond"):
        contract.decode_envelope(ok, max_bytes=20)


@pytest.mark.parametrize(("payload", "fault"), [
    (b"GWZ\x09" + zlib.compress(b"{}"), "envelope version"),
    (b"GWZ\x01" + b"not zlib at all", "corrupt"),
    (b"GWZ\x01" + zlib.compress(b'{"v":1}')[:-3], "truncated"),
    (b"\x00\x01binary", "neither JSON nor"),
    (b"{" + b" " * 64, "over the 32-byte limit"),
])
def test_broken_envelopes_are_named(payload, fault):
    with pytest.raises(contract.ContractError, match=fault):
        contract.decode_envelope(payload, max_bytes=32 if fault.startswith("over")
                                 else contract.MAX_BATCH_BYTES)


def test_backoff_doubles_to_the_cap_with_full_jitter_and_resets():
    top = Backoff(0.5, 4.0, rng=lambda: 1.0)
    assert [top.next_delay_s() for _ in range(6)] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    top.reset()
    assert top.next_delay_s() == 0.5
    draws = iter([0.25, 0.5, 0.0])
    jittered = Backoff(0.5, 4.0, rng=lambda: next(draws))
    assert [jittered.next_delay_s() for _ in range(3)] == [0.125, 0.5, 0.0]


def test_default_backoff_spreads_a_city_of_gateways_within_the_cap():
    import random

    rng = random.Random(4)
    delays = []
    for _ in range(2000):  # 2000 gateways, each after ten failed attempts
        b = Backoff(0.5, 4.0, rng=rng.random)
        for _ in range(10):
            b.next_delay_s()
        delays.append(b.next_delay_s())
    assert max(delays) <= 4.0
    # Uniform over [0, 4 s]: about a quarter in each second, none in lockstep.
    per_second = [sum(int(d) == s for d in delays) for s in range(4)]
    assert all(400 <= n <= 600 for n in per_second), per_second


class _Info:
    def __init__(self, mid: int) -> None:
        self.rc, self.mid = 0, mid


class _Client:
    """Stands in for paho: records publications, answers nothing by itself."""

    def __init__(self) -> None:
        self.published: list[tuple[int, bytes]] = []

    def publish(self, topic: str, payload: bytes, qos: int = 0,
                retain: bool = False) -> _Info:
        self.published.append((len(self.published) + 1, payload))
        return _Info(len(self.published))

    def socket(self) -> None:
        return None


def _uplink(tmp_path: Path, **uplink: Any):  # type: ignore[no-untyped-def]
    from edge.store import EdgeStore
    from edge.uplink import Uplink

    cfg = load_config(write_site(tmp_path, 1883, leak_at_s=1e9))
    cfg.uplink = cfg.uplink.model_copy(update=uplink)
    store = EdgeStore(tmp_path / "g.sqlite")
    up = Uplink(cfg, store)
    up.client = _Client()  # type: ignore[assignment]
    up.connected = True
    return up, store


def _ack(up, payload: bytes) -> None:  # type: ignore[no-untyped-def]
    body = contract.decode_batch(payload)
    seqs = [r["seq"] for r in body["records"]]
    up._apply_ack(contract.encode_ack(body["batch"], contract.seq_ranges(seqs)))


def test_batch_dropped_after_its_puback_is_split_when_a_smaller_one_gets_through(
        tmp_path):
    up, store = _uplink(tmp_path, batch_size=100, max_inflight_batches=1)
    for i in range(300):
        store.add_readings(ms_to_iso(T0_MS + i * 1000), "d",
                           [("p", float(i) * 1.37, "good", "m")])
    assert up._send_next()
    (mid, big), = up.client.published
    up._puback(mid)
    batch = next(iter(up.inflight.values()))
    # Broker took it (PUBACK); the receiver never acknowledges: held, cap shrinks.
    up._expire(batch.deadline + 0.1)
    assert not up.inflight and len(up._held) == 1 and up._cap_bytes < len(big)
    assert up._send_next()  # a smaller batch of other records
    mid2, small = up.client.published[-1]
    assert len(small) <= up._cap_bytes
    held_seqs = set(next(iter(up._held.values()))[0].sent)
    assert not held_seqs & {r["seq"] for r in contract.decode_batch(small)["records"]}
    up._puback(mid2)
    _ack(up, small)
    # The smaller one got through: the held one was too big, its halves go alone.
    assert not up._held and up.stats["splits"] == 1
    assert [len(g) for g in up._alone] == [50, 50]
    assert sorted(up._alone[0] + up._alone[1]) == sorted(held_seqs)


def test_lone_record_refused_twice_is_parked_and_the_queue_moves_on(tmp_path):
    up, store = _uplink(tmp_path, batch_size=100, max_inflight_batches=1)
    poison = store.add_event("gw", "gateway", "note", message=os.urandom(1500).hex())
    store.add_readings(ms_to_iso(T0_MS), "d", [("p", 1.0, "good", "m")] * 5)
    up._alone.append([poison])
    for strike in (1, 2):
        assert up._send_next()
        batch = next(iter(up.inflight.values()))
        assert batch.alone and batch.sent == (poison,)
        up._puback(batch.mid)
        up._expire(batch.deadline + 0.1)  # held: nothing later acknowledged yet
        assert up._send_next()  # the readings, smaller
        later = next(iter(up.inflight.values()))
        up._puback(later.mid)
        _ack(up, up.client.published[-1][1])
        if strike == 1:
            assert up._alone and up._alone[0] == [poison] and up.stats["parked"] == 0
            # The readings are delivered; add more for the second round.
            store.add_readings(ms_to_iso(T0_MS + 1000), "d",
                               [("p", 2.0, "good", "m")] * 5)
    assert up.stats["parked"] == 1
    assert store.conn.execute("SELECT seq FROM parked").fetchall() == [(poison,)]
    [(state, message)] = store.conn.execute(
        "SELECT e.state, e.message FROM events e JOIN pending_events USING (seq)"
    ).fetchall()
    assert state == "parked" and str(poison) in message
