"""Real parts for hardware-in-the-loop tests: brokers, processes, simulators, clocks."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from groundwatch.broker import mosquitto_path, write_mosquitto_config


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate: Callable[[], Any], timeout_s: float, what: str,
             interval_s: float = 0.1) -> Any:
    """Poll until predicate() is truthy; fail the test naming what never happened."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            result = predicate()
        except sqlite3.OperationalError:
            # A database still being created by its owner (its schema is committed
            # in one transaction); past the deadline the error is the answer.
            if time.monotonic() > deadline:
                raise
            result = None
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(interval_s)


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


class PrivateMosquitto:
    """A Mosquitto of the test's own on a free port, so it can be stopped and restarted."""

    def __init__(self, workdir: Path, port: int | None = None, persistence: bool = False):
        exe = mosquitto_path()
        if exe is None:
            raise RuntimeError("mosquitto is not installed: apt-get install mosquitto")
        self.exe, self.workdir = exe, workdir
        self.port = port or free_port()
        self.conf = write_mosquitto_config(workdir, self.port, persistence=persistence)
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.proc = subprocess.Popen([self.exe, "-c", str(self.conf)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(lambda: port_open(self.port), 10, f"mosquitto on port {self.port}")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()  # as a crash or power cut would: no orderly goodbye
            self.proc.wait()
        wait_for(lambda: not port_open(self.port), 10, "mosquitto to stop")


class Proc:
    """A groundwatch subcommand as a child process, logging to a file."""

    def __init__(self, name: str, args: list[str], workdir: Path):
        self.log = workdir / f"{name}.log"
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "groundwatch", *args], cwd=workdir, env=env,
            stdout=self.log.open("ab"), stderr=subprocess.STDOUT,
        )

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, timeout_s: float = 15) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def tail(self, n: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])


def http_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return json.load(resp)


def query(db: Path, sql: str, *args: Any) -> list[tuple]:
    """Read a live SQLite file (WAL) without disturbing its writer."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    try:
        return conn.execute(sql, args).fetchall()
    finally:
        conn.close()


class ThreadedSimulator:
    """A SiteSimulator running on its own event loop in a background thread."""

    def __init__(self, cfg: Any, speed: float = 900.0):
        from groundwatch.sim.server import SiteSimulator

        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.sim = self.call(lambda: SiteSimulator(cfg, speed=speed))
        self.run(self.sim.start())

    def call(self, func: Callable[[], Any]) -> Any:
        async def wrapper() -> Any:
            return func()
        return self.run(wrapper())

    def run(self, coro: Any, timeout_s: float = 30) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout_s)

    def close(self) -> None:
        self.run(self.sim.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
