"""Store-and-forward over MQTT: the outbox drains only on the receiver's acknowledgement.

The broker's PUBACK says only that the broker has the message; the receiver may never
store it (it may be down, and a broker restarted without persistence forgets it). So
a record stays in the SQLite outbox until an ``ack`` naming its sequence number comes
back from the receiver. A batch not acknowledged within ``ack_timeout_s`` is sent
again; the receiver ignores what it already has, so resending is harmless.

paho runs its network loop in its own thread; every callback is handed to the
gateway's event loop, which owns the database connection.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

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
    seqs: set[int]
    deadline: float


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
        self.closing = False  # stopping: acks are no longer applied
        self.connected = False
        self.inflight: dict[int, _Inflight] = {}
        self._batch_ids = itertools.count(int(time.time() * 1000))
        self._wake = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self.stats = {"batches_sent": 0, "records_acked": 0, "resends": 0,
                      "bad_acks": 0, "dead_lettered": 0}

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
        self.client.reconnect_delay_set(min_delay=1, max_delay=30)
        self.client.on_connect = self._on_connect
        self.client.on_connect_fail = self._on_connect_fail
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message

    # -- paho thread -> event loop ---------------------------------------------------

    def _post(self, func, *args) -> None:  # type: ignore[no-untyped-def]
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(func, *args)

    def _on_connect(self, client, userdata, flags, reason_code, properties=None):  # type: ignore[no-untyped-def]
        if reason_code.is_failure:
            log.warning("site=%s broker refused connection: %s", self.site, reason_code)
            return
        self._connect_failures = 0
        client.subscribe(self.ack_topic, qos=1)
        client.publish(self.status_topic, b"online", qos=1, retain=True)
        self._post(self._set_connected, True)

    def _on_connect_fail(self, client, userdata):  # type: ignore[no-untyped-def]
        # paho calls this inside its `except OSError`: the exception is the reason
        # (refused, unreachable, an untrusted or misnamed broker certificate).
        exc = sys.exc_info()[1]
        self._connect_failures += 1
        if self._connect_failures in (1, 10) or self._connect_failures % 100 == 0:
            log.warning("site=%s cannot connect to %s (attempt %d): %s", self.site,
                        self.cfg.uplink.broker_url, self._connect_failures, exc)

    def _on_disconnect(self, client, userdata, flags, reason_code, properties=None):  # type: ignore[no-untyped-def]
        self._post(self._set_connected, False)

    def _on_message(self, client, userdata, msg):  # type: ignore[no-untyped-def]
        self._post(self._apply_ack, msg.payload)

    # -- event loop side -----------------------------------------------------------

    def _set_connected(self, up: bool) -> None:
        if up != self.connected:
            log.info("site=%s gateway=%s uplink %s", self.site, self.gateway,
                     "connected" if up else "disconnected")
        self.connected = up
        # Whatever was in flight on a lost connection may or may not have arrived;
        # send it again on the next connection (the receiver drops duplicates).
        if not up:
            self.inflight.clear()
        self._wake.set()

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
        if batch is not None:
            batch.seqs -= acked
            if not batch.seqs:
                del self.inflight[ack["batch"]]
        self._wake.set()

    def _expire(self, now: float) -> None:
        for batch_id, batch in list(self.inflight.items()):
            if now >= batch.deadline:
                del self.inflight[batch_id]
                self.stats["resends"] += 1
                log.warning("site=%s batch %s not acknowledged in %.0f s; will resend",
                            self.site, batch_id, self.cfg.uplink.ack_timeout_s)

    def _send_next(self) -> bool:
        up = self.cfg.uplink
        exclude = set().union(*(b.seqs for b in self.inflight.values()))
        records = self.store.outbox_batch(up.batch_size, exclude)
        if not records:
            return False
        cutoff = (datetime.now(UTC) - timedelta(seconds=up.historical_after_s)).isoformat()
        historical = all(r["ts"] < cutoff for r in records)
        batch_id = next(self._batch_ids)
        payload = contract.encode_batch(self.site, self.gateway, batch_id, records,
                                        historical)
        info = self.client.publish(self.data_topic, payload, qos=1)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            log.warning("site=%s publish failed rc=%s", self.site, info.rc)
            return False
        self.inflight[batch_id] = _Inflight(
            {r["seq"] for r in records}, time.monotonic() + up.ack_timeout_s
        )
        self.stats["batches_sent"] += 1
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
