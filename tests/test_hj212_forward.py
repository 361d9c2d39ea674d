"""Forwarding to an HJ 212 platform: every packet valid, answered, resent when not."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from cloud.hj212 import Packet, build, parse
from cloud.hj212_forward import Forwarder, load_forward_config
from cloud.store import CloudStore
from drivers.errors import ConfigError

SITE, GW = "sz-demo-01", "gw-01"


class Platform:
    """A platform of the test's own: checks each packet, answers 9014 with its QN."""

    def __init__(self, ignore_first: int = 0):
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.received: list[Packet] = []
        self.ignore = ignore_first
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            buffer = b""
            with conn:
                while chunk := conn.recv(4096):
                    buffer += chunk
                    while b"\r\n" in buffer:
                        line, buffer = buffer.split(b"\r\n", 1)
                        packet = parse(line)  # raises (and the test fails) if bad
                        self.received.append(packet)
                        if self.ignore:
                            self.ignore -= 1
                            continue
                        conn.sendall(build(
                            {"QN": packet.fields["QN"], "ST": "91", "CN": "9014",
                             "PW": packet.fields["PW"], "MN": packet.fields["MN"],
                             "Flag": "4"}, []).encode())

    def close(self) -> None:
        self.server.close()


def reading(seq: int, ts: str, point: str, value: float | None,
            quality: str = "good") -> dict:
    device, _, name = point.partition(".")
    return {"seq": seq, "kind": "reading", "ts": ts, "device": device, "point": name,
            "value": value, "quality": quality, "unit": "uS/cm"}


@pytest.fixture
def cloud_db(tmp_path: Path) -> Path:
    store = CloudStore(tmp_path / "cloud.sqlite")
    store.store_batch(SITE, GW, [
        reading(1, "2026-12-04T00:00:00+00:00", "mw1.conductivity_us_cm", 812.5),
        reading(2, "2026-12-04T00:00:00+00:00", "mw1.temperature_c", 18.25),
        reading(3, "2026-12-04T00:00:00+00:00", "mw2.level_m", 3.5),  # no code: kept
        reading(4, "2026-12-04T00:15:00+00:00", "mw1.conductivity_us_cm", None,
                "comm_lost"),
        reading(5, "2026-12-04T00:15:00+00:00", "mw1.temperature_c", 18.5),
    ], historical=False)
    store.close()
    return tmp_path / "cloud.sqlite"


def write_config(tmp_path: Path, port: int, timeout_s: float = 0.5) -> Path:
    path = tmp_path / "forward.toml"
    path.write_text(f"""
[platform]
host = "127.0.0.1"
port = {port}
timeout_s = {timeout_s}
retries = 2
pw = "100000"

[sites.{SITE}]
mn = "010000A8900016F000169DC0"
codes = {{ "mw1.conductivity_us_cm" = "w01014", "mw1.temperature_c" = "w01010" }}
""")
    return path


def test_readings_are_sent_answered_once_and_the_cursor_kept(tmp_path, cloud_db):
    platform = Platform(ignore_first=1)  # the first packet goes unanswered
    cfg = load_forward_config(write_config(tmp_path, platform.port))
    fwd = Forwarder(cloud_db, cfg, tmp_path / "cursor.json")
    try:
        assert fwd.run_once() == 2
    finally:
        fwd.close()
        platform.close()
    first, resent, second = platform.received
    assert first.cp == resent.cp and first.fields["QN"] != resent.fields["QN"]
    assert fwd.stats["resends"] == 1 and fwd.stats["failures"] == 0
    # DataTime is Beijing time; values under the agreed codes, flags from quality.
    assert resent.cp == [{"DataTime": "20261204080000"},
                         {"w01014-Rtd": "812.5", "w01014-Flag": "N"},
                         {"w01010-Rtd": "18.25", "w01010-Flag": "N"}]
    assert second.cp == [{"DataTime": "20261204081500"},
                         {"w01014-Rtd": "", "w01014-Flag": "B"},
                         {"w01010-Rtd": "18.5", "w01010-Flag": "N"}]
    for p in (resent, second):
        assert (p.fields["ST"], p.fields["CN"], p.fields["PW"]) == ("24", "2011",
                                                                    "100000")
        assert p.version == 1 and p.wants_answer
    # A new forwarder on the same cursor has nothing left to send.
    again = Forwarder(cloud_db, cfg, tmp_path / "cursor.json")
    assert again.cursor.sent == 4 and again.pending() == []


def test_platform_down_moves_nothing_and_the_next_round_catches_up(tmp_path, cloud_db):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here once closed
    cfg = load_forward_config(write_config(tmp_path, port, timeout_s=0.2))
    fwd = Forwarder(cloud_db, cfg, tmp_path / "cursor.json")
    assert fwd.run_once() == 0
    assert fwd.stats["failures"] == 1 and fwd.cursor.rowid == 0
    platform = Platform()
    fwd.cfg.platform.port = platform.port
    try:
        assert fwd.run_once() == 2 and len(platform.received) == 2
    finally:
        fwd.close()
        platform.close()


def test_bad_forward_config_names_the_key(tmp_path):
    path = write_config(tmp_path, 9).with_name("bad.toml")
    path.write_text(write_config(tmp_path, 9).read_text().replace(
        'mn = "010000A8900016F000169DC0"', 'mn = "has spaces"'))
    with pytest.raises(ConfigError, match=f"sites.{SITE}.mn"):
        load_forward_config(path)


def test_forward_command_once(tmp_path, cloud_db):
    platform = Platform()
    try:
        done = subprocess.run(
            [sys.executable, "-m", "groundwatch", "hj212", "forward", "--once",
             "--db", str(cloud_db), "--forward-config",
             str(write_config(tmp_path, platform.port))],
            capture_output=True, text=True, timeout=60)
    finally:
        platform.close()
    assert done.returncode == 0, done.stderr
    assert "sent 4 readings in 2 answered packets" in done.stdout
