"""Pieces the receiver's smaller stores and background senders share.

Accounts, commands, notifications, groundwater records and operations each keep a few
tables in a SQLite file beside (or inside) the receiver's database, behind one
connection that request threads share under a lock; commands and notifications are
sent by a thread that runs a round every interval, woken early when there is news.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from abc import ABC, abstractmethod
from pathlib import Path

BUSY_TIMEOUT_MS = 10_000

log = logging.getLogger(__name__)


def connect_shared(path: str | Path, schema: str, wal: bool = False) -> sqlite3.Connection:
    """One autocommit connection for several threads (callers hold a lock around it)."""
    path = str(path)
    if path != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False,
                         timeout=BUSY_TIMEOUT_MS / 1000)
    db.row_factory = sqlite3.Row
    db.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    if wal:
        db.execute("PRAGMA journal_mode=WAL")
    db.executescript(schema)
    return db


class RoundWorker(ABC):
    """Runs `run_once()` in a daemon thread every interval until `stop()`."""

    thread_name = "worker"

    def __init__(self) -> None:
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @abstractmethod
    def run_once(self) -> object:
        """One round of work; what it returns is for tests and callers."""

    def wake(self) -> None:
        """Run the next round now rather than at the end of the interval."""
        self._wake.set()

    def start(self, interval_s: float = 1.0) -> None:
        def loop() -> None:
            while not self._stop.is_set():
                try:
                    self.run_once()
                except Exception:  # noqa: BLE001 - one bad row must not stop sending
                    log.exception("%s failed a round", self.thread_name)
                self._wake.wait(interval_s)
                self._wake.clear()

        self._stop.clear()
        self._thread = threading.Thread(target=loop, name=self.thread_name, daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 10.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._thread = None
