"""Two real receivers share one subscription into one PostgreSQL database.

A private Mosquitto, two `groundwatch cloud --share-group` processes, and ten
stand-in gateways sending a 100,000-reading run as contract batches; one receiver is
SIGKILLed a third of the way in. Every seq must be stored exactly once and
acknowledged: what the dead receiver held unacknowledged is resent and lands at the
other one.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from hil_tests.harness import PrivateMosquitto, Proc, free_port, http_json, wait_for
from hil_tests.pgdb import temp_database
from hil_tests.publisher import Publisher, Result, gateway_name

pytestmark = pytest.mark.hil

SITE = "city-01"
GATEWAYS, PER_GATEWAY = 10, 10_000
TOTAL = GATEWAYS * PER_GATEWAY
ACK_TIMEOUT_S = 3.0


def health(port: int) -> dict[str, Any] | None:
    try:
        return http_json(f"http://127.0.0.1:{port}/api/health")  # type: ignore[no-any-return]
    except OSError:
        return None


@pytest.fixture
def pg_url() -> Iterator[str]:
    with temp_database() as url:
        yield url


def test_two_receivers_store_every_record_once(tmp_path: Path, pg_url: str) -> None:
    broker = PrivateMosquitto(tmp_path / "broker")
    broker.start()
    ports = [free_port(), free_port()]
    procs = [Proc(f"cloud{k}", ["cloud", "--db", pg_url, "--broker", broker.url,
                                "--share-group", "receivers", "--http-port", str(port)],
                  tmp_path) for k, port in enumerate(ports)]
    publisher: Publisher | None = None
    try:
        for port in ports:
            wait_for(lambda: (health(port) or {}).get("broker_connected"), 30,
                     f"a receiver on port {port} connected")
        publisher = Publisher(broker.port, SITE, GATEWAYS, PER_GATEWAY,
                              ack_timeout_s=ACK_TIMEOUT_S)
        outcome: dict[str, Any] = {}

        def run() -> None:
            assert publisher is not None
            try:
                outcome["result"] = publisher.run(timeout_s=240)
            except BaseException as exc:  # noqa: BLE001 - re-raised by the test
                outcome["error"] = exc

        sender = threading.Thread(target=run)
        sender.start()
        # A third of the way in, the second receiver dies without a word.
        wait_for(lambda: sum(map(len, publisher.result.stored.values())) >= TOTAL // 3,
                 120, "a third of the run acknowledged")
        before_kill = (health(ports[1]) or {}).get("ingest", {}).get("records", 0)
        procs[1].proc.send_signal(signal.SIGKILL)
        procs[1].proc.wait(10)
        killed_at = time.monotonic()
        sender.join(300)
        assert "error" not in outcome, outcome.get("error")
        result: Result = outcome["result"]
        survivor = health(ports[0])
        assert survivor is not None, procs[0].tail()
    finally:
        if publisher is not None:
            publisher.close()
        for proc in procs:
            proc.stop()
        broker.stop()

    # Both receivers took a share of the batches before the kill; after it, the
    # batches the dead one held were resent (ack timeout) and stored by the survivor.
    assert before_kill > 0
    assert 0 < survivor["ingest"]["records"] < TOTAL
    assert result.resends > 0 and result.last_ack > killed_at
    # Every seq of every gateway acknowledged, and stored exactly once.
    for k in range(GATEWAYS):
        assert result.stored[gateway_name(k)] == set(range(1, PER_GATEWAY + 1))
    with psycopg.connect(pg_url) as conn:
        per_gateway = conn.execute(
            "SELECT gateway, count(*), count(DISTINCT seq), min(seq), max(seq) "
            "FROM readings WHERE site = %s GROUP BY gateway ORDER BY gateway",
            (SITE,)).fetchall()
        records = conn.execute("SELECT count(*) FROM records").fetchone()
        latest = conn.execute("SELECT count(*), min(seq), max(seq) FROM latest "
                              "WHERE site = %s", (SITE,)).fetchone()
    assert per_gateway == [(gateway_name(k), PER_GATEWAY, PER_GATEWAY, 1, PER_GATEWAY)
                           for k in range(GATEWAYS)]
    assert records == (TOTAL,)
    # The gateways share one site and 200 point names; each point ends at its reading
    # of the last round (seqs 9801..9999 of round 49, seq 10000 of round 50).
    assert latest == (200, PER_GATEWAY - 199, PER_GATEWAY)
