"""Store-and-sync benchmarks of issue 4: backlog drain, memory, disk, alarm latency.

Run from the repository root: ``.venv/bin/python -m bench.uplink`` (a 1,000,000-reading
backlog, about 12 minutes) or with ``--quick`` (100,000 readings, about 4 minutes). The
drain rate is measured against a plain paho publishing loop in the same run;
docs/bench.md says what each figure measures and how.
"""

from __future__ import annotations

import argparse
import contextlib
import heapq
import random
import sqlite3
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import psutil

from bench.gateway import (
    Row,
    _cpu_s,
    _free_port,
    _print_table,
    _rss_mb,
    _wait,
    child,
    groundwatch_cmd,
)
from edge.config import SiteConfig, load_config
from hil_tests.harness import PrivateMosquitto

TARGET_DRAIN_RATIO = 0.5  # at least half the rate of a plain paho loop
TARGET_RSS_MB = 80.0
TARGET_DISK_BYTES = 50.0  # bytes per reading in the gateway's database
TARGET_ALARM_MARGIN_S = 0.1  # p99 alarm latency <= one poll period + 100 ms

BASELINE_TOPIC = "bench/baseline/data"


# -- 1. pre-filling a backlog ----------------------------------------------------------


@dataclass(slots=True)
class Backlog:
    readings: int
    polls: int
    last_seq: int
    span_s: float
    fill_s: float
    used_bytes: int  # live pages of the database, everything pending
    file_bytes: int  # database + WAL on disk


def prefill(cfg: SiteConfig, db: Path, n: int) -> Backlog:
    """Store n readings of the site's devices as its gateway would over an outage.

    Each device is "polled" on its own period, ending now: the simulator's register
    image of that moment (models at real speed) is decoded with the gateway's own
    DeviceMap and committed with EdgeStore.add_readings, one transaction per poll.
    """
    from edge.store import EdgeStore, ms_to_iso
    from groundwatch.sim.server import SiteSimulator

    now_s = [0.0]
    sim = SiteSimulator(cfg, speed=1.0, clock=lambda: now_s[0])
    periods = {dev.name: dev.poll_interval_s for _, dev in cfg.devices()}
    per_s = sum(sum(p.type != "string" for p in cfg.maps[name].points.values()) / period
                for name, period in periods.items())
    span_s = n / per_s
    end_ms = int(time.time() * 1000)
    start_ms = end_ms - int(span_s * 1000)
    due = [(0.0, name) for name in sorted(periods)]
    heapq.heapify(due)
    store = EdgeStore(db)
    stored = polls = 0
    t0 = time.monotonic()
    try:
        while stored < n:
            t, name = heapq.heappop(due)
            heapq.heappush(due, (t + periods[name], name))
            now_s[0] = t
            dev = sim._devices[name]  # the simulator's register image of the device
            dev.refresh(*sim.elapsed())
            data = {table: dict(enumerate(regs)) for table, regs in dev.image.items()}
            rows = [(s.point, s.value, s.quality.value, s.unit)
                    for s in cfg.maps[name].decode(data)][: n - stored]
            store.add_readings(ms_to_iso(start_ms + int(t * 1000)), name, rows)
            stored += len(rows)
            polls += 1
        fill_s = time.monotonic() - t0
        store.checkpoint()
        used = store.used_bytes()
        last_seq = store.next_seq - 1
    finally:
        store.close()
    files = sum(p.stat().st_size for p in db.parent.glob(db.name + "*"))
    return Backlog(stored, polls, last_seq, span_s, fill_s, used, files)


def used_bytes(db: Path) -> tuple[int, int, int]:
    """(live page bytes, readings, database + WAL bytes) of a gateway database."""
    from hil_tests.harness import query

    (size, pages, free, readings), = query(
        db, "SELECT (SELECT page_size FROM pragma_page_size), "
            "(SELECT page_count FROM pragma_page_count), "
            "(SELECT freelist_count FROM pragma_freelist_count), "
            "(SELECT count(*) FROM samples)")
    files = sum(p.stat().st_size for p in db.parent.glob(db.name + "*"))
    return (pages - free) * size, readings, files


