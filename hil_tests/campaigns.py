"""Fault campaigns: the full versions run from one command each; tests run short ones.

    python -m hil_tests.campaigns power-cut --kills 100
    python -m hil_tests.campaigns outage --hours 12

prints a JSON result. docs/faults.md records the latest results.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import signal
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from edge.config import load_config
from groundwatch.demo import write_site
from hil_tests.harness import (
    PrivateMosquitto,
    Proc,
    ThreadedSimulator,
    free_port,
    query,
    wait_for,
)


def _records(db: Path, gateway_filter: str = "") -> set[int]:
    return {r[0] for r in query(db, f"SELECT seq FROM readings {gateway_filter}")} | {
        r[0] for r in query(db, f"SELECT seq FROM events {gateway_filter}")}


def power_cut(workdir: Path, kills: int, seed: int = 1,
              min_up_s: float = 0.3, max_up_s: float = 2.5) -> dict[str, Any]:
    """SIGKILL the gateway `kills` times at random moments under polling and sync load,
    restart the broker without persistence, then compare gateway and cloud."""
    rng = random.Random(seed)
    broker = PrivateMosquitto(workdir / "broker", persistence=False)
    broker.start()
    site = write_site(workdir, broker.port, leak_at_s=1e9)
    cfg = load_config(site)
    gw_db = cfg.data_dir / "gateway.sqlite"
    cloud_db = workdir / "cloud.sqlite"
    sim = ThreadedSimulator(cfg)
    cloud = Proc("cloud", ["cloud", "--db", str(cloud_db), "--broker", broker.url,
                           "--http-port", str(free_port())], workdir)
    integrity_failures = 0
    try:
        for i in range(kills):
            edge = Proc("edge", ["edge", "--config", str(site)], workdir)
            time.sleep(rng.uniform(min_up_s, max_up_s))
            edge.proc.send_signal(signal.SIGKILL)
            edge.proc.wait()
            if query(gw_db, "PRAGMA integrity_check") != [("ok",)]:
                integrity_failures += 1
            if i == kills // 2:  # leak mid-campaign: an alarm event among the records
                sim.call(lambda: sim.sim.trigger_leak("cable1", 42.5))
        committed = _records(gw_db)

        # The broker restarts and forgets everything it held.
        broker.stop()
        broker.start()
        edge = Proc("edge", ["edge", "--config", str(site)], workdir)
        last = max(committed)
        wait_for(lambda: (query(gw_db, "SELECT min(seq) FROM outbox")[0][0] or 1e18)
                 > last, 120, f"the outbox to drain\n{edge.tail()}\n{cloud.tail()}")
        edge.stop()
        time.sleep(0.5)
        in_cloud = query(cloud_db, "SELECT seq FROM records WHERE gateway='gw-demo'")
        cloud_seqs = [r[0] for r in in_cloud]
        unsent = {r[0] for r in query(gw_db, "SELECT seq FROM outbox")}
        gateway_all = _records(gw_db)
        return {
            "kills": kills,
            "integrity_failures": integrity_failures,
            "records_committed_before_final_run": len(committed),
            "records_in_gateway": len(gateway_all),
            "records_in_cloud": len(cloud_seqs),
            "duplicates_in_cloud": len(cloud_seqs) - len(set(cloud_seqs)),
            "missing_in_cloud": len(gateway_all - unsent - set(cloud_seqs)),
            "unknown_in_cloud": len(set(cloud_seqs) - gateway_all),
            "committed_missing_in_cloud": len(committed - set(cloud_seqs)),
            "alarm_events": query(gw_db, "SELECT count(*) FROM events WHERE "
                                  "event='alarm' AND state='raised'")[0][0],
        }
    finally:
        cloud.stop()
        sim.close()
        broker.stop()


def outage(workdir: Path, hours: float, speed: float = 900.0,
           poll_interval_s: float = 0.5, historical_after_s: float = 2.0
           ) -> dict[str, Any]:
    """Cut the broker for `hours` simulated hours (the simulator at `speed`), leak
    during the cut, then compare what the gateway committed with what the cloud got
    and in which order it came."""
    broker = PrivateMosquitto(workdir / "broker", persistence=True)
    broker.start()
    site = write_site(workdir, broker.port, leak_at_s=1e9)
    text = re.sub(r"poll_interval_s = \d+", f"poll_interval_s = {poll_interval_s}",
                  site.read_text())
    site.write_text(text.replace(
        "[uplink]\n", f"[uplink]\nhistorical_after_s = {historical_after_s}\n", 1))
    cfg = load_config(site)
    gw_db = cfg.data_dir / "gateway.sqlite"
    cloud_db = workdir / "cloud.sqlite"
    sim = ThreadedSimulator(cfg, speed=speed)
    cloud = Proc("cloud", ["cloud", "--db", str(cloud_db), "--broker", broker.url,
                           "--http-port", str(free_port())], workdir)
    edge = Proc("edge", ["edge", "--config", str(site)], workdir)
    try:
        wait_for(lambda: cloud_db.exists() and query(
            cloud_db, "SELECT count(*) FROM records")[0][0] > 50, 60,
            f"records flowing\n{edge.tail()}\n{cloud.tail()}")
        outage_s = hours * 3600 / speed
        # An orderly stop: the broker keeps the receiver's session (and what is
        # queued for it) on disk, as a production broker with persistence does.
        broker.stop(orderly=True)
        cut_at = time.monotonic()
        seq_at_cut = max(_records(gw_db))
        time.sleep(outage_s / 2)
        # Mid-outage leak: the horn must sound within two polls of the cable.
        horn_before = sim.call(lambda: sim.sim.coil("relay1", "relay_1"))
        t0 = time.monotonic()
        sim.call(lambda: sim.sim.trigger_leak("cable1", 42.5))
        wait_for(lambda: sim.call(lambda: sim.sim.coil("relay1", "relay_1")),
                 10, "the horn relay during the outage", interval_s=0.02)
        relay_s = time.monotonic() - t0
        time.sleep(max(0.0, cut_at + outage_s - time.monotonic()))
        committed = _records(gw_db)
        seq_back = max(committed)
        broker.start()
        back_wall_s = time.time()
        wait_for(lambda: (query(gw_db, "SELECT min(seq) FROM outbox")[0][0] or 1e18)
                 > seq_back, 600,
                 f"the backlog to drain\n{edge.tail()}\n{cloud.tail()}")
        drained_s = time.time() - back_wall_s
        edge.stop()
        time.sleep(0.5)
        cloud_seqs = [r[0] for r in query(
            cloud_db, "SELECT seq FROM records WHERE gateway='gw-demo'")]
        unsent = {r[0] for r in query(gw_db, "SELECT seq FROM outbox")}
        parked = {r[0] for r in query(gw_db, "SELECT seq FROM parked")}
        gateway_all = _records(gw_db)
        # What came after the return, in arrival order (one receipt time per batch).
        arrivals = sorted(query(
            cloud_db,
            "SELECT received_at, seq, 'reading', ts, historical FROM readings "
            "WHERE gateway='gw-demo' AND seq > ? AND seq <= ? UNION ALL "
            "SELECT received_at, seq, event || ':' || state, ts, historical "
            "FROM events WHERE gateway='gw-demo' AND seq > ? AND seq <= ?",
            seq_at_cut, seq_back, seq_at_cut, seq_back))
        first_at = arrivals[0][0]
        first = [a for a in arrivals if a[0] == first_at]
        backlog = [a for a in arrivals if a[4]]

        def after_return_s(received_at: str) -> float:
            return datetime.fromisoformat(received_at).timestamp() - back_wall_s

        backlog_order = [a[1] for a in backlog]
        stale_latest = query(
            cloud_db, "SELECT count(*) FROM latest l WHERE l.ts < (SELECT max(ts) FROM "
            "readings r WHERE r.site = l.site AND r.tag = l.tag)")[0][0]
        return {
            "simulated_hours": hours,
            "speed": speed,
            "outage_real_s": round(outage_s, 1),
            "poll_interval_s": poll_interval_s,
            "records_committed_during_outage": seq_back - seq_at_cut,
            "relay_before_leak": horn_before,
            "relay_latency_s": round(relay_s, 3),
            "relay_within_two_polls": relay_s <= 2 * poll_interval_s,
            "records_in_gateway": len(gateway_all),
            "records_in_cloud": len(cloud_seqs),
            "duplicates_in_cloud": len(cloud_seqs) - len(set(cloud_seqs)),
            "missing_in_cloud": len(gateway_all - unsent - parked - set(cloud_seqs)),
            "committed_missing_in_cloud": len(committed - parked - set(cloud_seqs)),
            "parked": len(parked),
            "first_batch_after_return_s": round(after_return_s(first_at), 3),
            "first_backlog_record_after_return_s": round(
                after_return_s(backlog[0][0]), 3) if backlog else None,
            "first_batch_events": sorted({a[2] for a in first if a[2] != "reading"}),
            "first_batch_historical_records": sum(a[4] for a in first),
            "first_batch_records": len(first),
            "leak_raised_in_first_batch": "alarm:raised" in {a[2] for a in first},
            "backlog_records": len(backlog),
            "backlog_in_seq_order": backlog_order == sorted(backlog_order),
            "latest_values_older_than_a_stored_reading": stale_latest,
            "drained_s": round(drained_s, 1),
        }
    finally:
        edge.stop()
        cloud.stop()
        sim.close()
        broker.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="campaign", required=True)
    p = sub.add_parser("power-cut", help="SIGKILL the gateway at random moments")
    p.add_argument("--kills", type=int, default=100)
    p.add_argument("--seed", type=int, default=1)
    p = sub.add_parser("outage", help="no broker for simulated hours, a leak meanwhile")
    p.add_argument("--hours", type=float, default=12.0)
    p.add_argument("--speed", type=float, default=900.0)
    p.add_argument("--poll-interval", type=float, default=0.5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="gw-campaign-") as tmp:
        if args.campaign == "outage":
            result = outage(Path(tmp), args.hours, args.speed, args.poll_interval)
        else:
            result = power_cut(Path(tmp), args.kills, args.seed)
    print(json.dumps(result, indent=2))
    if args.campaign == "outage":
        ok = outage_ok(result)
    else:
        ok = (result["integrity_failures"] == 0 and result["duplicates_in_cloud"] == 0
              and result["missing_in_cloud"] == 0 and result["unknown_in_cloud"] == 0
              and result["committed_missing_in_cloud"] == 0)
    return 0 if ok else 1


def outage_ok(r: dict[str, Any]) -> bool:
    """The bar: relays on time, every record once, live data first, backfill ordered."""
    return bool(
        r["relay_within_two_polls"] and not r["relay_before_leak"]
        and r["duplicates_in_cloud"] == 0 and r["missing_in_cloud"] == 0
        and r["committed_missing_in_cloud"] == 0 and r["parked"] == 0
        and r["leak_raised_in_first_batch"] and r["first_batch_historical_records"] == 0
        and r["backlog_in_seq_order"] and r["first_backlog_record_after_return_s"] < 5
        and r["latest_values_older_than_a_stored_reading"] == 0)


if __name__ == "__main__":
    raise SystemExit(main())
