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

    def __init__(self, workdir: Path, port: int | None = None, persistence: bool = False,
                 extra: tuple[str, ...] = ()):
        exe = mosquitto_path()
        if exe is None:
            raise RuntimeError("mosquitto is not installed: apt-get install mosquitto")
        self.exe, self.workdir = exe, workdir
        self.port = port or free_port()
        self.conf = write_mosquitto_config(workdir, self.port, persistence=persistence)
        if extra:  # more options, e.g. "message_size_limit 1500"
            self.conf.write_text(self.conf.read_text() + "\n".join(extra) + "\n")
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.proc = subprocess.Popen([self.exe, "-c", str(self.conf)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(lambda: port_open(self.port), 10, f"mosquitto on port {self.port}")

    def stop(self, orderly: bool = False) -> None:
        """Kill the broker, as a crash would; `orderly` lets it save its persistence."""
        if self.proc and self.proc.poll() is None:
            if orderly:
                self.proc.terminate()
            else:
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


class BlackholeProxy:
    """A TCP proxy on loopback that can silently stop forwarding: a half-open link.

    While cut, bytes from either side are read and thrown away and every socket stays
    open, as when a mobile network or a NAT loses a connection without telling anyone.
    """

    def __init__(self, target_port: int):
        import selectors

        self.target_port = target_port
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(16)
        self.listener.setblocking(False)
        self.port = self.listener.getsockname()[1]
        self.cut_now = False
        self.dropped_bytes = 0
        self.connections = 0
        self._sel = selectors.DefaultSelector()
        self._sel.register(self.listener, selectors.EVENT_READ, None)
        self._peer: dict[socket.socket, socket.socket] = {}
        self._stop = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def cut(self) -> None:
        self.cut_now = True

    def resume(self) -> None:
        self.cut_now = False

    def _close(self, sock: socket.socket) -> None:
        for s in (sock, self._peer.pop(sock, None)):
            if s is not None:
                self._peer.pop(s, None)
                try:
                    self._sel.unregister(s)
                except (KeyError, ValueError):
                    pass
                s.close()

    def _run(self) -> None:
        import selectors

        while not self._stop:
            for key, _ in self._sel.select(0.2):
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                if sock is self.listener:
                    client, _ = self.listener.accept()
                    upstream = socket.create_connection(("127.0.0.1", self.target_port))
                    self.connections += 1
                    self._peer[client], self._peer[upstream] = upstream, client
                    for s in (client, upstream):
                        self._sel.register(s, selectors.EVENT_READ, None)
                    continue
                try:
                    data = sock.recv(65536)
                except OSError:
                    data = b""
                if not data:
                    if self.cut_now:  # a cut link passes no close on: keep the peer open
                        self._sel.unregister(sock)
                    else:
                        self._close(sock)
                    continue
                if self.cut_now:
                    self.dropped_bytes += len(data)
                    continue
                peer = self._peer.get(sock)
                if peer is not None:
                    try:
                        peer.sendall(data)
                    except OSError:
                        self._close(sock)

    def close(self) -> None:
        self._stop = True
        self.thread.join(2)
        for sock in list(self._peer):
            self._close(sock)
        self.listener.close()
