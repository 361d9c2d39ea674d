"""Cloud ingest benchmarks of issue 7: readings/s one receiver stores and acknowledges.

Run from the repository root: ``.venv/bin/python -m bench.ingest`` (about 4 minutes)
or with ``--quick`` (about 1.5 minutes). Needs PostgreSQL on 127.0.0.1:5432 (trust
auth; GW_TEST_PG overrides) and Mosquitto. A real `groundwatch cloud` process is fed
by ten stand-in gateways (hil_tests/publisher.py) through a private Mosquitto, on
SQLite and on PostgreSQL; the baselines, in the same run, are the raw store_batch
rate without MQTT and the broker's round trip with a receiver that stores nothing.
docs/bench.md says what each figure measures and how.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil

from bench.gateway import REPO, Row, _print_table, child, groundwatch_cmd

TARGET_RATE = 20_000.0  # readings/s, one receiver, each store
GATEWAYS = 10
BATCH = 200  # the gateway's default uplink.batch_size
SITE = "bench-city"


def _ready(port: int) -> bool:
    from hil_tests.harness import http_json

    try:
        return bool(http_json(f"http://127.0.0.1:{port}/api/health")["broker_connected"])
    except OSError:
        return False


def _wait(predicate: Callable[[], Any], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.1)


# -- baselines --------------------------------------------------------------------------


def store_rate(open_store: Callable[[], Any], total: int) -> float:
    """Readings/s of store_batch alone: decoded batches of BATCH, one gateway each."""
    from hil_tests.publisher import readings

    per_gateway = total // GATEWAYS
    batches = [(f"gw-{k:04d}", readings(first, BATCH, 1_764_000_000_000))
               for first in range(1, per_gateway + 1, BATCH) for k in range(GATEWAYS)]
    store = open_store()
    try:
        t0 = time.perf_counter()
        for gw, records in batches:
            store.store_batch(SITE, gw, records)
        return len(batches) * BATCH / (time.perf_counter() - t0)
    finally:
        store.close()


def null_receiver(port: int) -> None:
    """Acknowledge every batch as stored without storing it: the broker's round trip."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    from groundwatch import contract

    def on_message(client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        site, gw, _ = contract.split_topic(msg.topic)
        body = contract.decode_envelope(bytes(msg.payload))
        seqs = [rec["seq"] for rec in body["records"]]
        client.publish(contract.ack_topic(site, gw), contract.encode_ack(
            body["batch"], contract.seq_ranges(seqs)), qos=1)

    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-null-receiver",
                         protocol=mqtt.MQTTv311)
    client.on_connect = lambda c, *_: c.subscribe(contract.DATA_SUBSCRIPTION, 1)
    client.on_message = on_message
    client.connect("127.0.0.1", port)
    client.loop_forever()


# -- a receiver fed through the broker --------------------------------------------------


def fed_rate(broker_port: int, total: int) -> tuple[float, int]:
    """Readings/s from the first publish to the last ack; and the resends."""
    from hil_tests.publisher import Publisher

    publisher = Publisher(broker_port, SITE, GATEWAYS, total // GATEWAYS,
                          batch_size=BATCH, ack_timeout_s=30.0)
    try:
        result = publisher.run(timeout_s=600)
    finally:
        publisher.close()
    for k, seqs in enumerate(result.stored.values()):
        if len(seqs) != total // GATEWAYS:
            raise RuntimeError(f"gateway {k}: {len(seqs)} seqs acknowledged")
    return result.rate_per_s, result.resends


@contextlib.contextmanager
def receiver(work: Path, name: str, db: str, broker_url: str, *extra: str
             ) -> Iterator[psutil.Process]:
    """A `groundwatch cloud` process, ready; yields it for its CPU time."""
    from hil_tests.harness import free_port

    port = free_port()
    cmd = groundwatch_cmd("cloud", "--db", db, "--broker", broker_url,
                          "--http-port", str(port), *extra)
    with child(cmd, work / f"{name}.log") as proc:
        _wait(lambda: _ready(port), 30, f"receiver {name}")
        yield psutil.Process(proc.pid)


def sqlite_bytes_per_reading(db: Path) -> float:
    import sqlite3

    conn = sqlite3.connect(db)
    try:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        (n,), = conn.execute("SELECT count(*) FROM readings")
        (pages,), = conn.execute("PRAGMA page_count")
        (free,), = conn.execute("PRAGMA freelist_count")
        (size,), = conn.execute("PRAGMA page_size")
    finally:
        conn.close()
    return (pages - free) * size / n


def pg_bytes_per_reading(url: str) -> float:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE")
        row = conn.execute(
            "SELECT (SELECT count(*) FROM readings), pg_total_relation_size('readings')"
            " + pg_total_relation_size('records')").fetchone()
    assert row is not None
    return float(row[1]) / row[0]


# -- the run ----------------------------------------------------------------------------


