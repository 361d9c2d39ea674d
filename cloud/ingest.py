"""MQTT ingest: receive gateway batches, store them, then acknowledge what is stored."""

from __future__ import annotations

import base64
import json
import logging
import socket
import sqlite3
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import paho.mqtt.client as mqtt
import psycopg
from paho.mqtt.enums import CallbackAPIVersion

from cloud.store import CloudStore, check_row
from cloud.store_pg import PgStore
from groundwatch import contract
from groundwatch.contract import ContractError
from groundwatch.credentials import TlsFiles, apply_tls

log = logging.getLogger(__name__)

MAX_PAYLOAD_BYTES = 1 << 20
COUNTERS = (
    "messages", "records", "duplicates", "malformed", "acks_sent", "store_errors",
    "dead_lettered", "health",
)
GATEWAY_STATUSES = ("online", "offline")
STORE_ERRORS = (sqlite3.Error, psycopg.Error)


class Ingestor:
    """Subscribes to every gateway's data and status topics and feeds the store.

    The session is persistent (clean_session=False under a stable client id), so
    batches published while the receiver is down wait in the broker for it.
    `site` narrows the subscriptions to one site ("+" is every site).

    With `share_group`, the data topics are a shared subscription of that group: the
    broker hands each batch to one member, which stores and acknowledges it. Status
    and health go to every member (they are retained, and a shared subscription gets
    no retained messages; storing them twice is harmless). A member's session is then
    clean, so the broker stops routing batches to a member that died instead of
    queueing them for it; the gateways resend what was not acknowledged.

    With `writers` > 1, that many threads handle batches at once (PostgreSQL commits
    them concurrently; SQLite one at a time, while the next is decoded), each batch's
    PUBACK still sent only after its commit; the broker's in-flight window bounds the
    batches held in the process.
    """

    def __init__(
        self, store: CloudStore | PgStore, broker_host: str, broker_port: int = 1883,
        client_id: str = "groundwatch-cloud", *, site: str = "+",
        clean_session: bool = False, keepalive_s: int = 30,
        max_payload_bytes: int = MAX_PAYLOAD_BYTES,
        username: str | None = None, password: str | None = None,
        tls: TlsFiles | None = None, share_group: str | None = None,
        writers: int = 1,
    ) -> None:
        self.store = store
        self.broker_host, self.broker_port = broker_host, broker_port
        self.client_id = client_id
        self.keepalive_s = keepalive_s
        self.max_payload_bytes = max_payload_bytes
        root = contract.TOPIC_ROOT
        data = contract.DATA_SUBSCRIPTION if site == "+" else f"{root}/{site}/+/data"
        if share_group:
            data, clean_session = f"$share/{share_group}/{data}", True
        self.subscriptions = (
            data,
            contract.STATUS_SUBSCRIPTION if site == "+" else f"{root}/{site}/+/status",
            contract.HEALTH_SUBSCRIPTION if site == "+" else f"{root}/{site}/+/health",
        )
        self._counts = dict.fromkeys(COUNTERS, 0)
        # Told of what arrives (cloud/commands.py, cloud/notify.py), on the network
        # thread after the store's commit: on_records(site, gateway, records) and
        # on_gateway_online(site, gateway) for a live "online" status.
        self.listeners: list[Any] = []
        self._counts_lock = threading.Lock()
        self._connected = False
        self._ready = threading.Event()
        self._stopping = False
        self.writers = writers
        self._pool: ThreadPoolExecutor | None = None
        self._client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=client_id,
            protocol=mqtt.MQTTv311, clean_session=clean_session,
            manual_ack=writers > 1,
        )
        if username:
            self._client.username_pw_set(username, password)
        if tls is not None:
            apply_tls(self._client, tls)
        # One receiver, not a city of gateways: a short cap, so that it is back
        # within seconds of the broker's return (docs/uplink.md).
        self._client.reconnect_delay_set(min_delay=1, max_delay=4)
        self._client.on_connect = self._on_connect
        self._client.on_connect_fail = self._on_connect_fail
        self._connect_failures = 0
        self._client.on_disconnect = self._on_disconnect
        self._client.on_subscribe = self._on_subscribe
        self._client.on_message = self._on_message
        # Nagle's algorithm would hold each ack (a small write right after the
        # batch's PUBACK) until the broker ACKs the PUBACK, which Linux delays by up to
        # 40 ms: the gateway's round trip would wait for it.
        self._client.on_socket_open = lambda client, userdata, sock: (
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1))  # type: ignore[attr-defined]

    # -- lifecycle -----------------------------------------------------------------

    def start(self) -> None:
        """Connect in the background; paho keeps reconnecting until stop()."""
        self._stopping = False
        if self.writers > 1:
            self._pool = ThreadPoolExecutor(self.writers, "ingest-writer")
        self._client.connect_async(self.broker_host, self.broker_port, self.keepalive_s)
        self._client.loop_start()

    def stop(self) -> None:
        """Disconnect and stop the network thread."""
        self._stopping = True
        self._client.disconnect()
        self._client.loop_stop()
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        self._connected = False
        self._ready.clear()

    def wait_ready(self, timeout_s: float) -> bool:
        """Wait until connected and subscribed; return whether that happened in time."""
        return self._ready.wait(timeout_s)

    @property
    def connected(self) -> bool:
        """Whether the broker connection is up."""
        return self._connected

    def publish(self, topic: str, payload: bytes) -> bool:
        """Publish at QoS 1 (commands to gateways); False if not queued for sending."""
        if not self._connected:
            return False
        info = self._client.publish(topic, payload, qos=1)
        return info.rc == mqtt.MQTT_ERR_SUCCESS

    def _tell(self, method: str, *args: Any) -> None:
        for listener in self.listeners:
            func = getattr(listener, method, None)
            if func is None:
                continue
            try:
                func(*args)
            except Exception:  # noqa: BLE001 - a listener never stops ingest
                log.exception("%s.%s failed", type(listener).__name__, method)

    def counters(self) -> dict[str, int]:
        """Return a snapshot of the ingest counters."""
        with self._counts_lock:
            return dict(self._counts)

    def _count(self, name: str, n: int = 1) -> None:
        with self._counts_lock:
            self._counts[name] += n

    # -- paho callbacks (network thread) --------------------------------------------

    def _on_connect(
        self, client: mqtt.Client, userdata: Any, flags: mqtt.ConnectFlags,
        reason_code: mqtt.ReasonCode, properties: mqtt.Properties | None,
    ) -> None:
        self._connect_failures = 0
        if reason_code.is_failure:
            log.warning("broker %s:%s refused the connection: %s",
                        self.broker_host, self.broker_port, reason_code)
            return
        self._connected = True
        log.info("connected to broker %s:%s as %s (session present: %s)",
                 self.broker_host, self.broker_port, self.client_id,
                 flags.session_present)
        client.subscribe([(topic, 1) for topic in self.subscriptions])

    def _on_subscribe(
        self, client: mqtt.Client, userdata: Any, mid: int,
        reason_codes: list[mqtt.ReasonCode], properties: mqtt.Properties | None,
    ) -> None:
        if any(code.is_failure for code in reason_codes):
            log.error("broker refused subscriptions %s: %s", self.subscriptions,
                      [str(code) for code in reason_codes])
            return
        log.debug("subscribed to %s", self.subscriptions)
        self._ready.set()

    def _on_connect_fail(self, client: mqtt.Client, userdata: Any) -> None:
        # paho calls this inside its `except OSError`: the exception is the reason.
        self._connect_failures += 1
        if self._connect_failures in (1, 10) or self._connect_failures % 100 == 0:
            log.warning("cannot connect to the broker %s:%s (attempt %d): %s",
                        self.broker_host, self.broker_port, self._connect_failures,
                        sys.exc_info()[1])

    def _on_disconnect(
        self, client: mqtt.Client, userdata: Any, flags: mqtt.DisconnectFlags,
        reason_code: mqtt.ReasonCode, properties: mqtt.Properties | None,
    ) -> None:
        self._connected = False
        self._ready.clear()
        if not self._stopping:
            log.warning("lost broker %s:%s (%s); reconnecting",
                        self.broker_host, self.broker_port, reason_code)

    def _on_message(
        self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage,
    ) -> None:
        pool = self._pool
        if pool is not None and msg.topic.endswith("/data"):
            pool.submit(self._handle, client, msg)
        else:
            self._handle(client, msg)

    def _handle(self, client: mqtt.Client, msg: mqtt.MQTTMessage) -> None:
        try:
            try:
                site, gateway, leaf = contract.split_topic(msg.topic)
            except ContractError as exc:
                self._malformed(msg.topic, str(exc))
                return
            if leaf == "data":
                self._on_data(client, site, gateway, msg)
            elif leaf == "status":
                self._on_status(site, gateway, msg)
            elif leaf == "health":
                self._on_health(site, gateway, msg)
        except Exception:  # noqa: BLE001 - one bad message must never stop ingest
            log.exception("unexpected error handling a message on %s", msg.topic)
        finally:
            if self.writers > 1:  # manual PUBACKs: this one's work is committed
                client.ack(msg.mid, msg.qos)

    # -- handlers --------------------------------------------------------------------

    def _malformed(self, topic: str, reason: str) -> None:
        self._count("malformed")
        log.warning("dropped malformed message on %s: %s", topic, reason)

    def _on_data(
        self, client: mqtt.Client, site: str, gateway: str, msg: mqtt.MQTTMessage,
    ) -> None:
        self._count("messages")
        if len(msg.payload) > self.max_payload_bytes:
            reason = (f"payload of {len(msg.payload)} bytes is over the "
                      f"{self.max_payload_bytes}-byte limit")
            self._malformed(msg.topic, reason)
            self._dead_letter(msg.topic, reason, msg.payload, site, gateway)
            return
        try:
            body = contract.decode_envelope(bytes(msg.payload), self.max_payload_bytes)
            if (body["site"], body["gateway"]) != (site, gateway):
                raise ContractError(
                    f"body names {body['site']}/{body['gateway']}, "
                    f"topic {site}/{gateway}"
                )
        except ValueError as exc:  # not even an envelope: keep it aside, no ack
            self._malformed(msg.topic, str(exc))
            self._dead_letter(msg.topic, str(exc), msg.payload, site, gateway)
            return
        historical = bool(body.get("historical", False))
        # The store checks every record before it writes any, so the store's own
        # rules run once on a good batch; only a batch it refuses is gone through
        # record by record to keep the bad ones aside.
        good, dead = self._split_records(msg.topic, site, gateway, body["records"],
                                         store_rules=False)
        try:
            try:
                stored, new, duplicates = self.store.store_batch(
                    site, gateway, good, historical)
            except ValueError:
                good, more_dead = self._split_records(msg.topic, site, gateway, good,
                                                      store_rules=True)
                dead += more_dead
                stored, new, duplicates = self.store.store_batch(
                    site, gateway, good, historical)
        except ValueError as exc:  # checked above; a store rule we did not foresee
            self._malformed(msg.topic, str(exc))
            self._dead_letter(msg.topic, str(exc), msg.payload, site, gateway)
            return
        except STORE_ERRORS:
            self._count("store_errors")
            log.exception("cannot store a batch from %s/%s; not acknowledged",
                          site, gateway)
            return
        self._count("records", new)
        self._count("duplicates", duplicates)
        ack = contract.encode_ack(body.get("batch"), contract.seq_ranges(stored),
                                  contract.seq_ranges(dead))
        info = client.publish(contract.ack_topic(site, gateway), ack, qos=1)
        if info.rc == mqtt.MQTT_ERR_SUCCESS:
            self._count("acks_sent")
        else:
            log.warning("cannot publish the ack of batch %s to %s/%s: %s",
                        body.get("batch"), site, gateway, mqtt.error_string(info.rc))
        log.debug("batch %s from %s/%s: %d new, %d duplicate", body.get("batch"),
                  site, gateway, new, duplicates)
        if self.listeners:  # after the ack: the gateway's round trip does not wait
            self._tell("on_records", site, gateway, good)

    def _dead_letter(self, topic: str, reason: str, payload: bytes | bytearray | str,
                     site: str | None, gateway: str | None, seq: int | None = None
                     ) -> None:
        if isinstance(payload, bytes | bytearray):
            raw = bytes(payload)
            # A compressed envelope is kept as base64, so it can be inflated later.
            payload = (raw.decode("utf-8", errors="replace") if raw[:1] == b"{"
                       else "base64:" + base64.b64encode(raw[:49152]).decode())
        try:
            self.store.dead_letter(topic, reason, payload, site, gateway, seq)
        except STORE_ERRORS:
            self._count("store_errors")
            log.exception("cannot store a dead letter from %s", topic)

    def _split_records(self, topic: str, site: str, gateway: str, records: list[Any],
                       store_rules: bool = True
                       ) -> tuple[list[dict[str, Any]], list[int]]:
        """Good records to store; bad ones go to the dead-letter table, one by one.

        The contract is checked always; the store's own rules with `store_rules`.
        """
        good: list[dict[str, Any]] = []
        dead: list[int] = []
        for i, rec in enumerate(records):
            try:
                contract.check_record(i, rec)
                if store_rules:
                    check_row(rec, i)
            except ValueError as exc:
                seq = contract.record_seq(rec)
                self._count("dead_lettered")
                log.warning("dead-lettered record %d of a batch on %s: %s", i, topic, exc)
                self._dead_letter(topic, str(exc), json.dumps(rec, default=str), site,
                                  gateway, seq)
                if seq is not None:
                    dead.append(seq)
                continue
            good.append(rec)
        return good, dead

    def _on_health(self, site: str, gateway: str, msg: mqtt.MQTTMessage) -> None:
        if not msg.payload:
            return  # a cleared retained health message
        try:
            if len(msg.payload) > self.max_payload_bytes:
                raise ContractError(f"health of {len(msg.payload)} bytes is over the "
                                    f"{self.max_payload_bytes}-byte limit")
            health = contract.decode_health(bytes(msg.payload))
            if (health["site"], health["gateway"]) != (site, gateway):
                raise ContractError(f"body names {health['site']}/{health['gateway']}, "
                                    f"topic {site}/{gateway}")
        except ContractError as exc:
            self._malformed(msg.topic, str(exc))
            self._dead_letter(msg.topic, str(exc), msg.payload, site, gateway)
            return
        try:
            # A live message is a sign of life; a retained one is what was last said.
            self.store.store_health(site, gateway, health, seen=not msg.retain)
        except STORE_ERRORS:
            self._count("store_errors")
            log.exception("cannot store the health of %s/%s", site, gateway)
            return
        self._count("health")

    def _on_status(self, site: str, gateway: str, msg: mqtt.MQTTMessage) -> None:
        try:
            status = msg.payload.decode().strip()
        except UnicodeDecodeError:
            self._malformed(msg.topic, "status is not UTF-8")
            return
        if not status:
            return  # a cleared retained status
        if status not in GATEWAY_STATUSES:
            self._malformed(msg.topic, f"status {status[:40]!r} is not a status")
            return
        # A live "online" is a sign of life; a retained one is only what was last said.
        seen = status == "online" and not msg.retain
        try:
            self.store.set_gateway_status(site, gateway, status, seen=seen)
        except STORE_ERRORS:
            self._count("store_errors")
            log.exception("cannot store the status of %s/%s", site, gateway)
            return
        log.info("gateway %s/%s is %s", site, gateway, status)
        if seen:
            self._tell("on_gateway_online", site, gateway)
