"""Uplink faults on real parts: a half-open link, a broker that refuses big messages,
a receiver killed mid-sync. Every committed record reaches the cloud exactly once."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from edge.config import load_config
from edge.store import EdgeStore
from groundwatch.demo import write_site
from hil_tests.conftest import Site
from hil_tests.harness import (
    BlackholeProxy,
    PrivateMosquitto,
    free_port,
    query,
    wait_for,
)

pytestmark = pytest.mark.hil


def make_site(tmp_path: Path, broker: PrivateMosquitto, uplink_port: int | None = None,
              **uplink: object) -> Site:
    """The demo site with [uplink] keys changed, its gateway on uplink_port."""
    path = write_site(tmp_path, uplink_port or broker.port, leak_at_s=1e9)
    text = path.read_text()
    extra = "".join(f"{k} = {v!r}\n".replace("'", '"') for k, v in uplink.items())
    for key in uplink:
        text = "\n".join(ln for ln in text.splitlines()
                         if not ln.startswith(f"{key} ="))
    path.write_text(text.replace("[uplink]\n", f"[uplink]\n{extra}", 1) + "\n")
    return Site(tmp_path, path, load_config(path), broker, free_port(),
                tmp_path / "cloud.sqlite", {})


def gateway_seqs(db: Path) -> set[int]:
    return {r[0] for r in query(db, "SELECT seq FROM readings UNION ALL "
                                    "SELECT seq FROM events")}


def cloud_seqs(db: Path) -> list[int]:
    return [r[0] for r in query(db, "SELECT seq FROM records WHERE gateway='gw-demo'")]


def drained_past(db: Path, seq: int) -> bool:
    return (query(db, "SELECT min(seq) FROM outbox")[0][0] or 1 << 62) > seq


def every_record_once(site: Site, parked: set[int] = frozenset()) -> None:
    gw = gateway_seqs(site.gateway_db)
    unsent = {r[0] for r in query(site.gateway_db, "SELECT seq FROM outbox")}
    cloud = cloud_seqs(site.cloud_db)
    assert len(cloud) == len(set(cloud)), "a record reached the cloud twice"
    assert set(cloud) == gw - unsent - parked
    assert not set(cloud) & parked


@pytest.fixture
def broker(tmp_path: Path, request):
    b = PrivateMosquitto(tmp_path / "broker", extra=getattr(request, "param", ()))
    b.start()
    yield b
    b.stop()


@pytest.fixture
def cleanup():
    sites: list[Site] = []
    yield sites.append
    for s in sites:
        for proc in s.procs.values():
            proc.stop()
        if s.sim is not None:
            s.sim.close()


def test_half_open_link_loses_nothing_sent_before_the_client_notices(
        tmp_path, broker, cleanup):
    proxy = BlackholeProxy(broker.port)
    try:
        site = make_site(tmp_path, broker, proxy.port, keepalive_s=5, ack_timeout_s=3)
        cleanup(site)
        site.start_sim()
        site.start_cloud()
        site.start_edge()
        wait_for(lambda: len(cloud_seqs(site.cloud_db)) > 100, 40,
                 f"records flowing\n{site.logs()}")
        proxy.cut()
        seq_at_cut = max(gateway_seqs(site.gateway_db))
        # Records committed during the cut go out onto a link that swallows them.
        wait_for(lambda: "dropping the connection" in site.procs["edge"].tail(200)
                 or "disconnected" in site.procs["edge"].tail(200), 30,
                 f"the gateway to notice the dead link\n{site.logs()}")
        time.sleep(2)
        assert proxy.dropped_bytes > 0
        seq_cut_end = max(gateway_seqs(site.gateway_db))
        assert seq_cut_end > seq_at_cut + 20
        proxy.resume()
        wait_for(lambda: drained_past(site.gateway_db, seq_cut_end), 60,
                 f"the outbox to drain after the link returns\n{site.logs()}")
        assert proxy.connections >= 2  # the client reconnected
        assert site.procs["edge"].stop() == 0
        time.sleep(0.5)
        every_record_once(site)
        assert set(range(1, seq_cut_end + 1)) & gateway_seqs(site.gateway_db) <= set(
            cloud_seqs(site.cloud_db))
    finally:
        proxy.close()


def add_poison(site: Site) -> int:
    """A record no broker limit of the test lets through, committed before start."""
    store = EdgeStore(site.gateway_db)
    try:
        return store.add_event("gw-demo", "gateway", "note",
                               message=os.urandom(12000).hex())
    finally:
        store.close()


@pytest.mark.parametrize("broker", [
    # Mosquitto PUBACKs a publish over message_size_limit and discards it (MQTT 3.1.1).
    ("message_size_limit 1500",),
    # ...and disconnects a client whose packet is over max_packet_size.
    ("max_packet_size 1600",),
], indirect=True, ids=["message_size_limit", "max_packet_size"])
def test_too_large_batches_are_split_and_a_too_large_record_parked(
        tmp_path, broker, cleanup):
    site = make_site(tmp_path, broker)
    cleanup(site)
    site.gateway_db.parent.mkdir(parents=True, exist_ok=True)
    poison = add_poison(site)
    site.start_sim()
    site.start_cloud()
    site.start_edge()
    wait_for(lambda: query(site.gateway_db, "SELECT seq FROM parked") == [(poison,)],
             90, f"the oversized record to be parked\n{site.logs()}")
    # Full batches of the demo site are over both limits too: they keep flowing.
    wait_for(lambda: len(cloud_seqs(site.cloud_db)) > 600, 60,
             f"batches over the limit to keep getting through\n{site.logs()}")
    seq = max(gateway_seqs(site.gateway_db))
    wait_for(lambda: drained_past(site.gateway_db, seq), 60,
             f"the rest of the outbox to drain\n{site.logs()}")
    assert site.procs["edge"].stop() == 0
    time.sleep(0.5)
    every_record_once(site, parked={poison})
    # The gateway told the cloud, in an event of its own.
    [(message,)] = query(site.cloud_db, "SELECT message FROM events WHERE "
                         "source = 'store' AND state = 'parked'")
    assert str(poison) in message
    assert "parked record" in site.procs["edge"].log.read_text()


def test_receiver_killed_and_restarted_mid_sync_gets_every_record_once(
        tmp_path, broker, cleanup):
    site = make_site(tmp_path, broker, batch_size=10, max_inflight_batches=1)
    cleanup(site)
    site.start_sim()
    site.start_cloud()
    site.start_edge()
    wait_for(lambda: len(cloud_seqs(site.cloud_db)) > 50, 40,
             f"records flowing\n{site.logs()}")
    # A backlog: the gateway keeps polling while the broker is away.
    broker.stop()
    time.sleep(8)
    backlog = max(gateway_seqs(site.gateway_db))
    in_cloud = len(cloud_seqs(site.cloud_db))
    broker.start()
    wait_for(lambda: len(cloud_seqs(site.cloud_db)) > in_cloud, 30,
             f"the backlog to start arriving\n{site.logs()}")
    site.procs["cloud"].proc.send_signal(signal.SIGKILL)
    site.procs["cloud"].proc.wait()
    assert not drained_past(site.gateway_db, backlog), "the backlog was already synced"
    time.sleep(3)
    site.start_cloud()
    wait_for(lambda: drained_past(site.gateway_db, backlog), 60,
             f"the backlog to drain after the receiver returns\n{site.logs()}")
    assert site.procs["edge"].stop() == 0
    time.sleep(0.5)
    every_record_once(site)
