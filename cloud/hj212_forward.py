"""Forward synced readings to a municipal platform over HJ 212 (CN 2011, real time).

Readings are sent in the order the receiver stored them, one packet per site and
sampling instant (DataTime), each point under the pollutant code the platform agreed
(HJ 525 codes such as w01014 conductivity; the map is configuration, since several
groundwater parameters have no code in the 2017 table). With the A flag set the
platform answers each packet (CN 9014, echoing QN); a packet that is not answered
within the timeout is sent again, up to `retries` times, and forwarding then pauses
and tries again later from the same reading: the cursor only moves past what the
platform confirmed, so nothing is skipped.

The cursor lives in a small JSON file written atomically beside the database.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import sqlite3
import time
import tomllib
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from cloud.hj212 import BEIJING, Hj212Error, build, flag, parse, qn
from drivers.errors import ConfigError, from_validation_error

log = logging.getLogger(__name__)

# groundwatch quality -> HJ 212 data flag (HJ 212-2017 table 6): N normal,
# M maintenance, D fault, T over the instrument's range, B communication fault.
QUALITY_FLAGS = {
    "good": "N", "maintenance": "M", "device_error": "D", "sentinel": "D",
    "out_of_range": "T", "comm_lost": "B", "stale": "D", "clock_unsynced": "D",
}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PlatformSection(_Strict):
    host: str
    port: int = Field(ge=1, le=65535)
    timeout_s: float = Field(default=10.0, gt=0)  # HJ 212: 10 s and 3 retries
    retries: int = Field(default=3, ge=0, le=10)
    answer: bool = True  # set the A flag and wait for the platform's 9014
    version_bits: int = Field(default=1, ge=0, le=63)  # 000001 = HJ 212-2017
    st: str = Field(default="24", pattern=r"^\d{2}$")  # 24: groundwater quality
    pw: str = "123456"
    max_items: int = Field(default=60, ge=1)


class SiteForward(_Strict):
    mn: str = Field(min_length=1, max_length=24, pattern=r"^[0-9A-Za-z]+$")
    codes: dict[str, str]  # "device.point" -> pollutant code, e.g. "w01014"


class ForwardConfig(_Strict):
    platform: PlatformSection
    sites: dict[str, SiteForward]


def load_forward_config(path: str | Path) -> ForwardConfig:
    """Read and validate a forwarder file; errors name the key path."""
    path = Path(path)
    try:
        doc = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(str(path), "", str(exc)) from None
    try:
        return ForwardConfig.model_validate(doc)
    except ValidationError as exc:
        raise from_validation_error(str(path), exc) from None


@dataclass(slots=True)
class Cursor:
    """The last cloud reading (rowid) the platform confirmed."""

    path: Path
    rowid: int = 0
    sent: int = 0

    @classmethod
    def load(cls, path: Path) -> Cursor:
        try:
            doc = json.loads(path.read_text())
        except FileNotFoundError:
            return cls(path)
        return cls(path, int(doc["rowid"]), int(doc.get("sent", 0)))

    def save(self) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"rowid": self.rowid, "sent": self.sent}))
        os.replace(tmp, self.path)


@dataclass(slots=True)
class Pending:
    """One packet's worth of readings: a site, a sampling instant, its items."""

    site: str
    data_time: str
    items: list[dict[str, str]] = field(default_factory=list)
    last_rowid: int = 0


def _data_time(ts: str) -> str:
    """HJ 212 DataTime (YYYYMMDDhhmmss, Beijing time) of a stored UTC time."""
    return datetime.fromisoformat(ts).astimezone(BEIJING).strftime("%Y%m%d%H%M%S")


def _format_value(value: float) -> str:
    return f"{value:.6g}"


