"""The gateway as a systemd service: readiness, watchdog pings, stopping, the unit.

No systemd runs here, so the test plays its part: it listens on a datagram socket and
hands its path to the gateway as NOTIFY_SOCKET, as systemd does for Type=notify.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edge.service import UNIT_NAME, install_service
from hil_tests.conftest import Site

pytestmark = pytest.mark.hil


def receive(sock: socket.socket, until_s: float) -> list[str]:
    """Every notification that arrives within until_s seconds."""
    got: list[str] = []
    deadline = time.monotonic() + until_s
    while (left := deadline - time.monotonic()) > 0:
        sock.settimeout(left)
        try:
            got.append(sock.recv(4096).decode())
        except TimeoutError:
            break
    return got


def test_ready_then_watchdog_pings_then_stopping(site: Site, tmp_path: Path) -> None:
    site.start_sim()
    path = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        env = dict(os.environ, NOTIFY_SOCKET=str(path), WATCHDOG_USEC="1000000",
                   PYTHONUNBUFFERED="1")
        log = (tmp_path / "edge.log").open("wb")
        edge = subprocess.Popen(
            [sys.executable, "-m", "groundwatch", "edge", "--config",
             str(site.config_path)], env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            got = receive(sock, 6.0)
            ready = [i for i, m in enumerate(got) if m.startswith("READY=1")]
            assert ready, f"no READY=1 in {got}"
            pings = [m for m in got[ready[0]:] if m == "WATCHDOG=1"]
            # WATCHDOG_USEC of 1 s asks for a ping every 0.5 s.
            assert len(pings) >= 5, got
            edge.send_signal(signal.SIGTERM)
            assert edge.wait(15) == 0
            assert "STOPPING=1" in receive(sock, 1.0)
        finally:
            if edge.poll() is None:
                edge.kill()
                edge.wait()
            log.close()


def test_install_service_writes_a_notify_unit_with_a_watchdog(tmp_path: Path) -> None:
    config = tmp_path / "site.toml"
    config.write_text("")
    files = install_service(config, root=tmp_path / "root", user="gw", watchdog_s=20)
    unit = files.unit.read_text()
    assert files.unit == tmp_path / "root/etc/systemd/system" / UNIT_NAME
    for line in ("Type=notify", "WatchdogSec=20", "Restart=on-failure",
                 "RestartPreventExitStatus=2", "User=gw",
                 f"ExecStart={sys.executable} -m groundwatch edge --config {config}"):
        assert line in unit.splitlines(), line
    assert "SystemMaxUse=100M" in files.journald.read_text()


def test_install_service_command_checks_the_site_file_first(tmp_path: Path) -> None:
    from groundwatch.cli import main
    from groundwatch.demo import write_site

    site = write_site(tmp_path, 1883, leak_at_s=1e9)
    assert main(["install-service", "--config", str(site), "--root",
                 str(tmp_path / "img")]) == 0
    unit = (tmp_path / "img/etc/systemd/system" / UNIT_NAME).read_text()
    assert f"--config {site}" in unit
    bad = tmp_path / "bad.toml"
    bad.write_text(site.read_text().replace('id = "gw-demo"', 'id = "gw demo"'))
    assert main(["install-service", "--config", str(bad), "--root",
                 str(tmp_path / "img2")]) == 2
    assert not (tmp_path / "img2").exists()