# -- 2. draining it ----------------------------------------------------------------


class Sniffer:
    """A plain MQTT subscriber that notes when each payload of some topics arrives."""

    def __init__(self, port: int, topics: list[str]) -> None:
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        self.seen: dict[str, list[tuple[float, bytes]]] = {}
        self._lock = threading.Lock()
        ready = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2,
                                  client_id="bench-sniffer", protocol=mqtt.MQTTv311,
                                  clean_session=True)
        self.client.on_connect = lambda c, *_: c.subscribe([(t, 1) for t in topics])
        self.client.on_subscribe = lambda *_: ready.set()
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        if not ready.wait(10):
            raise RuntimeError("the sniffer could not subscribe")

    def _on_message(self, client: object, userdata: object, msg: object) -> None:
        with self._lock:
            self.seen.setdefault(msg.topic, []).append(  # type: ignore[attr-defined]
                (time.monotonic(), bytes(msg.payload)))  # type: ignore[attr-defined]

    def messages(self, topic: str) -> list[tuple[float, bytes]]:
        with self._lock:
            return list(self.seen.get(topic, []))

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@dataclass(slots=True)
class Drain:
    records: int
    start_to_first_s: float  # gateway process start -> its first batch on the wire
    first_to_done_s: float  # first batch on the wire -> backlog acknowledged
    rss_peak_mb: float
    rss_samples: int
    cpu_pct: dict[str, float]  # per process over the drain window
    batches: int  # data messages the sniffer saw (resends included)
    wire_bytes: int
    compressed: bool
    progress: list[tuple[float, int]]  # (s since first batch, backlog left)
    live_readings: int  # stored by the polling gateway during the drain

    @property
    def rate(self) -> float:
        return self.records / self.first_to_done_s


def drain(cfg: SiteConfig, site: Path, db: Path, backlog: Backlog, sniffer: Sniffer,
          procs: dict[str, psutil.Process], timeout_s: float) -> Drain:
    """Run a real gateway on the store until every backlog record is acknowledged."""
    from groundwatch import contract

    topic = contract.data_topic(cfg.site.id, cfg.gateway.id)
    logs = site.parent
    edge_cmd = groundwatch_cmd("edge", "--config", str(site))
    with child(edge_cmd, logs / "edge.log") as edge:
        t_start = time.monotonic()
        gw = psutil.Process(edge.pid)
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
        watched = {"gateway": gw, **procs}
        cpu0 = {k: _cpu_s(p) for k, p in watched.items()}
        rss_peak, rss_n, progress = 0.0, 0, []
        next_count = t_start
        try:
            while True:
                if edge.poll() is not None:
                    raise RuntimeError(f"the gateway exited; see {logs / 'edge.log'}")
                now = time.monotonic()
                if now - t_start > timeout_s:
                    raise RuntimeError(f"backlog not drained in {timeout_s:.0f} s")
                with contextlib.suppress(psutil.Error):
                    rss_peak = max(rss_peak, _rss_mb(gw))
                    rss_n += 1
                # Two index look-ups: cheap enough to ask ten times a second.
                heads = conn.execute(
                    "SELECT (SELECT min(seq) FROM pending_readings), "
                    "(SELECT min(seq) FROM pending_events)").fetchone()
                done = all(h is None or h > backlog.last_seq for h in heads)
                if done or now >= next_count:
                    left = 0 if done else conn.execute(
                        "SELECT count(*) FROM outbox WHERE seq <= ?",
                        (backlog.last_seq,)).fetchone()[0]
                    progress.append((now, left))
                    next_count = now + 2.0
                if done:
                    t_done = now
                    break
                time.sleep(0.1)
            window = t_done - t_start
            cpu = {k: (_cpu_s(p) - cpu0[k]) / window * 100 for k, p in watched.items()}
            live = conn.execute("SELECT count(*) FROM samples WHERE seq > ?",
                                (backlog.last_seq,)).fetchone()[0]
        finally:
            conn.close()
    sent = sniffer.messages(topic)
    if not sent:
        raise RuntimeError("the sniffer saw no batch from the gateway")
    t_first = sent[0][0]
    return Drain(
        backlog.readings, t_first - t_start, t_done - t_first, rss_peak, rss_n, cpu,
        len(sent), sum(len(p) for _, p in sent),
        sent[0][1][:len(contract.COMPRESSED_MAGIC)] == contract.COMPRESSED_MAGIC,
        [(t - t_first, left) for t, left in progress], live,
    )