class Forwarder:
    """Reads new readings from the cloud's SQLite store and sends them as 2011s."""

    def __init__(self, db: str | Path, cfg: ForwardConfig, cursor_path: Path):
        self.db, self.cfg = Path(db), cfg
        self.cursor = Cursor.load(cursor_path)
        self.sock: socket.socket | None = None
        self.stats = {"packets": 0, "answered": 0, "resends": 0, "failures": 0,
                      "readings": 0}

    def _connect(self) -> socket.socket:
        if self.sock is None:
            p = self.cfg.platform
            self.sock = socket.create_connection((p.host, p.port), timeout=p.timeout_s)
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return self.sock

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def pending(self, limit: int = 5000) -> list[Pending]:
        """New readings of configured points, grouped into packets, oldest first."""
        conn = sqlite3.connect(f"file:{self.db}?mode=ro", uri=True, timeout=10)
        try:
            rows = conn.execute(
                "SELECT rowid, site, tag, ts, value, quality FROM readings "
                "WHERE rowid > ? ORDER BY rowid LIMIT ?", (self.cursor.rowid, limit),
            ).fetchall()
        finally:
            conn.close()
        packets: dict[tuple[str, str], Pending] = {}
        out: list[Pending] = []
        for rowid, site, tag, ts, value, quality in rows:
            site_cfg = self.cfg.sites.get(site)
            code = site_cfg.codes.get(tag) if site_cfg else None
            key = (site, _data_time(ts))
            packet = packets.get(key)
            if packet is None or len(packet.items) >= self.cfg.platform.max_items:
                packet = packets[key] = Pending(site, key[1])
                out.append(packet)
            packet.last_rowid = rowid
            if code is None:
                continue  # not agreed with the platform: passed over, not sent
            item = {f"{code}-Rtd": "" if value is None else _format_value(value),
                    f"{code}-Flag": QUALITY_FLAGS.get(quality, "D")}
            packet.items.append(item)
        return out

    def _packet(self, p: Pending, when: datetime) -> tuple[str, str]:
        platform = self.cfg.platform
        number = qn(when)
        fields = {"QN": number, "ST": platform.st, "CN": "2011", "PW": platform.pw,
                  "MN": self.cfg.sites[p.site].mn,
                  "Flag": str(flag(platform.version_bits, answer=platform.answer))}
        return number, build(fields, [{"DataTime": p.data_time}, *p.items])

    def _await_answer(self, sock: socket.socket, number: str) -> bool:
        """Read replies until the 9014 that echoes this QN, or the timeout."""
        deadline = time.monotonic() + self.cfg.platform.timeout_s
        buffer = b""
        while (left := deadline - time.monotonic()) > 0:
            sock.settimeout(left)
            try:
                chunk = sock.recv(4096)
            except TimeoutError:
                return False
            if not chunk:
                raise ConnectionError("the platform closed the connection")
            buffer += chunk
            while b"\r\n" in buffer:
                line, buffer = buffer.split(b"\r\n", 1)
                try:
                    reply = parse(line)
                except Hj212Error as exc:
                    log.warning("platform sent a bad packet: %s", exc)
                    continue
                cp = reply.cp[0] if reply.cp else {}
                if reply.fields.get("CN") == "9014" and (
                        reply.fields.get("QN") == number or cp.get("QN") == number):
                    return True
        return False

    def send(self, p: Pending) -> bool:
        """Send one packet until answered (or once, without the A flag)."""
        platform = self.cfg.platform
        for attempt in range(platform.retries + 1):
            number, packet = self._packet(p, datetime.now(BEIJING))
            try:
                sock = self._connect()
                sock.sendall(packet.encode())
                self.stats["packets"] += 1
                if attempt:
                    self.stats["resends"] += 1
                if not platform.answer or self._await_answer(sock, number):
                    self.stats["answered"] += platform.answer
                    return True
                log.warning("site=%s no answer to QN=%s (try %d of %d)", p.site,
                            number, attempt + 1, platform.retries + 1)
            except OSError as exc:
                log.warning("site=%s platform %s:%s: %s", p.site, platform.host,
                            platform.port, exc)
                self.close()
            time.sleep(0.001)  # a fresh QN for the resend
        self.stats["failures"] += 1
        return False

    def run_once(self) -> int:
        """Forward what is new; return packets confirmed. Stops at the first failure."""
        confirmed = 0
        for p in self.pending():
            if p.items and not self.send(p):
                break
            self.cursor.rowid = p.last_rowid
            self.cursor.sent += len(p.items)
            self.stats["readings"] += len(p.items)
            self.cursor.save()
            confirmed += bool(p.items)
        return confirmed

    def run(self, interval_s: float, stop: Any = None) -> None:
        """Forward every interval_s until stop (a threading.Event) is set."""
        while stop is None or not stop.is_set():
            try:
                self.run_once()
            except (OSError, sqlite3.Error) as exc:
                log.error("forwarding paused: %s", exc)
                self.close()
            if stop is not None:
                stop.wait(interval_s)
            else:
                time.sleep(interval_s)
