"""A full disk: the leak alarm still switches its relay, the failure is counted, what
was stored stays stored, and storing resumes once there is room again.

The gateway's store lives on a real 1 MiB tmpfs that the test fills with a file, so
SQLite meets the same ENOSPC a full SD card gives it.
"""

from __future__ import annotations

import asyncio
import subprocess
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge.bus import NoAnswer
from edge.config import parse_config
from edge.gateway import Gateway

pytestmark = pytest.mark.hil

EXAMPLE = Path(__file__).parents[1] / "groundwatch" / "examples" / "site.toml"


class CableBus:
    """A leak-cable controller whose status register the test sets."""

    def __init__(self, cfg):  # type: ignore[no-untyped-def]
        self.cfg, self.status, self.coils = cfg, 0, {}

    async def read(self, unit, block, timeout_s=None):  # type: ignore[no-untyped-def]
        if block.table != "input":
            raise NoAnswer("only the cable controller is wired in this test")
        return {a: (self.status if a == 0 else 0)
                for a in range(block.start, block.start + block.count)}

    async def write_coil(self, unit, address, on, timeout_s=None):  # type: ignore[no-untyped-def]
        self.coils[(unit, address)] = on

    def close(self) -> None:
        pass


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    mount = tmp_path / "sd"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.fail(f"this test mounts a 1 MiB tmpfs and needs root: {done.stderr}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(path: Path) -> Path:
    """Write until the file system refuses; return the filler file."""
    filler = path / "filler"
    try:
        with filler.open("wb", buffering=0) as f:
            while True:
                f.write(b"\0" * 4096)
    except OSError:
        pass
    return filler


def test_full_disk_never_stops_the_leak_relay(small_disk: Path) -> None:
    doc = tomllib.loads(EXAMPLE.read_text())
    doc["gateway"]["data_dir"] = str(small_disk / "gw")
    doc["gateway"]["clock_sync"] = "assume"
    cfg = parse_config(doc, "site.toml", small_disk)
    gw = Gateway(cfg)
    bus = CableBus(cfg.buses[0])
    cable = gw.devices["cable1"]

    def poll() -> None:
        asyncio.run(gw._poll_device(bus, cable))

    def count(table: str) -> int:
        return gw.store.conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]

    try:
        for _ in range(3):
            poll()
        stored_before = count("readings")
        assert stored_before == 3 * len(cable.map.points) and gw.store_healthy

        filler = fill(small_disk)
        for _ in range(20):  # a few polls may still fit in pages SQLite already has
            poll()
            if not gw.store_healthy:
                break
        assert not gw.store_healthy, "the disk never filled"
        bus.status = 0b1  # liquid on the cable, with nowhere to write
        poll()
        assert gw.rules_by_point[("cable1", "leak")][0].active
        assert gw.relay_wanted["horn"] and gw.relay_wanted["beacon"]
        assert gw.counters["store_failures"] >= 1
        assert count("readings") >= stored_before

        filler.unlink()
        poll()
        assert gw.store_healthy
        assert count("readings") > stored_before
        assert gw.store.conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    finally:
        gw.store.close()