def run(quick: bool, work: Path) -> int:
    """Measure every figure, print them as they come, then the table."""
    from cloud.store import CloudStore
    from cloud.store_pg import PgStore
    from hil_tests.harness import PrivateMosquitto
    from hil_tests.pgdb import temp_database

    total, rounds = (100_000, 1) if quick else (200_000, 3)
    print(f"bench.ingest{' --quick' if quick else ''}: {psutil.cpu_count()} cores, "
          f"load {' '.join(f'{x:.2f}' for x in psutil.getloadavg())}, {total} "
          f"readings x {rounds} rounds, {GATEWAYS} gateways, batches of {BATCH}, "
          f"in {work}")
    figures: dict[str, list[float]] = {}

    def note(key: str, value: float, text: str) -> None:
        figures.setdefault(key, []).append(value)
        print(f"   {text}", flush=True)

    broker = PrivateMosquitto(work / "broker")
    broker.start()
    try:
        for r in range(rounds):
            print(f"round {r + 1}:")
            # 1. raw store_batch, no MQTT.
            db = work / f"raw{r}.sqlite"
            rate = store_rate(lambda: CloudStore(db), total)
            note("raw_sqlite", rate, f"store_batch, SQLite: {rate:,.0f} readings/s")
            with temp_database("gw_bench") as url:
                rate = store_rate(lambda: PgStore(url), total)
            note("raw_pg", rate, f"store_batch, PostgreSQL: {rate:,.0f} readings/s")
            # 2. the broker's round trip, nothing stored.
            cmd = [sys.executable, "-m", "bench.ingest", "--null-receiver",
                   str(broker.port)]
            with child(cmd, work / "null.log", cwd=REPO):
                time.sleep(1.0)
                rate, _ = fed_rate(broker.port, total)
            note("broker", rate, f"broker round trip, no store: {rate:,.0f} readings/s "
                 f"({rate / BATCH:,.0f} batches/s)")
            # 3. one receiver on SQLite, then on PostgreSQL.
            db = work / f"cloud{r}.sqlite"
            with receiver(work, f"sqlite{r}", str(db), broker.url) as proc:
                cpu0 = sum(proc.cpu_times()[:2])
                rate, resends = fed_rate(broker.port, total)
                cpu = sum(proc.cpu_times()[:2]) - cpu0
            note("rx_sqlite", rate, f"receiver on SQLite: {rate:,.0f} readings/s, "
                 f"{cpu * 1e6 / total:.1f} us CPU/reading, {resends} resends")
            size = sqlite_bytes_per_reading(db)
            note("bytes_sqlite", size, f"SQLite bytes/reading: {size:.0f}")
            with temp_database("gw_bench") as url:
                with receiver(work, f"pg{r}", url, broker.url) as proc:
                    cpu0 = sum(proc.cpu_times()[:2])
                    rate, resends = fed_rate(broker.port, total)
                    cpu = sum(proc.cpu_times()[:2]) - cpu0
                note("rx_pg", rate, f"receiver on PostgreSQL: {rate:,.0f} readings/s, "
                     f"{cpu * 1e6 / total:.1f} us CPU/reading, {resends} resends")
                size = pg_bytes_per_reading(url)
                note("bytes_pg", size, f"PostgreSQL bytes/reading: {size:.0f}")
            # 4. two receivers sharing a subscription into one PostgreSQL database.
            with temp_database("gw_bench") as url, contextlib.ExitStack() as stack:
                for k in range(2):
                    stack.enter_context(receiver(work, f"shared{r}-{k}", url, broker.url,
                                                 "--share-group", "bench"))
                rate, resends = fed_rate(broker.port, total)
            note("shared_pg", rate, f"two receivers sharing, PostgreSQL: {rate:,.0f} "
                 f"readings/s, {resends} resends")
    finally:
        broker.stop()

    def med(key: str) -> float:
        return statistics.median(figures[key])

    spread = "" if rounds == 1 else " (median of {})".format(rounds)
    rows = [
        Row(f"store_batch alone, SQLite{spread}", f"{med('raw_sqlite'):,.0f}/s",
            "baseline", None),
        Row(f"store_batch alone, PostgreSQL{spread}", f"{med('raw_pg'):,.0f}/s",
            "baseline", None),
        Row("broker round trip, receiver stores nothing", f"{med('broker'):,.0f}/s",
            "baseline", None),
        Row("one receiver, SQLite: stored and acked", f"{med('rx_sqlite'):,.0f}/s",
            f">= {TARGET_RATE:,.0f}/s", med("rx_sqlite") >= TARGET_RATE),
        Row("one receiver, PostgreSQL: stored and acked", f"{med('rx_pg'):,.0f}/s",
            f">= {TARGET_RATE:,.0f}/s", med("rx_pg") >= TARGET_RATE),
        Row("two receivers sharing, PostgreSQL", f"{med('shared_pg'):,.0f}/s", "",
            None),
        Row("SQLite bytes per reading", f"{med('bytes_sqlite'):.0f}", "", None),
        Row("PostgreSQL bytes per reading", f"{med('bytes_pg'):.0f}", "", None),
    ]
    for key, values in figures.items():
        if len(values) > 1:
            print(f"   {key}: " + ", ".join(f"{v:,.0f}" for v in values))
    _print_table(rows)
    return 0 if all(r.passed is not False for r in rows) else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.ingest", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short run (~1.5 minutes)")
    parser.add_argument("--workdir", help="keep databases and logs here (default: a "
                        "temp dir)")
    parser.add_argument("--null-receiver", type=int, metavar="PORT",
                        help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.null_receiver:
        null_receiver(args.null_receiver)
        return 0
    if args.workdir:
        work = Path(args.workdir).resolve()
        work.mkdir(parents=True, exist_ok=True)
        return run(args.quick, work)
    with tempfile.TemporaryDirectory(prefix="groundwatch-bench-") as tmp:
        return run(args.quick, Path(tmp))


if __name__ == "__main__":
    sys.exit(main())