def baseline_payloads(cfg: SiteConfig, db: Path, backlog: Backlog,
                      compressed: bool) -> tuple[list[bytes], int]:
    """The backlog as the uplink encodes it: its batch size, the contract's encoder."""
    from edge.store import EdgeStore
    from groundwatch import contract

    up = cfg.uplink
    store = EdgeStore(db)
    cutoff = (datetime.now(UTC) - timedelta(seconds=up.historical_after_s)).isoformat()
    payloads, records = [], 0
    try:
        for first in range(1, backlog.last_seq + 1, up.batch_size):
            seqs = list(range(first, min(first + up.batch_size, backlog.last_seq + 1)))
            batch = store._reading_records(seqs)  # the uplink's own record builder
            records += len(batch)
            payloads.append(contract.encode_batch(
                cfg.site.id, cfg.gateway.id, first, batch,
                all(r["ts"] < cutoff for r in batch), compress=compressed))
    finally:
        store.close()
    return payloads, records


@dataclass(slots=True)
class Baseline:
    records: int
    messages: int
    seconds: float
    delivered_s: float  # until the sniffer had every message

    @property
    def rate(self) -> float:
        return self.records / self.seconds


def paho_loop(port: int, payloads: list[bytes], records: int, window: int,
              sniffer: Sniffer, timeout_s: float) -> Baseline:
    """Publish every payload at QoS 1, `window` in flight, until the last PUBACK."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    connected, done = threading.Event(), threading.Event()
    acked = [0]

    def on_publish(*_: object) -> None:
        acked[0] += 1
        if acked[0] == len(payloads):
            done.set()

    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-baseline",
                         protocol=mqtt.MQTTv311, clean_session=True)
    client.max_inflight_messages_set(window)
    client.on_connect = lambda *_: connected.set()
    client.on_publish = on_publish
    client.connect("127.0.0.1", port)
    client.loop_start()
    try:
        if not connected.wait(10):
            raise RuntimeError("the baseline publisher could not connect")
        t0 = time.monotonic()
        for payload in payloads:
            client.publish(BASELINE_TOPIC, payload, qos=1)
        if not done.wait(timeout_s):
            raise RuntimeError(f"baseline: {acked[0]} of {len(payloads)} acknowledged")
        t1 = time.monotonic()
        _wait(lambda: len(sniffer.messages(BASELINE_TOPIC)) >= len(payloads), 60,
              "the sniffer to receive every baseline message")
        t_seen = sniffer.messages(BASELINE_TOPIC)[-1][0]
    finally:
        client.disconnect()
        client.loop_stop()
    return Baseline(records, len(payloads), t1 - t0, t_seen - t0)


# -- 3. alarm latency with the broker down --------------------------------------------

ALARM_SITE = """\
# Generated by bench.uplink: the demo's plant LAN (tank gauge, leak cable, relay
# module), a leak alarm that is not latched, so every flip of the leak bit is a trial.
[site]
id = "bench-alarm"

[gateway]
id = "gw-alarm"
data_dir = "gateway"
healthy_relay = "gateway_ok"
clock_sync = "assume"

[uplink]
broker_url = "mqtt://127.0.0.1:{broker_port}"

[[buses]]
name = "plant-lan"
kind = "tcp"
host = "127.0.0.1"
port = {modbus_port}
timeout_s = 1.0

  [[buses.devices]]
  name = "tank1"
  unit_id = 1
  profile = "tank_gauge"
  poll_interval_s = 2

  [[buses.devices]]
  name = "cable1"
  unit_id = 2
  profile = "leak_cable"
  poll_interval_s = {period}

  [[buses.devices]]
  name = "relay1"
  unit_id = 3
  profile = "relay_module"
  poll_interval_s = 2

