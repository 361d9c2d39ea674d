"""A fast stand-in for many gateways: contract batches out, acks in, resends.

Each simulated gateway behaves as edge/uplink.py does on the wire: per-gateway seqs,
batches of `batch_size` readings (zlib envelope), at most `window` batches awaiting an
ack, and a batch that no ack names within `ack_timeout_s` is sent again. Payloads are
encoded before the clock starts, so the publisher costs little more than paho.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from groundwatch import contract

POINTS_PER_GATEWAY = 200


def gateway_name(k: int) -> str:
    return f"gw-{k:04d}"


def readings(first_seq: int, count: int, start_ms: int) -> list[dict[str, Any]]:
    """Readings of a 200-point gateway: seq s is point s % 200, a second per round."""
    out = []
    for seq in range(first_seq, first_seq + count):
        n = seq % POINTS_PER_GATEWAY
        ms = start_ms + (seq // POINTS_PER_GATEWAY) * 1000
        secs, milli = divmod(ms, 1000)
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs)) + f".{milli:03d}Z"
        out.append({"seq": seq, "kind": "reading", "ts": ts, "device": f"dev{n // 10}",
                    "point": f"p{n % 10}", "value": round(n * 1.25 + seq * 1e-3, 3),
                    "quality": "good", "unit": "mm"})
    return out


@dataclass
class Result:
    """What a run did: counts, times (monotonic s) and every ack received."""

    records: int
    batches: int
    sent: int = 0  # publishes, resends included
    resends: int = 0
    acks: int = 0
    first_publish: float = 0.0
    last_ack: float = 0.0
    stored: dict[str, set[int]] = field(default_factory=dict)

    @property
    def elapsed_s(self) -> float:
        return self.last_ack - self.first_publish

    @property
    def rate_per_s(self) -> float:
        return self.records / self.elapsed_s if self.elapsed_s > 0 else 0.0


class Publisher:
    """Publish `per_gateway` readings for each of `gateways` gateways of one site."""

    def __init__(self, port: int, site: str, gateways: int, per_gateway: int, *,
                 batch_size: int = 200, window: int = 4, ack_timeout_s: float = 10.0,
                 compress: bool = True, host: str = "127.0.0.1") -> None:
        self.site, self.window, self.ack_timeout_s = site, window, ack_timeout_s
        start_ms = int(time.time() * 1000) - per_gateway * 1000 // POINTS_PER_GATEWAY
        # (gateway, batch id) -> (payload, seqs), in sending order per gateway.
        self.batches: dict[str, list[tuple[int, bytes, range]]] = {}
        for k in range(gateways):
            gw, out = gateway_name(k), []
            for i, first in enumerate(range(1, per_gateway + 1, batch_size)):
                count = min(batch_size, per_gateway + 1 - first)
                payload = contract.encode_batch(
                    site, gw, i, readings(first, count, start_ms), compress=compress)
                out.append((i, payload, range(first, first + count)))
            self.batches[gw] = out
        total = gateways * per_gateway
        self.result = Result(total, sum(len(b) for b in self.batches.values()),
                             stored={gw: set() for gw in self.batches})
        self._cond = threading.Condition()
        self._acked: dict[str, set[int]] = {gw: set() for gw in self.batches}
        self._client = mqtt.Client(CallbackAPIVersion.VERSION2,
                                   client_id=f"bench-pub-{site}", protocol=mqtt.MQTTv311)
        self._client.max_inflight_messages_set(max(20, gateways * window))
        self._client.max_queued_messages_set(0)
        self._client.on_message = self._on_ack
        subscribed = threading.Event()
        self._client.on_subscribe = lambda *args: subscribed.set()
        self._client.connect(host, port)
        self._client.loop_start()
        self._client.subscribe(f"{contract.TOPIC_ROOT}/{site}/+/ack", qos=1)
        if not subscribed.wait(10):
            raise RuntimeError(f"no SUBACK from the broker on port {port}")

    def _on_ack(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        _, gw, _ = contract.split_topic(msg.topic)
        ack = contract.decode_ack(msg.payload)
        now = time.monotonic()
        with self._cond:
            self.result.acks += 1
            self.result.last_ack = now
            for first, last in ack["stored"]:
                self.result.stored[gw].update(range(first, last + 1))
            if isinstance(ack.get("batch"), int):
                self._acked[gw].add(ack["batch"])
            self._cond.notify_all()

    def run(self, timeout_s: float) -> Result:
        """Send everything, resending on ack timeouts, until every batch is acked."""
        deadline = time.monotonic() + timeout_s
        queues = {gw: list(reversed(b)) for gw, b in self.batches.items()}
        inflight: dict[str, dict[int, tuple[float, bytes]]] = {gw: {} for gw in queues}
        self.result.first_publish = time.monotonic()
        with self._cond:
            while True:
                now = time.monotonic()
                busy = False
                for gw, todo in queues.items():
                    flying = inflight[gw]
                    for batch_id in [b for b in flying if b in self._acked[gw]]:
                        del flying[batch_id]
                    for batch_id, (sent_at, payload) in flying.items():
                        if now - sent_at > self.ack_timeout_s:
                            self._publish(gw, payload)
                            flying[batch_id] = (now, payload)
                            self.result.resends += 1
                    while todo and len(flying) < self.window:
                        batch_id, payload, _ = todo.pop()
                        self._publish(gw, payload)
                        flying[batch_id] = (now, payload)
                    busy = busy or bool(todo or flying)
                if not busy:
                    return self.result
                if now > deadline:
                    missing = sum(len(f) + len(queues[gw]) for gw, f in inflight.items())
                    raise TimeoutError(f"{missing} batches not acknowledged after "
                                       f"{timeout_s:.0f} s")
                self._cond.wait(0.05)

    def _publish(self, gw: str, payload: bytes) -> None:
        info = self._client.publish(contract.data_topic(self.site, gw), payload, qos=1)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:  # not connected: the resend covers it
            return
        self.result.sent += 1

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()
