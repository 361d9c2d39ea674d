"""Store-and-forward over MQTT: the outbox drains only on the receiver's acknowledgement.

The broker's PUBACK says only that the broker has the message; the receiver may never
store it (it may be down, and a broker restarted without persistence forgets it). So
a record stays in the SQLite outbox until an ``ack`` naming its sequence number comes
back from the receiver. A batch not acknowledged within ``ack_timeout_s`` is sent
again; the receiver ignores what it already has, so resending is harmless.

Alarm and device events go first; after an outage, batch slots alternate between the
newest readings (live) and the oldest backlog (flagged historical). A batch the
broker takes but the receiver never acknowledges while later ones are acknowledged,
or one whose publication loses the connection, is split in halves; a record that
fails alone twice is parked (docs/uplink.md). No PUBACK within ``ack_timeout_s``
means the link is dead though the socket looks open: it is dropped and reconnected,
after a jittered exponential wait.

paho runs its network loop in its own thread; every callback is handed to the
gateway's event loop, which owns the database connection.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import random
import socket
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from edge.config import SiteConfig
from edge.store import EdgeStore
from groundwatch import contract
from groundwatch.credentials import (
    TlsFiles, apply_tls, check_tls_files, resolve_password,
)

log = logging.getLogger(__name__)


def uplink_credentials(cfg: SiteConfig) -> tuple[str | None, TlsFiles | None]:
    """The broker password and TLS files of [uplink]; ConfigError names a bad key."""
    up = cfg.uplink

    def path(name: str | None) -> str | None:
        return None if name is None else str(cfg.base_dir / name)

    password = resolve_password(cfg.source, "uplink", password=up.password,
                                password_env=up.password_env,
                                password_file=path(up.password_file))
    if not up.tls:
        return password, None
    tls = TlsFiles(path(up.tls_ca_file), path(up.tls_cert_file), path(up.tls_key_file))
    check_tls_files(tls, cfg.source, "uplink")
    return password, tls


@dataclass(slots=True)
class _Inflight:
    seqs: set[int]  # not yet acknowledged
    deadline: float
    order: int = 0  # publication order
    sent: tuple[int, ...] = ()  # every seq the batch carried
    mid: int = 0
    puback: bool = False
    alone: bool = False  # sent with nothing else in flight, to find a culprit
    size: int = 0  # payload bytes


class Backoff:
    """Exponential backoff with full jitter: a random wait in [0, min(cap, base*2^n)].

    A city of gateways that lost the same broker then spreads its reconnections over
    the window instead of arriving in lockstep.
    """

    def __init__(self, base_s: float, cap_s: float,
                 rng: Callable[[], float] = random.random) -> None:
        self.base_s, self.cap_s, self.rng = base_s, cap_s, rng
        self.attempt = 0

    def next_delay_s(self) -> float:
        window_s = min(self.cap_s, self.base_s * 2 ** min(self.attempt, 32))
        self.attempt += 1
        return window_s * self.rng()

    def reset(self) -> None:
        self.attempt = 0


class Uplink:
    """Publishes outbox batches and applies acknowledgements."""

    def __init__(self, cfg: SiteConfig, store: EdgeStore):
        self.cfg, self.store = cfg, store
        up = cfg.uplink
        self.site, self.gateway = cfg.site.id, cfg.gateway.id
        self.data_topic = contract.data_topic(self.site, self.gateway)
        self.ack_topic = contract.ack_topic(self.site, self.gateway)
        self.status_topic = contract.status_topic(self.site, self.gateway)
        self.health_topic = contract.health_topic(self.site, self.gateway)
        self.command_topic = contract.command_topic(self.site, self.gateway)
        # Set by the gateway: called on the event loop with each command payload.
        self.on_command: Callable[[bytes], None] | None = None
        self.closing = False  # stopping: acks are no longer applied
        self.connected = False
        self.inflight: dict[int, _Inflight] = {}
        self._batch_ids = itertools.count(int(time.time() * 1000))
        self._wake = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self.stats = {"batches_sent": 0, "records_acked": 0, "resends": 0,
                      "bad_acks": 0, "dead_lettered": 0, "splits": 0, "parked": 0,
                      "link_drops": 0, "bytes_sent": 0, "readings_sent": 0}
        self._orders = itertools.count(1)
        self._last_acked_order = 0
        # Seq groups to send each in a batch of its own, with nothing else in flight:
        # halves of a refused batch, or batches in flight when a connection dropped.
        self._alone: deque[list[int]] = deque()
        self._strikes: dict[int, int] = {}  # seq sent alone -> failures
        self._live_turn = True  # the next readings slot takes the live head
        # Batches the broker took but the receiver did not acknowledge in time, kept
        # out of the outbox's rotation until a later batch's ack shows the receiver
        # is alive (then they were refused: split) or until held_s runs out (then
        # the receiver is down: resend).
        self._held: dict[int, tuple[_Inflight, float]] = {}
        # The payload cap in use: halved below a batch that vanished after its
        # PUBACK (a broker's message_size_limit), doubled back after 20 good acks.
        self._cap_bytes = up.max_payload_bytes
        self._acked_in_row = 0
        self._recent_acks: deque[tuple[int, int]] = deque(maxlen=64)  # (order, size)
        self.backoff = Backoff(up.reconnect_min_s, up.reconnect_max_s)

        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=up.client_id or f"groundwatch-{self.site}-{self.gateway}",
            protocol=mqtt.MQTTv311, clean_session=True,
        )
        password, tls = uplink_credentials(cfg)
        if up.username:
            self.client.username_pw_set(up.username, password)
        if tls is not None:
            apply_tls(self.client, tls)
        self._connect_failures = 0
        self.client.will_set(self.status_topic, b"offline", qos=1, retain=True)
        self._next_wait()
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = self._on_subscribe
        self.client.on_publish = self._on_publish
        self.client.on_connect_fail = self._on_connect_fail
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message
        # Nagle's algorithm holds a small write (a PUBACK, a batch right after one)
        # until the peer ACKs the last, which Linux delays by up to 40 ms: each batch's
        # round trip would wait for it.
        self.client.on_socket_open = lambda client, userdata, sock: (
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1))  # type: ignore[attr-defined]

    # -- paho thread -> event loop ---------------------------------------------------

    def _post(self, func, *args) -> None:  # type: ignore[no-untyped-def]
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(func, *args)

    def _on_connect(self, client, userdata, flags, reason_code, properties=None):  # type: ignore[no-untyped-def]
        if reason_code.is_failure:
            log.warning("site=%s broker refused connection: %s", self.site, reason_code)
            return
        self._connect_failures = 0
        self.backoff.reset()
        self._next_wait()
        # paho would republish what was unacknowledged on the last connection first,
        # a batch that made the broker drop us included, and loop on it; the outbox
        # resends what is needed instead.
        client.drop_out_messages()
        # One SUBSCRIBE, one SUBACK. Subscribed before "online" goes out, so the cloud
        # may send pending commands as soon as it sees that.
        client.subscribe([(self.ack_topic, 1), (self.command_topic, 1)])
        client.publish(self.status_topic, b"online", qos=1, retain=True)

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties=None):  # type: ignore[no-untyped-def]
        # Data goes out only once acks can come back on this connection.
        self._post(self._set_connected, True)

    def _on_publish(self, client, userdata, mid, reason_code, properties=None):  # type: ignore[no-untyped-def]
        self._post(self._puback, mid)

    def _next_wait(self) -> None:
        # paho waits min_delay before its next attempt (its delay is reset by the
        # call): one jittered draw per attempt.
        delay_s = self.backoff.next_delay_s()
        self.client.reconnect_delay_set(delay_s, delay_s)  # type: ignore[arg-type]

    def _on_connect_fail(self, client, userdata):  # type: ignore[no-untyped-def]
        # paho calls this inside its `except OSError`: the exception is the reason
        # (refused, unreachable, an untrusted or misnamed broker certificate).
        exc = sys.exc_info()[1]
        self._connect_failures += 1
        self._next_wait()
        if self._connect_failures in (1, 10) or self._connect_failures % 100 == 0:
            log.warning("site=%s cannot connect to %s (attempt %d): %s", self.site,
                        self.cfg.uplink.broker_url, self._connect_failures, exc)

    def _on_disconnect(self, client, userdata, flags, reason_code, properties=None):  # type: ignore[no-untyped-def]
        self._next_wait()
        self._post(self._set_connected, False)

    def _on_message(self, client, userdata, msg):  # type: ignore[no-untyped-def]
        if msg.topic == self.command_topic:
            if self.on_command is not None:
                self._post(self.on_command, msg.payload)
            return
        self._post(self._apply_ack, msg.payload)

    # -- event loop side -----------------------------------------------------------

    def _set_connected(self, up: bool) -> None:
        if up != self.connected:
            log.info("site=%s gateway=%s uplink %s", self.site, self.gateway,
                     "connected" if up else "disconnected")
        self.connected = up
        # Whatever was in flight on a lost connection may or may not have arrived;
        # send it again on the next connection (the receiver drops duplicates). One
        # the broker never confirmed may be what made it drop us: those go alone.
        if up:
            self._live_turn = True  # after a return, live data before the backlog
        else:
            for batch in sorted(self.inflight.values(), key=lambda b: -b.order):
                if batch.alone and not batch.puback:
                    self._failed(batch, "the connection dropped while it went alone")
                elif not batch.puback:
                    self._alone.appendleft(sorted(batch.sent))
            self.inflight.clear()
        self._wake.set()

    def _puback(self, mid: int) -> None:
        for batch in self.inflight.values():
            if batch.mid == mid:
                batch.puback = True
                break

    def _failed(self, batch: _Inflight, why: str) -> None:
        """Split a batch that cannot get through; park a record that fails alone."""
        seqs = sorted(batch.sent)
        if len(seqs) > 1:
            half = len(seqs) // 2
            self._alone.extendleft([seqs[half:], seqs[:half]])
            self.stats["splits"] += 1
            log.warning("site=%s batch of %d records (%s): splitting it in halves",
                        self.site, len(seqs), why)
            return
        seq = seqs[0]
        self._strikes[seq] = self._strikes.get(seq, 0) + 1
        if self._strikes[seq] < 2:
            self._alone.appendleft(seqs)
            return
        self._park(seqs, why)

    def _park(self, seqs: list[int], why: str) -> None:
        n = self.store.park(seqs, why)
        for seq in seqs:
            self._strikes.pop(seq, None)
        self.stats["parked"] += n
        log.error("site=%s gateway=%s parked record %s: %s", self.site, self.gateway,
                  seqs, why)
        self.store.add_event("store", "store", "parked", severity="warning",
                             value=float(n), message=f"record {seqs[0]} parked: {why}")

    def _drop_link(self) -> None:
        """Close a connection that no longer carries anything; paho reconnects."""
        sock = self.client.socket()
        self.stats["link_drops"] += 1
        if isinstance(sock, socket.socket):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def _apply_ack(self, payload: bytes) -> None:
        if self.closing:  # the final health counted the outbox; these come again
            return
        try:
            ack = contract.decode_ack(payload)
        except contract.ContractError as exc:
            self.stats["bad_acks"] += 1
            log.warning("site=%s ignoring malformed ack: %s", self.site, exc)
            return
        removed = self.store.mark_delivered(ack["stored"] + ack["dead_lettered"])
        self.stats["records_acked"] += removed
        if ack["dead_lettered"]:
            # The receiver kept them aside with the reason; sending again cannot help.
            self.stats["dead_lettered"] += sum(b - a + 1 for a, b in ack["dead_lettered"])
            log.error("site=%s receiver dead-lettered records %s", self.site,
                      ack["dead_lettered"])
        ranges = ack["stored"] + ack["dead_lettered"]
        acked = {s for first, last in ranges for s in range(first, last + 1)}
        batch = self.inflight.get(ack.get("batch"))  # type: ignore[arg-type]
        if batch is None and ack.get("batch") in self._held:
            batch = self._held[ack["batch"]][0]
        if batch is not None:
            batch.seqs -= acked
            if not batch.seqs:
                self.inflight.pop(ack["batch"], None)
                self._held.pop(ack["batch"], None)
                self._batch_delivered(batch)
        for seq in acked & self._strikes.keys():
            del self._strikes[seq]
        self._wake.set()

    def _batch_delivered(self, batch: _Inflight) -> None:
        self._last_acked_order = max(self._last_acked_order, batch.order)
        self._recent_acks.append((batch.order, batch.size))
        for batch_id, (held, _) in list(self._held.items()):
            if held.order < batch.order:  # the receiver acknowledged a later batch
                del self._held[batch_id]
                self._judge(held, batch.size)

    def _judge(self, batch: _Inflight, later_size: int) -> None:
        """A later batch got through: a smaller one shows this one was too big; one
        as big shows it was lost on the way (a session the broker forgot): resend."""
        if later_size < batch.size:
            self._failed(batch, f"{batch.size} bytes taken by the broker, never "
                                f"acknowledged, while a later {later_size}-byte one was")
        self._acked_in_row += 1
        top = self.cfg.uplink.max_payload_bytes
        if self._acked_in_row >= 20 and self._cap_bytes < top:
            self._cap_bytes = min(self._cap_bytes * 2, top)
            self._acked_in_row = 0

    def _expire(self, now: float) -> None:
        timeout_s = self.cfg.uplink.ack_timeout_s
        for batch_id, batch in sorted(self.inflight.items(), key=lambda i: -i[1].order):
            if now < batch.deadline:
                continue
            if not batch.puback:
                # Not even the broker answered: the link is dead (half-open) though
                # the socket looks fine. Reconnecting puts everything in flight
                # back in the outbox's hands.
                log.warning("site=%s no PUBACK for batch %s in %.0f s: dropping the "
                            "connection", self.site, batch_id, timeout_s)
                batch.deadline = now + timeout_s
                self._drop_link()
                return
            del self.inflight[batch_id]
            self.stats["resends"] += 1
            self._acked_in_row = 0
            # The broker took it and the receiver never acknowledged it: dropped for
            # its size (Mosquitto's message_size_limit PUBACKs and discards), refused
            # by the receiver, or the receiver is down. Smaller batches tell which.
            if batch.size > 1024:
                self._cap_bytes = max(min(self._cap_bytes, batch.size // 2), 1024)
            later = [size for order, size in self._recent_acks if order > batch.order]
            if later:
                self._judge(batch, min(later))
            elif len(self._held) < 2 * self.cfg.uplink.max_inflight_batches:
                self._held[batch_id] = (batch, now + 3 * timeout_s)
                log.warning("site=%s batch %s not acknowledged in %.0f s; holding it "
                            "back while smaller batches go", self.site, batch_id,
                            timeout_s)
            else:
                log.warning("site=%s batch %s not acknowledged in %.0f s; will resend",
                            self.site, batch_id, timeout_s)
        for batch_id, (batch, until) in list(self._held.items()):
            if now >= until:  # nothing acknowledged at all: the receiver is away
                del self._held[batch_id]

    def _next_records(self, exclude: set[int]) -> tuple[list[dict[str, Any]], bool]:
        """The next batch's records, and whether it goes alone (see _alone)."""
        up = self.cfg.uplink
        while self._alone:
            if self.inflight:
                return [], True  # wait until nothing else is in flight
            records = self.store.outbox_records(self._alone.popleft())
            if records:
                return records, True
        records = self.store.outbox_events(up.batch_size, exclude)
        cutoff_ms = int((time.time() - up.historical_after_s) * 1000)
        want = up.batch_size - len(records)
        if want > 0:
            live = self._live_turn
            for newest in (live, not live):
                readings = self.store.outbox_readings(
                    want, exclude, newest=newest,
                    since_ms=cutoff_ms if newest else None,
                    before_ms=None if newest else cutoff_ms)
                if readings:
                    records += readings
                    self._live_turn = not newest
                    break
        return records, False

    def _send_next(self) -> bool:
        up = self.cfg.uplink
        exclude = set().union(*(b.seqs for b in self.inflight.values()),
                              *(b.seqs for b, _ in self._held.values()))
        records, alone = self._next_records(exclude)
        if not records:
            return False
        cutoff = (datetime.now(UTC) - timedelta(seconds=up.historical_after_s)).isoformat()
        while True:
            historical = all(r["ts"] < cutoff for r in records)
            batch_id = next(self._batch_ids)
            payload = contract.encode_batch(self.site, self.gateway, batch_id, records,
                                            historical, compress=up.compress)
            if len(payload) <= self._cap_bytes:
                break
            if len(records) == 1:
                if len(payload) > up.max_payload_bytes:
                    self._park([records[0]["seq"]], f"{len(payload)} bytes encoded, over"
                               f" uplink.max_payload_bytes = {up.max_payload_bytes}")
                    return True
                break  # under the configured cap: the broker decides
            records = records[: len(records) // 2]
        info = self.client.publish(self.data_topic, payload, qos=1)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            log.warning("site=%s publish failed rc=%s", self.site, info.rc)
            if alone:
                self._alone.appendleft(sorted(r["seq"] for r in records))
            return False
        seqs = tuple(r["seq"] for r in records)
        self.inflight[batch_id] = _Inflight(
            set(seqs), time.monotonic() + up.ack_timeout_s, next(self._orders), seqs,
            info.mid, alone=alone, size=len(payload),
        )
        self.stats["batches_sent"] += 1
        self.stats["bytes_sent"] += len(payload)
        self.stats["readings_sent"] += sum(r["kind"] == "reading" for r in records)
        return True

    def publish_health(self, payload: bytes) -> bool:
        """Publish a health message (QoS 1, retained: state, not in the outbox)."""
        if not self.connected:
            return False
        info = self.client.publish(self.health_topic, payload, qos=1, retain=True)
        return info.rc == mqtt.MQTT_ERR_SUCCESS

    async def run(self, stop: asyncio.Event,
                  final_health: Callable[[], bytes | None] | None = None) -> None:
        """Connect (retrying forever) and keep the outbox draining until stop.

        `final_health` gives the health message published just before going offline.
        """
        self._loop = asyncio.get_running_loop()
        up = self.cfg.uplink
        self.client.connect_async(up.host, up.port, keepalive=up.keepalive_s)
        self.client.loop_start()
        try:
            while not stop.is_set():
                self._expire(time.monotonic())
                while (
                    self.connected and len(self.inflight) < up.max_inflight_batches
                    and not any(b.alone for b in self.inflight.values())
                    and self._send_next()
                ):
                    pass
                self._wake.clear()
                try:
                    await asyncio.wait_for(self._wake.wait(), 0.5)
                except TimeoutError:
                    pass
        finally:
            self.closing = True
            payload = final_health() if final_health and self.connected else None
            if payload is not None:
                self.publish_health(payload)
            if self.connected:
                self.client.publish(self.status_topic, b"offline", qos=1, retain=True)
            self.client.disconnect()
            self.client.loop_stop()