[relays.horn]
device = "relay1"
point = "relay_1"

[relays.gateway_ok]
device = "relay1"
point = "relay_8"

[[alarms]]
name = "trench-leak"
point = "cable1.leak"
kind = "on"
severity = "critical"
relays = ["horn"]

[simulation.tank1]
model = "tank"

[simulation.cable1]
model = "leak_cable"
leak_at_s = 1e9
leak_distance_m = 42.5

[simulation.relay1]
model = "relay"
"""


@dataclass(slots=True)
class Latency:
    period_s: float
    raise_s: list[float]
    clear_s: list[float]
    resolution_s: float

    @property
    def all_s(self) -> np.ndarray:
        return np.array(self.raise_s + self.clear_s)

    def pct(self, q: float) -> float:
        return float(np.percentile(self.all_s, q))

    @property
    def target_s(self) -> float:
        return self.period_s + TARGET_ALARM_MARGIN_S


def alarm_latency(work: Path, period_s: float, trials: int, seed: int) -> Latency:
    """Flip the leak bit at random moments; time until the horn relay coil follows."""
    from hil_tests.harness import ThreadedSimulator

    root = work / f"alarm-{period_s:g}s"
    root.mkdir(parents=True, exist_ok=True)
    broker = PrivateMosquitto(root / "broker")
    broker.start()
    site = root / "site.toml"
    site.write_text(ALARM_SITE.format(broker_port=broker.port, modbus_port=_free_port(),
                                      period=period_s))
    cfg = load_config(site)
    sim = ThreadedSimulator(cfg, speed=1.0)
    rng = random.Random(seed)
    raise_s: list[float] = []
    clear_s: list[float] = []
    step_s = 0.002
    try:
        log = root / "edge.log"
        with child(groundwatch_cmd("edge", "--config", str(site)), log):
            _wait(lambda: "uplink connected" in log.read_text(errors="replace"), 30,
                  "the gateway to connect to the broker")
            _wait(lambda: sim.sim.coil("relay1", "relay_8"), 10, "the healthy relay")
            broker.stop()
            _wait(lambda: "uplink disconnected" in log.read_text(errors="replace"), 30,
                  "the gateway to notice the broker is down")
            leak = False
            for _ in range(trials):
                time.sleep(rng.uniform(0.0, period_s))  # a random phase of the poll
                leak = not leak
                t0 = time.monotonic()
                sim.sim.set_value("cable1", "leak", leak)
                while sim.sim.coil("relay1", "relay_1") != leak:
                    if time.monotonic() - t0 > 10 * period_s + 5:
                        raise RuntimeError(f"the horn relay did not follow; see {log}")
                    time.sleep(step_s)
                (raise_s if leak else clear_s).append(time.monotonic() - t0)
    finally:
        sim.close()
    return Latency(period_s, raise_s, clear_s, step_s)


# -- the run ---------------------------------------------------------------------------


def _fmt_mb(b: float) -> str:
    return f"{b / 2**20:.1f} MB"


@contextlib.contextmanager
def _services(work: Path, nodelay: bool
              ) -> Iterator[tuple[PrivateMosquitto, psutil.Process, psutil.Process]]:
    """A private Mosquitto and a `groundwatch cloud` receiver on it."""
    from hil_tests.harness import http_json

    broker = PrivateMosquitto(work / "broker")
    if nodelay:
        with broker.conf.open("a") as conf:
            conf.write("set_tcp_nodelay true\n")
    broker.start()
    try:
        http_port = _free_port()
        with child(groundwatch_cmd(
            "cloud", "--db", str(work / "cloud.sqlite"), "--http-port", str(http_port),
            "--broker", broker.url,
        ), work / "cloud.log") as cloud:
            health = f"http://127.0.0.1:{http_port}/api/health"
            _wait(lambda: _http_ok(http_json, health), 30, "the cloud receiver")
            assert broker.proc is not None
            yield broker, psutil.Process(broker.proc.pid), psutil.Process(cloud.pid)
    finally:
        broker.stop()


def _http_ok(get: object, url: str) -> bool:
    try:
        get(url)  # type: ignore[operator]
        return True
    except OSError:
        return False


def run(quick: bool, work: Path, readings: int | None = None,
        trials: int | None = None, broker_nodelay: bool = False) -> int:
    """Run the benchmarks in order; print figures as they come, then the table."""
    from groundwatch.demo import write_site

    n = readings or (100_000 if quick else 1_000_000)
    trials = trials or (20 if quick else 100)
    rows: list[Row] = []
    print(f"bench.uplink{' --quick' if quick else ''}: {psutil.cpu_count()} cores, "
          f"load {' '.join(f'{x:.2f}' for x in psutil.getloadavg())}, in {work}"
          + (", Mosquitto with set_tcp_nodelay" if broker_nodelay else ""), flush=True)

    with _services(work, broker_nodelay) as (broker, broker_proc, cloud_proc):
        site_dir = work / "site"
        site_dir.mkdir(exist_ok=True)
        site = write_site(site_dir, broker.port, leak_at_s=1e9)
        cfg = load_config(site)
        db = cfg.data_dir / "gateway.sqlite"
        b = prefill(cfg, db, n)
        print(f"\n1. backlog: {b.readings} readings of {len(cfg.maps)} devices in "
              f"{b.polls} polls ({b.span_s / 3600:.1f} h of the demo site) stored in "
              f"{b.fill_s:.0f} s; {b.used_bytes / b.readings:.1f} bytes/reading "
              f"pending ({_fmt_mb(b.file_bytes)} on disk)", flush=True)

        with child(groundwatch_cmd("simulate", "--config", str(site)),
                   site_dir / "simulate.log"):
            time.sleep(2.0)  # the simulator's ports and pty pair are up
            sniffer = Sniffer(broker.port, [
                f"groundwatch/{cfg.site.id}/{cfg.gateway.id}/data", BASELINE_TOPIC])
            try:
                d = drain(cfg, site, db, b, sniffer,
                          {"mosquitto": broker_proc, "cloud": cloud_proc},
                          timeout_s=3600)
            finally:
                sniffer.close()
        print(f"\n2. drain: {d.records} records in {d.first_to_done_s:.1f} s from the "
              f"first batch on the wire ({d.rate:.0f} records/s); gateway start to "
              f"first batch {d.start_to_first_s:.1f} s; {d.batches} data messages, "
              f"{d.wire_bytes / d.records:.1f} payload bytes/reading "
              f"({'compressed' if d.compressed else 'plain JSON'}); gateway RSS peak "
              f"{d.rss_peak_mb:.1f} MB over {d.rss_samples} samples; CPU "
              + ", ".join(f"{k} {v:.0f}%" for k, v in d.cpu_pct.items())
              + f"; {d.live_readings} live readings stored meanwhile", flush=True)
        print("   backlog left: " + ", ".join(
            f"{t:.0f}s {left}"
            for t, left in d.progress[:: max(1, len(d.progress) // 12)]))
        delivered_bytes, readings, files = used_bytes(db)

        t_enc = time.monotonic()
        payloads, records = baseline_payloads(cfg, db, b, d.compressed)
        encode_s = time.monotonic() - t_enc
        sniffer = Sniffer(broker.port, [BASELINE_TOPIC])
        try:
            base = paho_loop(broker.port, payloads, records,
                             cfg.uplink.max_inflight_batches, sniffer, timeout_s=1800)
        finally:
            sniffer.close()
        print(f"\n3. plain paho loop: {base.records} records in {base.messages} "
              f"payloads, {base.seconds:.1f} s to the last PUBACK ({base.rate:.0f} "
              f"records/s), all delivered to a subscriber after "
              f"{base.delivered_s:.1f} s; reading and encoding them from the store "
              f"took {encode_s:.1f} s", flush=True)

    ratio = d.rate / base.rate
    with_encoding = base.records / (encode_s + base.seconds)
    pending_b = b.used_bytes / b.readings
    delivered_b = delivered_bytes / readings
    rows += [
        Row(f"plain paho loop, QoS 1, window {cfg.uplink.max_inflight_batches}",
            f"{base.rate:.0f} rec/s", "baseline", None),
        Row("  same, reading and encoding from the store first",
            f"{with_encoding:.0f} rec/s", "context", None),
        Row(f"gateway drain of {n:,} readings, receiver-acked", f"{d.rate:.0f} rec/s",
            "", None),
        Row("  drain rate vs plain loop", f"{ratio:.3f}x", f">= {TARGET_DRAIN_RATIO}x",
            ratio >= TARGET_DRAIN_RATIO),
        Row("  drain time (first batch to last ack)", f"{d.first_to_done_s:.1f} s", "",
            None),
        Row("  gateway start to first batch", f"{d.start_to_first_s:.1f} s", "", None),
        Row("gateway RSS while draining (peak)", f"{d.rss_peak_mb:.1f} MB",
            f"< {TARGET_RSS_MB:g} MB", d.rss_peak_mb < TARGET_RSS_MB),
        Row("disk bytes/reading, all pending", f"{pending_b:.1f}",
            f"<= {TARGET_DISK_BYTES:g}", pending_b <= TARGET_DISK_BYTES),
        Row("disk bytes/reading, all delivered", f"{delivered_b:.1f}",
            f"<= {TARGET_DISK_BYTES:g}", delivered_b <= TARGET_DISK_BYTES),
        Row("  payload bytes/reading sent (context)", f"{d.wire_bytes / d.records:.1f}",
            "", None),
    ]

    for i, period in enumerate((1.0, 0.5)):
        lat = alarm_latency(work, period, trials, seed=4 + i)
        a = lat.all_s
        print(f"\n4. alarm latency, broker down, cable polled every {period:g} s: "
              f"{len(a)} flips ({len(lat.raise_s)} raise, {len(lat.clear_s)} clear): "
              f"p50 {lat.pct(50) * 1000:.0f} ms, p99 {lat.pct(99) * 1000:.0f} ms, max "
              f"{a.max() * 1000:.0f} ms; raise p99 "
              f"{np.percentile(lat.raise_s, 99) * 1000:.0f} ms, clear p99 "
              f"{np.percentile(lat.clear_s, 99) * 1000:.0f} ms", flush=True)
        rows += [
            Row(f"alarm latency p50, poll {period:g} s, broker down",
                f"{lat.pct(50) * 1000:.0f} ms", "", None),
            Row(f"alarm latency p99, poll {period:g} s ({len(a)} flips)",
                f"{lat.pct(99) * 1000:.0f} ms", f"<= {lat.target_s * 1000:.0f} ms",
                lat.pct(99) <= lat.target_s),
            Row(f"alarm latency max, poll {period:g} s", f"{a.max() * 1000:.0f} ms", "",
                None),
        ]

    _print_table(rows)
    failed = [r.figure.strip() for r in rows if r.passed is False]
    print("\nall targets met" if not failed else f"\nmissed: {'; '.join(failed)}")
    return 0 if not failed else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.uplink", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--quick", action="store_true",
                        help="100,000 readings, 20 alarm flips per period (~4 minutes)")
    parser.add_argument("--workdir",
                        help="keep stores, sites and logs here (default: a temp dir)")
    parser.add_argument("--readings", type=int,
                        help="backlog size instead of 1,000,000 (--quick: 100,000)")
    parser.add_argument("--trials", type=int,
                        help="alarm flips per poll period instead of 100 (--quick: 20)")
    parser.add_argument("--broker-nodelay", action="store_true",
                        help="run the drain's Mosquitto with set_tcp_nodelay true")
    args = parser.parse_args(argv)
    if args.workdir:
        work = Path(args.workdir).resolve()
        work.mkdir(parents=True, exist_ok=True)
        return run(args.quick, work, args.readings, args.trials, args.broker_nodelay)
    with tempfile.TemporaryDirectory(prefix="groundwatch-bench-") as tmp:
        return run(args.quick, Path(tmp), args.readings, args.trials,
                   args.broker_nodelay)


if __name__ == "__main__":
    sys.exit(main())
