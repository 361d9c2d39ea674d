"""Fault campaigns: the full versions run from one command each; tests run short ones.

    python -m hil_tests.campaigns power-cut --kills 100

prints a JSON result. docs/faults.md records the latest results.
"""

from __future__ import annotations

import argparse
import json
import random
import signal
import tempfile
import time
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="campaign", required=True)
    p = sub.add_parser("power-cut", help="SIGKILL the gateway at random moments")
    p.add_argument("--kills", type=int, default=100)
    p.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="gw-campaign-") as tmp:
        result = power_cut(Path(tmp), args.kills, args.seed)
    print(json.dumps(result, indent=2))
    ok = (result["integrity_failures"] == 0 and result["duplicates_in_cloud"] == 0
          and result["missing_in_cloud"] == 0 and result["unknown_in_cloud"] == 0
          and result["committed_missing_in_cloud"] == 0)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
